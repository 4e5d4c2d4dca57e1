"""The case's frames for the browser's DICOM viewer (Cornerstone3D, see apps/web/viewers): what the series is,
each frame's modality values with what a viewer needs to place and window them, and a frame's header as a
de-identified tag list. Runs in job workers: decoding is heavy work, never the web process's.

Values go out as modality values (HU for CT) so the viewer windows, measures and reports them as the
reader expects; a whole frame is sent as int16 when its values are whole numbers that fit, else float32;
colour frames as RGB bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected
from loupe.core.plugins import IngestedAsset

from .dicom_image import frame_values, read_dataset
from .pacs import fetch_instance, series_frames, series_of
from .windowing import PRESETS, file_window

PREFETCH = 8  # frames the viewer loads ahead of the one shown (cine); none from a PACS: slices fetched as viewed
DEFAULT_FPS = 10.0  # cine speed when the file gives none (Frame Time, Cine Rate, Recommended Display Frame Rate)
MAX_TAG_TEXT = 200  # characters of one element's value shown in the tag browser
MAX_TAGS = 2000  # elements listed (a header with more is cut, and says so)


def frames_of(assets: Sequence[IngestedAsset]) -> list[tuple[IngestedAsset, str | None, int]]:
    """Every (DICOM asset, instance UID in a PACS or None, frame) of the case, in series order."""
    series = series_of(assets)
    if series is not None:
        return [(series, uid, frame) for _, uid, frame, _ in series_frames(series)]
    return [(a, None, f) for a in assets if a.meta.get("kind") == "dicom" for f in range(int(a.meta.get("frames", 1)))]


def stack_info(assets: Sequence[IngestedAsset]) -> dict:
    """What the viewer needs before the first frame: how many frames, the modality and its window presets,
    the image's own window, the cine speed."""
    frames = frames_of(assets)
    meta = next((a.meta for a in assets if a.meta.get("kind") in ("view", "dicom_series")), {})
    modality = str(meta.get("Modality") or "").upper()
    first = _dataset(frames[0]) if frames else None
    window = file_window(first) if first is not None else None
    return {"count": len(frames), "modality": modality,
            "window": [window.center, window.width] if window else meta.get("window"),
            "presets": {name: [w.center, w.width] for name, w in PRESETS.items()} if modality == "CT" else {},
            "fps": cine_rate(first) if first is not None else DEFAULT_FPS,
            "lossy": bool(meta.get("lossy")), "prefetch": 0 if series_of(assets) is not None else PREFETCH}


def stack_frame(assets: Sequence[IngestedAsset], number: int) -> tuple[dict, bytes]:
    """Frame ``number`` (0-based, in series order): its facts and its values as little-endian bytes."""
    frames = frames_of(assets)
    if not 0 <= number < len(frames):
        raise InputRejected(f"This case has no image {number + 1}.")
    ds = _dataset(frames[number])
    values = frame_values(ds, frames[number][2])
    if values.ndim == 3:
        data, dtype, samples = np.ascontiguousarray(values, dtype=np.uint8), "uint8", 3
    elif np.all(np.isfinite(values)) and np.array_equal(values, np.round(values)) and \
            values.min(initial=0) >= -32768 and values.max(initial=0) <= 32767:
        data, dtype, samples = values.astype("<i2"), "int16", 1
    else:
        data, dtype, samples = values.astype("<f4"), "float32", 1
    window = file_window(ds)
    facts = {"rows": int(values.shape[0]), "columns": int(values.shape[1]), "samples": samples, "dtype": dtype,
             "spacing": pixel_spacing(ds), "window": [window.center, window.width] if window else None,
             "position": _floats(ds.get("ImagePositionPatient"), 3), "orientation": _floats(
                 ds.get("ImageOrientationPatient"), 6), "invert": ds.get("PhotometricInterpretation") == "MONOCHROME1"}
    return facts, data.tobytes()


def stack_tags(assets: Sequence[IngestedAsset], number: int, deidentify: object = None) -> dict:
    """The header of frame ``number``'s file as rows (tag, keyword, VR, value as text), sequences indented.
    A stored file is already de-identified; an instance fetched from a PACS is passed through
    ``deidentify`` (the upload's de-identifier) first."""
    frames = frames_of(assets)
    if not 0 <= number < len(frames):
        raise InputRejected(f"This case has no image {number + 1}.")
    ds = _dataset(frames[number])
    if frames[number][1] is not None and deidentify is not None:
        ds = deidentify(ds, in_place=False)[0]
    rows: list[list] = []
    _walk(ds, 0, rows)
    return {"rows": rows[:MAX_TAGS], "cut": len(rows) > MAX_TAGS}


def _walk(ds: Dataset, depth: int, rows: list[list]) -> None:
    for element in ds:
        if len(rows) > MAX_TAGS:
            return
        if element.tag.group == 0x7FE0 or element.VR in ("OB", "OW", "OF", "OD", "UN"):
            value = f"({len(element.value or b'') if isinstance(element.value, bytes) else '…'} bytes, not shown)"
        elif element.VR == "SQ":
            value = f"{len(element.value)} item(s)"
        else:
            value = str(element.value)
        if len(value) > MAX_TAG_TEXT:
            value = value[:MAX_TAG_TEXT] + "…"
        rows.append([depth, f"({element.tag.group:04X},{element.tag.element:04X})", element.keyword or "",
                     element.VR, value])
        if element.VR == "SQ":
            for item in element.value:
                _walk(item, depth + 1, rows)


def pixel_spacing(ds: Dataset) -> list[float] | None:
    """(row, column) spacing in mm: Pixel Spacing, else Imager Pixel Spacing (at the detector)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _floats(ds.get(keyword), 2)
        if spacing and all(v > 0 for v in spacing):
            return spacing
    return None


def cine_rate(ds: Dataset) -> float:
    """Frames per second the file asks for (Recommended Display Frame Rate, Cine Rate, or Frame Time)."""
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _floats(ds.get(keyword), 1)
        if rate and 0 < rate[0] <= 240:
            return rate[0]
    frame_time = _floats(ds.get("FrameTime"), 1)  # milliseconds
    if frame_time and frame_time[0] > 0:
        return min(240.0, 1000.0 / frame_time[0])
    return DEFAULT_FPS


def _floats(value: object, count: int) -> list[float] | None:
    """The first ``count`` numbers of a DICOM value (one number or several), None when it has fewer."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | bytes) or not hasattr(value, "__iter__") else value
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return values[:count] if len(values) >= count and all(np.isfinite(values[:count])) else None


def _dataset(frame: tuple[IngestedAsset, str | None, int]) -> Dataset:
    """The dataset holding ``frame`` (an entry of ``frames_of``): its pixels decoded only as a frame is asked for."""
    asset, uid, _ = frame
    if uid is not None:
        return _fetched(str(asset.path), uid)
    if asset.data or asset.path is None:  # in memory (a fresh ingest): parsed as it is
        return read_dataset(asset.data)
    path = Path(asset.path)
    stat = path.stat()
    return _stored(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _stored(path: str, mtime_ns: int, size: int) -> Dataset:
    """A stored (de-identified) file, parsed once per worker for its header and each frame viewed (a 120-frame
    cine is one file). Keyed by size and time too: a changed file is parsed anew."""
    with open(path, "rb") as handle:
        data = handle.read(size + 1)
    return read_dataset(data)


@functools.lru_cache(maxsize=4)
def _fetched(location: str, uid: str) -> Dataset:
    """One instance of a series in a PACS (each job worker keeps the last few: cine through a multi-frame)."""
    return fetch_instance(location, uid, Budgets.from_env())

