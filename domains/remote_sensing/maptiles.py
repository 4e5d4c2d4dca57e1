"""The scene on a map (apps/web/maps.py, OpenLayers in the page): map tiles of any band preset or index with
a percentile stretch over the whole scene, and the values of one pixel with its coordinates.

A tile is at most 256 × 256 output pixels read from the file's nearest overview (GDAL), so each read is
bounded whatever the scene's size; open files and computed stretches are kept for the next tiles. A file is
read by one thread at a time (a GDAL dataset is not thread-safe; the map asks for several tiles at once).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image

from loupe.core.errors import InputRejected
from loupe.core.pyramid.sources import RasterSource, percentile_stretch

from .bands import TRUE_COLOUR, is_index
from .geo import Georef
from .indices import index_values, ramp_image

TILE = 256
STRETCH_SAMPLE_PX = 1024  # the longest side of the overview read to compute a scene-wide stretch
STRETCHES = {"2–98 %": (2.0, 98.0), "0.5–99.5 %": (0.5, 99.5), "5–95 %": (5.0, 95.0), "min–max": (0.0, 100.0)}
OPEN_FILES = 8

_open: OrderedDict[tuple, tuple[RasterSource, threading.Lock]] = OrderedDict()
_stretches: dict[tuple, object] = {}
_histograms: dict[tuple, dict] = {}  # (scene, bands) -> each band's histogram over the scene
_guard = threading.Lock()


def map_info(meta: dict) -> dict:
    """What the map needs: the scene's size and levels, its coordinates (CRS and affine transform, with the
    units the scale bar uses), the views it offers and the stretches."""
    width, height = int(meta["width"]), int(meta["height"])
    transform = meta.get("transform") if meta.get("georeferenced") else None
    units = "pixels"
    if transform and transform[1] == 0 and transform[3] == 0:  # north up: map units are the CRS's
        units = "degrees" if _geographic(meta["crs"]) else "m"
    else:
        transform = None
    top = max(0, math.ceil(math.log2(max(width, height))))
    return {"width": width, "height": height, "tile": TILE, "max_level": top,
            "crs": meta.get("crs") if transform else None, "transform": transform, "units": units,
            "proj4": _proj4(meta["crs"]) if transform else None,
            "views": list((meta.get("presets") or {TRUE_COLOUR: [1, 2, 3]}).keys()),
            "stretches": list(STRETCHES), "bands": int(meta.get("bands", {}).get("count", 0) or 0),
            "indices": {name: bands for name, bands in (meta.get("presets") or {}).items() if is_index(name)}}


def map_tile(location: str, meta: dict, view: str, stretch: str, box: tuple[int, int, int, int],
             size: tuple[int, int]) -> Image.Image:
    """The level-0 ``box`` of the scene at ``size``, in ``view`` (a band preset or an index) with the
    ``stretch`` of the whole scene's values."""
    presets = meta.get("presets") or {}
    _check_view(presets, view, stretch)
    bands = tuple(presets[view])
    source, lock = _opened(location, bands)
    with lock, _unreadable_said():
        if is_index(view):
            from rasterio.windows import Window

            x0, y0, x1, y1 = box
            values = index_values(source.dataset, bands, Window(x0, y0, x1 - x0, y1 - y0), (size[1], size[0]))
            return ramp_image(values)
        source.stretch = _scene_stretch(location, source, bands, STRETCHES[stretch])
        return source.read(box, size, alpha=True)  # no data clear: a basemap (or the map's ground) shows there


@contextmanager
def _unreadable_said() -> Iterator[None]:
    """A read GDAL fails (a damaged file, a server that stopped answering) said as a refusal, not a crash."""
    from rasterio.errors import RasterioIOError

    try:
        yield
    except RasterioIOError:
        raise InputRejected("This part of the scene cannot be read now (the file is damaged, or where it is "
                            "kept did not answer).") from None


def map_stretch(location: str, meta: dict, view: str, stretch: str) -> dict:
    """The band values ``stretch`` maps to black and white in ``view``, over the whole scene (an index: its
    fixed −1 to 1 ramp), and each band's histogram over the scene, for the viewer to draw with the cut-offs."""
    presets = meta.get("presets") or {}
    _check_view(presets, view, stretch)
    bands = tuple(presets[view])
    if is_index(view):
        return {"bands": list(bands), "low": [-1.0], "high": [1.0], "index": True}
    source, lock = _opened(location, bands)
    with lock, _unreadable_said():
        chosen = _scene_stretch(location, source, bands, STRETCHES[stretch])
    low, high = (chosen.low, chosen.high) if chosen else ((0.0,) * len(bands), (255.0,) * len(bands))  # 8-bit as is
    return {"bands": list(bands), "low": [round(v, 4) for v in low], "high": [round(v, 4) for v in high],
            "index": False, "histogram": _histograms.get((location, bands))}


