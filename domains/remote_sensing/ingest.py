"""A GeoTIFF / COG (or an ordinary aerial photo) into case assets.

The raster's pixels and georeferencing are kept as they came, in a clean copy written band by band: no TIFF
text tag (Artist, ImageDescription, DocumentName...), XMP, IPTC, ICC, GDAL metadata or band description
survives (they can name people). One larger than the pyramid's base level without internal overviews gets
them (all levels in one GDAL pass) so that no later read needs the full image. An ordinary photo is
kept as a PNG of its pixels only. The work an ingest will do (pixels copied, pixels read to build
overviews) is known from the header and checked against ``max_work_pixels`` before any pixel is read.
16-bit and float data get one percentile stretch for the whole scene, computed from the coarsest
overview, so tiles read later match each other. Stored: the raster (read lazily, never whole) and a
thumbnail PNG for the viewer.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from loupe.core.budgets import BudgetExceeded
from loupe.core.errors import InputRejected
from loupe.core.images import check_before_decoding, open_bounded, pixels_only_png
from loupe.core.ingest_io import file_asset, head, local_file, read_whole, staged_path
from loupe.core.plugins import Budgets, IngestedAsset
from loupe.core.pyramid.pyramid import BASE_SIDE
from loupe.core.pyramid.sources import RasterSource, Stretch, is_tiff, open_source, percentile_stretch

from .bands import TRUE_COLOUR, band_roles, presets
from .geo import Georef

VIEW_SIDE = 1024  # the viewer's picture of the whole scene
MAX_VIEW_READ_SIDE = 4 * VIEW_SIDE  # the largest level read (by reference) to make that picture
Progress = Callable[[int, int], None]


def _overview_factors(width: int, height: int) -> list[int]:
    levels = max(0, math.ceil(math.log2(max(width, height) / BASE_SIDE)))
    return [2**n for n in range(1, levels + 1)]


def _add_overviews(path: Path, progress: Progress | None, factors: list[int] | None = None) -> None:
    """Build ``factors`` (default: those the pyramid needs) unless the file already has overviews.

    All levels in one call: GDAL then reads the full image once, where one call per level read it once per
    level (a third of the time for a 5-level scene). Progress is reported per level when they are done."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError

    with rasterio.open(path) as ds:
        if ds.overviews(1):
            return
        factors = factors or _overview_factors(ds.width, ds.height)
    if not factors:
        return
    try:
        with rasterio.open(path, "r+") as ds:  # internal overviews
            ds.build_overviews(factors, Resampling.average)
        if progress is not None:
            for done in range(1, len(factors) + 1):
                progress(done, len(factors))
    except RasterioIOError:
        raise InputRejected("The image has no overviews and they cannot be added to it (is it damaged?). "
                            "Convert it to a Cloud-Optimized GeoTIFF first (gdal_translate -of COG).") from None


