"""A DICOM upload (one file, or a zip of a series) into case assets, de-identified before anything is kept.

For every image kept: the de-identified DICOM (``application/dicom``: the pixels as acquired, for
re-windowing and export) and a display PNG per frame shown (pixels only, the file's own window). The
metadata holds only what the de-identified header still says, the window used, and flags: Burned In
Annotation = YES in the header, and text found in the pixels by the text-region finder (boxes and
confidence only: the text itself may be a name).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from loupe.core.errors import InputRejected
from loupe.core.images import pixels_only_png
from loupe.core.plugins import Budgets, IngestedAsset

from .deid.batch import encode
from .deid.deidentify import Deidentifier, DeidOptions
from .deid.pixels import find_text_scaled
from .dicom_image import check_size, check_work, geometry, iter_frame_values, object_kind, read_dataset
from .series import is_zip, read_series, zip_members
from .slides import ingest_dicom_slide, is_slide_dataset
from .sr import is_structured_report, structured_text
from .windowing import display, file_window

MAX_PREVIEWS = 32  # display frames stored per case (evenly spaced through a series or a multi-frame file)
# Header facts kept in the metadata: none identifies a patient once the header is de-identified.
FACTS = ("Modality", "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality", "SeriesDescription",
         "StudyDescription", "SliceThickness", "PixelSpacing", "PhotometricInterpretation", "Manufacturer")

Progress = Callable[[int, int], None]


def header_facts(ds: Dataset) -> dict:
    facts = {}
    for keyword in FACTS:
        value = ds.get(keyword)
        if value not in (None, ""):
            facts[keyword] = [float(v) for v in value] if keyword == "PixelSpacing" else str(value)
    return facts


def datasets_of(data: bytes, limits: Budgets) -> list[Dataset]:
    """The datasets to keep: a single file (an image or a structured report), or the largest series of a zip."""
    if is_zip(data):
        series, _ = read_series(zip_members(data, limits), limits)
        if not series:
            raise InputRejected("The zip holds no readable DICOM image.")
        return series[0].slices
    ds = read_dataset(data, limits=limits)
    if geometry(ds) is None and not is_structured_report(ds):
        raise InputRejected(no_image(ds))
    return [ds]


def no_image(ds: Dataset) -> str:
    """Why a DICOM object without pixels or report text is refused, named by what it is (its SOP class)."""
    kind = object_kind(ds)
    if not kind:
        return "This DICOM file has no image and no report text, so there is nothing to show."
    if kind.startswith("DICOMDIR"):
        return ("This is a DICOMDIR, an index of other DICOM files, with no image of its own: upload the images "
                "it lists (a zip of the study's files).")
    if "Image" in kind:
        return f"This DICOM {kind} file holds no pixel data (only its header), so there is nothing to show."
    return f"This is a DICOM {kind}; it has no image and no report text, so there is nothing to show."


def report_asset(ds: Dataset) -> IngestedAsset:
    """A structured report kept as its cleaned text only: the de-identified header would have no content left."""
    text = structured_text(ds)
    meta = {"kind": "sr_text", "Modality": "SR", "title": text.splitlines()[0], "text": text,
            "sop_class": getattr(ds.get("SOPClassUID"), "name", "")}
    return IngestedAsset(text.encode("utf-8"), "text/plain", None, None, meta)


def evenly_spaced(count: int, limit: int) -> list[int]:
    """Indices of ``count`` items to show when at most ``limit`` fit: all, or spread from first to last."""
    if count <= limit:
        return list(range(count))
    if limit <= 1:
        return [0]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def ingest_dicom(data: bytes, limits: Budgets, secret: bytes, progress: Progress | None = None,
                 find_text: Callable[[Image.Image], list] | None = None) -> list[IngestedAsset]:
    limits.check("max_bytes", len(data), "The file")
    datasets = datasets_of(data, limits)
    if len(datasets) == 1 and geometry(datasets[0]) is None:
        return [report_asset(datasets[0])]
    if any(is_slide_dataset(ds) for ds in datasets):  # read in tiles: its own checks, per level and tile
        return ingest_dicom_slide(datasets, secret, limits)
    shapes = [geometry(ds) for ds in datasets]
    for n, shape in enumerate(shapes):  # every budget checked before any pixel is decoded
        check_size(shape, limits, f"Slice {n + 1}" if len(shapes) > 1 else "The image")
    check_work(shapes, limits)
    deidentify = Deidentifier(DeidOptions(secret))
    frames = [(i, f) for i, ds in enumerate(datasets) for f in range(geometry(ds).frames)]
    shown = {frames[k] for k in evenly_spaced(len(frames), MAX_PREVIEWS)}
    assets: list[IngestedAsset] = []
    done = 0
    for position, ds in enumerate(datasets):
        clean, report = deidentify(ds, in_place=True)
        shape = geometry(clean)
        meta = {"kind": "dicom", "series_position": position, "frames": shape.frames, **header_facts(clean),
                "deid": report.as_dict()["actions"], "burned_in_annotation": report.burned_in_annotation}
        assets.append(IngestedAsset(encode(clean), "application/dicom", shape.columns, shape.rows, meta))
        # Every frame is decoded once, one at a time, shown or not: a damaged one refuses the upload before
        # anything is kept.
        for frame, values in enumerate(iter_frame_values(clean)):
            if (position, frame) not in shown:
                continue
            assets.append(view_asset(clean, values, (position, frame), len(datasets), report.burned_in_annotation,
                                     find_text))
            done += 1
            if progress is not None:  # per frame shown: the text-region finder is the slow part
                progress(done, len(shown))
    return assets


# Transfer syntaxes that lose information (JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000 lossy,
# JPEG XL, HTJ2K lossy): PS3.5 A.4 and PS3.6.
LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                  "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112",
                  "1.2.840.10008.1.2.4.203"}


def lossy_facts(ds: Dataset) -> dict:
    """Whether the pixels were ever compressed with loss (Lossy Image Compression "01", or stored in a lossy
    syntax now), with the ratio and method the header gives: a reader must know before measuring."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if str(ds.get("LossyImageCompression", "")) != "01" and syntax not in LOSSY_SYNTAXES:
        return {}
    ratios, methods = _values(ds.get("LossyImageCompressionRatio")), _values(ds.get("LossyImageCompressionMethod"))
    return {"lossy": True, "lossy_ratio": round(float(ratios[-1]), 1) if ratios else None,
            "lossy_method": str(methods[-1]) if methods else None}  # the last compression applied


