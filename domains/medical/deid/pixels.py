"""Masking text burned into the pixels (PS3.15's Clean Pixel Data option), for files shared outside.

Each frame is shown as a reader would see it (the file's window), the text-region finder outlines the
text, and those boxes are filled in the stored pixels with the value that displays black. The file is
rewritten uncompressed, and its De-identification Method Code Sequence says pixels were cleaned.
Burned In Annotation is left as the file said: the finder can miss text, so a person still checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected

from ..dicom_image import check_size, check_work, decode_problem, geometry, iter_frame_values
from ..windowing import display

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
MARGIN = 3  # pixels around each box: strokes reach a little past what the detector outlines
TEXT_SIDE = 1280  # the finder reads a view no larger than this (the detector's own working size): one pass

TextFinder = Callable[[Image.Image], list]


@dataclass(frozen=True)
class FoundText:
    box: tuple[float, float, float, float]  # pixels of the full-size image
    confidence: float


def find_text_scaled(image: Image.Image, find_text: TextFinder, side: int = TEXT_SIDE) -> list[FoundText]:
    """Text regions of ``image``, found on a copy scaled down to ``side`` and mapped back, each box
    widened by one scaled-down pixel. A 4,096² slice costs one detector pass instead of seventeen;
    burned-in text is large enough to survive the scaling."""
    width, height = image.size
    scale = min(1.0, side / max(width, height))
    if scale == 1.0:
        return [FoundText(tuple(r.box), r.confidence) for r in find_text(image)]
    small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS,
                         reducing_gap=2.0)
    sx, sy = width / small.width, height / small.height
    return [FoundText((max(0.0, (x0 - 1) * sx), max(0.0, (y0 - 1) * sy), min(width, (x1 + 1) * sx),
                       min(height, (y1 + 1) * sy)), r.confidence)
            for r in find_text(small) for x0, y0, x1, y1 in [r.box]]


def _black(ds: Dataset, frame: np.ndarray) -> int | float:
    if frame.ndim == 3:
        return 0
    return frame.max() if ds.get("PhotometricInterpretation") == "MONOCHROME1" else frame.min()


def mask_burned_in_text(ds: Dataset, find_text: TextFinder, limits: Budgets | None = None) -> int:
    """Fill every text region found in every frame; returns how many were filled (0: file untouched).

    The budgets are checked from the header first. Frames are read one at a time to find text; only a
    file with text found is decoded whole, to be rewritten uncompressed."""
    if "PixelData" not in ds:
        return 0
    if int(ds.get("BitsAllocated", 8)) == 1:
        raise InputRejected("Text masking does not handle 1-bit images.")
    limits = limits or Budgets.from_env()
    shape = geometry(ds)
    check_size(shape, limits)
    check_work([shape], limits)
    boxes = {index: [tuple(int(round(v)) for v in region.box)
                     for region in find_text_scaled(display(ds, values), find_text)]
             for index, values in enumerate(iter_frame_values(ds))}
    boxes = {index: found for index, found in boxes.items() if found}
    if not boxes:
        return 0
    limits.check("max_decoded_bytes", shape.pixels * shape.samples * math.ceil(shape.bits_allocated / 8),
                 "The image, rewritten uncompressed with its text masked,")
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(as_rgb=True)  # colour ends up RGB, and the header says so
        pixels = ds.pixel_array.copy()
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise InputRejected(decode_problem(ds, exc)) from None
    frames = pixels if shape.frames > 1 else pixels[None]
    masked = 0
    for index, found in boxes.items():
        frame = frames[index]
        for x0, y0, x1, y1 in found:
            frame[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = _black(ds, frame)
            masked += 1
    ds.PixelData = pixels.tobytes()
    if pixels.shape[-1] == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:  # pydicom gave RGB, interleaved
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    codes = ds.get("DeidentificationMethodCodeSequence")
    if codes is not None:
        item = Dataset()
        (item.CodeValue, item.CodeMeaning), item.CodingSchemeDesignator = CLEAN_PIXEL_CODE, "DCM"
        codes.append(item)
    return masked