def _scene_stretch(path: Path | str, bands: list[int]) -> Stretch | None:
    import rasterio

    with rasterio.open(path) as ds:
        if ds.dtypes[0] == "uint8":
            return None
        scale = max(1, max(ds.width, ds.height) // 1024)
        values = ds.read(bands, out_shape=(len(bands), max(1, ds.height // scale), max(1, ds.width // scale)))
    return percentile_stretch(values)


def describe_bands(path: Path | str) -> tuple[dict[str, list[int]], dict]:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            roles = band_roles([c.name for c in ds.colorinterp], list(ds.descriptions))
            return presets(roles, ds.count), {"count": ds.count, "dtype": ds.dtypes[0], "roles": roles}


def ingest_raster(upload: Path | BinaryIO, limits: Budgets, progress: Progress | None = None) -> list[IngestedAsset]:
    """A scene read in parts from the upload (its path, or a stream spooled to disk), its clean copy with
    overviews written to a file the store moves into place: memory stays bounded whatever the file's size
    (within ``max_stream_bytes``). An ordinary photo is read whole (``max_bytes``) and stored as a PNG."""
    from rasterio.errors import RasterioIOError

    if not is_tiff(head(upload)):  # an ordinary photo: one level, no coordinates, stored as its pixels only
        with tempfile.TemporaryDirectory(prefix="loupe-raster-") as folder:
            path = Path(folder) / "scene.img"
            data = pixels_only_png(_open_photo(read_whole(upload, limits), limits, path))
            path.write_bytes(data)
            source = open_source(path, limits.max_pixels)
            view = source.read((0, 0, source.width, source.height), _fit(source.width, source.height))
            meta = {"kind": "raster", "lazy": True, "format": "image", "width": source.width,
                    "height": source.height, "presets": {TRUE_COLOUR: [1, 2, 3]}, "georeferenced": False,
                    "description": source.description, "max_pixels": limits.max_pixels}
            return [IngestedAsset(data, "application/octet-stream", source.width, source.height, meta),
                    _view(view, meta)]
    clean = staged_path(".tif")
    try:
        with local_file(upload, limits, ".tif") as path:
            source = RasterSource(path)  # the header only; sides over MAX_SIDE are refused here
            try:
                limits.check("max_work_pixels", planned_work(source.width, source.height, source.native_downsamples),
                             f"Taking in this {source.width:,} × {source.height:,} px raster (copying its pixels "
                             "once and reading them again to build overviews)")
                corner = (min(source.width, 256), min(source.height, 256))
                source.read((0, 0, *corner), corner)  # proves the pixels decode; the copy reads every block
            finally:
                source.close()
            try:
                factors = clean_copy(path, clean)
            except RasterioIOError:
                raise InputRejected("The image's pixel data cannot be read: the file is damaged or truncated.") \
                    from None
        _add_overviews(clean, progress, factors)
        meta, view = describe_raster(clean, limits.max_pixels)
        return [file_asset(clean, "image/tiff", meta["width"], meta["height"], meta), _view(view, meta)]
    except BaseException:
        clean.unlink(missing_ok=True)
        raise


def open_raster_item(location: str, limits: Budgets, progress: Progress | None = None) -> list[IngestedAsset]:
    """A GeoTIFF of a data source, opened where it lives: only its header and its overviews are read (the
    view picture and the scene stretch come from them); its tiles are read when a question needs them. One
    without an overview small enough for the view is refused: it would have to be read whole."""
    source = RasterSource(location)  # the header only; sides over MAX_SIDE are refused here
    try:
        smallest = max(source.width, source.height) / max(source.native_downsamples)
    finally:
        source.close()
    if smallest > MAX_VIEW_READ_SIDE:
        raise InputRejected(f"This {source.width:,} × {source.height:,} px raster has no overview small enough to "
                            "show it without reading it whole. Open Cloud-Optimized GeoTIFFs where they are "
                            "(gdal_translate -of COG adds overviews), or upload this one.")
    meta, view = describe_raster(location, limits.max_pixels)
    if progress is not None:
        progress(1, 1)
    meta["by_reference"] = True
    return [IngestedAsset(b"", "image/tiff", meta["width"], meta["height"], meta), _view(view, meta)]


def planned_work(width: int, height: int, downsamples: tuple[float, ...]) -> int:
    """Pixels an ingest reads: every pixel once for the clean copy, and once more to build its overviews
    (the source's, or those the pyramid needs) when it has or needs any."""
    overviews = len(downsamples) > 1 or bool(_overview_factors(width, height))
    return width * height * (2 if overviews else 1)


def _open_photo(data: bytes, limits: Budgets, path: Path) -> Image.Image:
    """An ordinary image, checked from its header first; a raster format Loupe does not read is named."""
    check_before_decoding(data, limits)
    try:
        return open_bounded(data, limits.max_bytes, limits.max_pixels)
    except BudgetExceeded:
        raise
    except InputRejected:
        path.write_bytes(data)
        if named := gdal_format(path):
            raise InputRejected(f"The file is {named}, a format Loupe does not read (it reads GeoTIFF / COG, PNG "
                                "and JPEG). Convert it to a Cloud-Optimized GeoTIFF (gdal_translate -of COG) and "
                                "upload that.") from None
        raise


# GDAL drivers for formats Loupe reads itself: a damaged PNG is called damaged, not "a PNG Loupe does not read"
_READ_HERE = {"GTiff", "COG", "PNG", "JPEG", "WEBP", "BMP", "GIF"}


def gdal_format(path: Path) -> str | None:
    """GDAL's name for the raster format of ``path`` (e.g. "Network Common Data Format (netCDF)") when it is
    one GDAL opens but Loupe does not read; None otherwise. Only the header is read."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED=False):
            warnings.simplefilter("ignore")
            with rasterio.open(path) as ds:
                driver = ds.driver
    except (RasterioError, OSError, ValueError):
        return None
    if driver in _READ_HERE:
        return None
    with rasterio.Env() as env:
        long_name = env.drivers().get(driver, driver)
    return f"{long_name} ({driver})" if long_name != driver else driver


def clean_copy(source: Path, target: Path) -> list[int]:
    """Write ``source``'s pixels, georeferencing (CRS, transform or GCPs), nodata or mask, colour interpretation,
    palette and scale/offset to a new tiled GeoTIFF, and nothing else: no tags, no descriptions. A band
    description survives only as "nir" when it names near infrared (band presets use it). Returns the
    source's overview factors (to be rebuilt on the copy)."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp, MaskFlags

    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning: a plain TIFF is fine
        with rasterio.open(source) as src:
            crs = CRS.from_epsg(src.crs.to_epsg()) if src.crs and src.crs.to_epsg() else src.crs
            rgb = src.count >= 3 and src.dtypes[0] == "uint8" and \
                tuple(src.colorinterp[:3]) == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": src.count,
                       "dtype": src.dtypes[0], "nodata": src.nodata, "tiled": True, "blockxsize": 256,
                       "blockysize": 256, "compress": "deflate", "interleave": "pixel", "BIGTIFF": "IF_SAFER",
                       **({"photometric": "RGB"} if rgb else {})}
            masked = MaskFlags.per_dataset in src.mask_flag_enums[0]  # e.g. a JPEG COG's validity mask
            gcps, gcp_crs = src.gcps
            if not src.transform.is_identity or not gcps:
                profile.update(crs=crs, transform=src.transform)
            with rasterio.open(target, "w", **profile) as dst:
                if gcps and src.transform.is_identity:  # ids and notes of control points are free text
                    dst.gcps = ([GroundControlPoint(g.row, g.col, g.x, g.y, g.z, id=str(n))
                                 for n, g in enumerate(gcps, start=1)], crs or gcp_crs)
                dst.colorinterp = src.colorinterp
                dst.scales, dst.offsets = src.scales, src.offsets
                for band, text in enumerate(src.descriptions, start=1):
                    if text and ("nir" in text.lower() or "infrared" in text.lower()):
                        dst.set_band_description(band, "nir")
                if src.count == 1 and src.colorinterp[0] == ColorInterp.palette:
                    dst.write_colormap(1, src.colormap(1))
                for _, window in dst.block_windows(1):
                    dst.write(src.read(window=window), window=window)
                    if masked:
                        dst.write_mask(src.dataset_mask(window=window), window=window)
            return list(src.overviews(1))


def describe_raster(path: Path | str, max_pixels: int) -> tuple[dict, Image.Image]:
    """What a GeoTIFF is (size, bands and presets, scene stretch, coordinates) and its view picture."""
    band_presets, bands = describe_bands(path)
    chosen = band_presets.get(TRUE_COLOUR) or next(iter(band_presets.values()))
    stretch = _scene_stretch(path, chosen)
    source = RasterSource(path, chosen, stretch)
    try:
        view = source.read((0, 0, source.width, source.height), _fit(source.width, source.height))
        meta = {"kind": "raster", "lazy": True, "format": "tiff", "width": source.width, "height": source.height,
                "description": source.description, "bands": bands, "presets": band_presets,
                "stretch": [list(stretch.low), list(stretch.high)] if stretch else None,
                "georeferenced": source.transform is not None, "crs": source.crs,
                "transform": list(source.transform) if source.transform else None,
                "overview_factors": list(source.native_downsamples[1:]), "max_pixels": max_pixels}
    finally:
        source.close()
    if meta["georeferenced"]:
        try:
            meta["corners_lonlat"] = _corners(meta)
        except Exception:  # noqa: BLE001 - pyproj raises several kinds for a CRS it cannot place on the Earth
            meta.update(georeferenced=False, description=f"{meta['description']} (its coordinate system cannot be "
                                                          "converted to latitude and longitude)")
    return meta, view


def _fit(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, VIEW_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _view(image, meta: dict) -> IngestedAsset:  # noqa: ANN001 - a PIL image
    facts = {k: meta[k] for k in ("width", "height", "description", "georeferenced")}
    return IngestedAsset(pixels_only_png(image), "image/png", image.width, image.height,
                         {"kind": "view", "preset": TRUE_COLOUR, **facts})


def _corners(meta: dict) -> list[list[float]] | None:
    georef = Georef(meta["crs"], tuple(meta["transform"]))
    points = georef.to_lonlat([(0, 0), (meta["width"], 0), (meta["width"], meta["height"]), (0, meta["height"])])
    if any(np.isnan(lon) for lon, _ in points):
        return None  # part of the scene is off the Earth (a full-disk view)
    return [[round(lon, 6), round(lat, 6)] for lon, lat in points]