def _values(value: object) -> list:
    """A DICOM value as a list: several (a MultiValue), one, or none."""
    if value in (None, ""):
        return []
    return list(value) if isinstance(value, MultiValue) else [value]


def view_asset(clean: Dataset, values: np.ndarray, where: tuple[int, int], slices: int, burned_in: bool,
               find_text: Callable[[Image.Image], list] | None) -> IngestedAsset:
    """The display PNG of frame ``where = (slice, frame)`` of a de-identified dataset, with what it shows and
    the text regions found in it (boxes only)."""
    image = display(clean, values)
    found = find_text_scaled(image, find_text) if find_text else []
    window = file_window(clean)
    meta = {"kind": "view", "series_position": where[0], "frame": where[1], "frames": geometry(clean).frames,
            "slices": slices, **header_facts(clean), **lossy_facts(clean),
            "window": [window.center, window.width] if window else None,
            "burned_in_annotation": burned_in,
            "text_regions": [{"box": [round(v, 1) for v in r.box], "confidence": round(r.confidence, 3)}
                             for r in found]}
    return IngestedAsset(pixels_only_png(image), "image/png", image.width, image.height, meta)


def png_image(asset: IngestedAsset) -> Image.Image:
    return Image.open(io.BytesIO(asset.data)).convert("RGB")