def map_pixel(location: str, meta: dict, col: int, row: int) -> dict:
    """Every band's value at pixel (col, row), read at full resolution, and where it is."""
    width, height = int(meta["width"]), int(meta["height"])
    if not (0 <= col < width and 0 <= row < height):
        raise InputRejected("That point is outside the scene.")
    source, lock = _opened(location, (1,))
    with lock, _unreadable_said():
        from rasterio.windows import Window

        values = source.dataset.read(window=Window(col, row, 1, 1), masked=True)[:, 0, 0]
    out = {"col": col, "row": row, "values": [None if np.ma.is_masked(v) else _number(v) for v in values]}
    if meta.get("georeferenced"):
        georef = Georef(meta["crs"], tuple(meta["transform"]))
        out["x"], out["y"] = georef.to_crs(col + 0.5, row + 0.5)
        lon, lat = georef.to_lonlat([(col + 0.5, row + 0.5)])[0]
        out["lon"], out["lat"] = (None, None) if math.isnan(lon) else (lon, lat)
    return out


def _check_view(presets: dict, view: str, stretch: str) -> None:
    if view not in presets:
        raise InputRejected("No such view of this scene.")
    if stretch not in STRETCHES:
        raise InputRejected(f"No such stretch: choose one of {', '.join(STRETCHES)}.")


def _number(value: object) -> float | int:
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, int) else float(value)


def _proj4(crs: str) -> str | None:
    """The scene's CRS as a PROJ string, for the browser to reproject the scene onto a Web Mercator basemap
    (None when PROJ cannot say it that way)."""
    import warnings

    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "may lose information": the map needs no more
            return CRS.from_user_input(crs).to_proj4()
    except (CRSError, ValueError):
        return None


def _geographic(crs: str) -> bool:
    from pyproj import CRS

    try:
        return CRS.from_user_input(crs).is_geographic
    except Exception:  # noqa: BLE001 - an unreadable CRS: shown in pixels' units
        return False


def _opened(location: str, bands: Sequence[int]) -> tuple[RasterSource, threading.Lock]:
    key = (location, tuple(bands))
    with _guard:
        found = _open.get(key)
        if found is not None:
            _open.move_to_end(key)
            return found
    opened = (RasterSource(location, bands), threading.Lock())
    with _guard:
        _open[key] = opened
        while len(_open) > OPEN_FILES:
            _, (old, old_lock) = _open.popitem(last=False)
            with old_lock:
                old.close()
    return opened


def _scene_sample(source: RasterSource, bands: Sequence[int]) -> np.ndarray:
    """The bands over the whole scene, from its coarsest useful overview (at most STRETCH_SAMPLE_PX a side)."""
    from rasterio.enums import Resampling

    scale = min(1.0, STRETCH_SAMPLE_PX / max(source.width, source.height))
    shape = (len(bands), max(1, round(source.height * scale)), max(1, round(source.width * scale)))
    return source.dataset.read(list(bands), out_shape=shape, resampling=Resampling.average)


def _scene_stretch(location: str, source: RasterSource, bands: Sequence[int], percentiles: tuple[float, float]):  # noqa: ANN202
    """The percentiles of each band over the whole scene, computed once per scene, bands and percentiles; 8-bit
    data shown as it is at 0–100; with each band's histogram (``_histograms``)."""
    key = (location, tuple(bands), percentiles)
    if key in _stretches:
        return _stretches[key]
    sample = _scene_sample(source, bands)
    as_stored = source.dtype == "uint8" and percentiles == (0.0, 100.0)
    stretch = None if as_stored else percentile_stretch(sample, *percentiles)
    if len(_stretches) > 64:  # a few per scene and view: forget the oldest scenes' now and then
        _stretches.clear()
        _histograms.clear()
    _stretches[key] = stretch
    _histograms.setdefault((location, tuple(bands)), _histogram(sample))
    return stretch


HISTOGRAM_BINS = 64


def _histogram(sample: np.ndarray) -> dict:
    """Each band's values counted in HISTOGRAM_BINS equal bins between its smallest and largest value (zeros,
    the usual fill, left out as the stretch leaves them out)."""
    bands = []
    for band in sample:
        values = band[band != 0]
        values = values if values.size else band.ravel()
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high if high > low else low + 1))
        bands.append({"low": _number(low), "high": _number(high), "counts": counts.tolist()})
    return {"bins": HISTOGRAM_BINS, "bands": bands}
