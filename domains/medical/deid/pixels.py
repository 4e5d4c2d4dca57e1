"""Masking text burned into the pixels (PS3.15's Clean Pixel Data option), for files shared outside.

Each frame is shown as a reader would see it (the file's window), the text-region finder outlines the
text, and those boxes are filled in the stored pixels with the value that displays black. The file is
rewritten uncompressed, and its De-identification Method Code Sequence says pixels were cleaned.
Burned In Annotation is left as the file said: the finder can miss text, so a person still checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from loupe.core.errors import InputRejected

from ..dicom_image import decode_problem, modality_values
from ..windowing import display

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
MARGIN = 3  # pixels around each box: strokes reach a little past what the detector outlines

TextFinder = Callable[[Image.Image], list]


def _black(ds: Dataset, frame: np.ndarray) -> int | float:
    if frame.ndim == 3:
        return 0
    return frame.max() if ds.get("PhotometricInterpretation") == "MONOCHROME1" else frame.min()


def mask_burned_in_text(ds: Dataset, find_text: TextFinder) -> int:
    """Fill every text region found in every frame; returns how many were filled (0: file untouched)."""
    if "PixelData" not in ds:
        return 0
    if int(ds.get("BitsAllocated", 8)) == 1:
        raise InputRejected("Text masking does not handle 1-bit images.")
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(as_rgb=True)  # colour ends up RGB, and the header says so
        pixels = ds.pixel_array.copy()
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise InputRejected(decode_problem(ds, exc)) from None
    frames = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    masked = 0
    for frame in frames:
        image = display(ds, modality_values(ds, frame))
        for region in find_text(image):
            x0, y0, x1, y1 = (int(round(v)) for v in region.box)
            frame[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = _black(ds, frame)
            masked += 1
    if masked:
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
