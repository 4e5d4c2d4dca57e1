"""Modality values to display pixels: the file's own window or VOI LUT, named presets, free centre and
width, MONOCHROME1 inversion, and a three-window RGB encoding of CT for the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_voi_lut


@dataclass(frozen=True)
class Window:
    center: float
    width: float


# Common radiology presets (centre, width) in Hounsfield units.
PRESETS: dict[str, Window] = {
    "lung": Window(-600, 1500),
    "mediastinum": Window(50, 350),
    "bone": Window(400, 1800),
    "brain": Window(40, 80),
    "abdomen": Window(60, 400),
    "soft tissue": Window(50, 400),
}
CT_CHANNELS = ("lung", "mediastinum", "bone")  # red, green, blue of the model's view of a CT slice


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """DICOM's LINEAR VOI function (PS3.3 C.11.2.1.2.1) onto 0-255."""
    c, w = window.center, max(window.width, 1.0)
    scaled = np.subtract(values, c - 0.5, dtype=np.float32)  # one float32 working copy, changed in place
    scaled /= max(w - 1, 1e-6)
    scaled += 0.5
    scaled *= 255
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def file_window(ds: Dataset) -> Window | None:
    """The first window the file recommends (Window Center/Width), if it gives a usable one."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return Window(center, width)


def display(ds: Dataset, values: np.ndarray, window: Window | None = None) -> Image.Image:
    """One frame of modality values as a display image: ``window`` if given, else the file's VOI LUT or
    window, else the frame's own range. MONOCHROME1 (white = low) is inverted so bone shows white."""
    if values.ndim == 3:  # colour frames are shown as they are
        return Image.fromarray(values, "RGB")
    if window is None and "VOILUTSequence" in ds:
        shown = _rescale_range(apply_voi_lut(values, ds))
    else:
        chosen = window or file_window(ds) or _full_range(values)
        shown = apply_window(values, chosen)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        shown = 255 - shown
    return Image.fromarray(shown, "L")


def ct_channels(values: np.ndarray, names: tuple[str, str, str] = CT_CHANNELS) -> Image.Image:
    """Three windows of one CT slice in the red, green and blue channels: the model sees lung,
    soft-tissue and bone contrast at once from a single image."""
    planes = [apply_window(values, PRESETS[name]) for name in names]
    return Image.fromarray(np.stack(planes, axis=-1), "RGB")


def _full_range(values: np.ndarray) -> Window:
    low, high = float(np.min(values)), float(np.max(values))
    return Window((low + high) / 2, max(high - low, 1.0) + 1)


def _rescale_range(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    return ((values - low) * (255 / max(high - low, 1e-6))).astype(np.uint8)
