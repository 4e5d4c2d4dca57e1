"""Tile sources: any region of a (possibly giant) image, read at any output size, without the whole image.

Every source is addressed in level-0 pixel coordinates (x to the right, y down, half-open boxes). A
source says what it can do cheaply through ``native_downsamples`` (its internal overviews or slide
levels); ``read`` picks the finest native level that still covers the requested output size, so a
thumbnail of a 27k-px COG reads a small overview, never the full image.

- ``RasterSource``: GeoTIFF / COG and plain TIFFs through rasterio (GDAL): windows, overviews, band
  choice, nodata and masks, CRS and affine transform where georeferenced.
- ``SlideSource``: whole-slide images through OpenSlide (SVS, NDPI, MRXS, tiled TIFF...).
- ``PILSource``: ordinary images (PNG, JPEG, WebP), decoded once and bounded by the pixel limit; they
  cannot be read lazily, so a giant one is refused with the formats that can.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..errors import InputRejected

# GDAL keeps decoded blocks in a cache of 5% of the machine's memory by default: over a giant image the
# process would grow with every block read. 64 MB holds a few hundred 512-px tiles. GDAL_CACHEMAX set by
# the user wins.
os.environ.setdefault("GDAL_CACHEMAX", "64")
# COGs read by reference over HTTP (/vsicurl/): no directory listing request before each open, adjacent
# ranges merged into one request. Settings the user made win.
os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
os.environ.setdefault("GDAL_HTTP_MERGE_CONSECUTIVE_RANGES", "YES")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in level-0 pixels, half-open
LAZY_FORMATS = "a tiled GeoTIFF / COG, or a whole-slide format (SVS, NDPI, MRXS, tiled TIFF)"
MAX_SIDE = 1_000_000  # no real raster is wider: a larger claim is a broken or hostile header


class TileSource(Protocol):
    width: int  # level 0
    height: int
    native_downsamples: tuple[float, ...]  # 1.0 first: levels readable without resampling the full image
    crs: str | None  # e.g. "EPSG:32618"; None when not georeferenced
    transform: tuple[float, ...] | None  # affine (a, b, c, d, e, f): x_geo = a*col + b*row + c ...
    description: str  # what it is, for the user: "GeoTIFF 3 bands uint8, EPSG:32618"

    def read(self, box: Box, size: tuple[int, int]) -> Image.Image:
        """The level-0 region ``box`` as an RGB image of ``size`` (width, height)."""
        ...

    def close(self) -> None: ...


def check_dimensions(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise InputRejected("The image header gives an empty size.")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputRejected(f"The image claims {width:,} × {height:,} pixels: no real image is that large, so the "
                            "file is damaged or not what it says.")



@dataclass(frozen=True)
class Stretch:
    """How raw band values become 0-255: a per-band linear range (16-bit data, reflectances)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def apply(self, values: np.ndarray) -> np.ndarray:  # [bands, h, w] -> uint8
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        high = np.asarray(self.high, dtype=np.float32)[:, None, None]
        scaled = (values.astype(np.float32) - low) / np.maximum(high - low, 1e-6)
        return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


class RasterSource:
    """A raster file through rasterio; ``bands`` are 1-based band numbers (one band is shown grey)."""

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None, stretch: Stretch | None = None) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        try:
            with warnings.catch_warnings():  # a plain TIFF is fine: it just has no coordinates
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(path)
        except RasterioIOError as exc:
            from ..sources.gdal_vsi import remote_read_problem

            problem = remote_read_problem(str(path), str(exc))
            raise InputRejected(problem or "The file is not a raster image GDAL can open (is it a GeoTIFF or "
                                "TIFF?).") from None
        ds = self._ds
        check_dimensions(ds.width, ds.height)
        self.width, self.height = ds.width, ds.height
        self.count = ds.count
        self.bands = tuple(bands or default_bands(ds.count, ds.colorinterp))
        if any(b < 1 or b > ds.count for b in self.bands):
            raise InputRejected(f"The image has {ds.count} band(s); bands {list(self.bands)} were asked for.")
        self.dtype = ds.dtypes[0]
        self.stretch = stretch
        overviews = ds.overviews(1)
        self.native_downsamples = (1.0, *(float(f) for f in overviews))
        self.crs = ds.crs.to_string() if ds.crs else None
        georeferenced = ds.crs is not None and not ds.transform.is_identity
        self.transform = tuple(ds.transform)[:6] if georeferenced else None
        self.nodata = ds.nodata
        kind = "GeoTIFF" if georeferenced else "TIFF"
        self.description = f"{kind} {ds.count} band{'s' if ds.count != 1 else ''} {self.dtype}" + (
            f", {crs_label(ds.crs)}" if georeferenced else ", not georeferenced")

    def read(self, box: Box, size: tuple[int, int], alpha: bool = False) -> Image.Image:
        """The level-0 ``box`` at ``size``, RGB with nodata and masked pixels black; with ``alpha``, an RGBA
        image where they are clear instead (only when the box holds any: else RGB)."""
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        x0, y0, x1, y1 = box
        window = Window(x0, y0, x1 - x0, y1 - y0)
        out_w, out_h = size
        try:  # GDAL reads from the overview closest to the requested decimation
            values = self._ds.read(list(self.bands), window=window, out_shape=(len(self.bands), out_h, out_w),
                                   resampling=Resampling.average, boundless=False)
            mask = self._ds.read_masks(self.bands[0], window=window, out_shape=(out_h, out_w),
                                       resampling=Resampling.nearest)
        except RasterioIOError:
            raise InputRejected("The image's pixel data cannot be read: the file is damaged or truncated.") from None
        pixels = self._to_uint8(values)
        pixels[:, mask == 0] = 0  # nodata and masked pixels show black
        if pixels.shape[0] == 1:
            pixels = np.repeat(pixels, 3, axis=0)
        if alpha and (mask == 0).any():
            layers = np.concatenate([pixels[:3], np.where(mask == 0, 0, 255).astype(np.uint8)[None]])
            return Image.fromarray(np.ascontiguousarray(layers.transpose(1, 2, 0)), "RGBA")
        return Image.fromarray(np.ascontiguousarray(pixels[:3].transpose(1, 2, 0)), "RGB")

    @property
    def dataset(self):  # noqa: ANN201 - the open rasterio dataset, for reads beyond display (values, indices)
        return self._ds

    def _to_uint8(self, values: np.ndarray) -> np.ndarray:
        if self.stretch is not None:
            return self.stretch.apply(values)
        if values.dtype == np.uint8:
            return values.copy()
        return percentile_stretch(values).apply(values)

    def close(self) -> None:
        self._ds.close()


def crs_label(crs) -> str:  # noqa: ANN001 - a rasterio CRS
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    projection = crs.to_dict().get("proj")
    return f"a custom CRS ({projection})" if projection else "a custom CRS"


def default_bands(count: int, colorinterp: Sequence) -> tuple[int, ...]:
    """Red, green, blue where the file says which bands they are; else the first three; else band 1."""
    names = [getattr(c, "name", str(c)) for c in colorinterp]
    if all(n in names for n in ("red", "green", "blue")):
        return tuple(names.index(n) + 1 for n in ("red", "green", "blue"))
    return (1, 2, 3) if count >= 3 else (1,)


def percentile_stretch(values: np.ndarray, low: float = 2, high: float = 98) -> Stretch:
    """The 2nd-98th percentile of each band (ignoring zeros, the usual fill), as analysts stretch 16-bit data."""
    lows, highs = [], []
    for band in values:
        sample = band[band != 0]
        if sample.size == 0:
            sample = band.ravel()
        lo, hi = np.percentile(sample, [low, high]) if sample.size else (0, 1)
        lows.append(float(lo))
        highs.append(float(hi) if hi > lo else float(lo) + 1)
    return Stretch(tuple(lows), tuple(highs))


class SlideSource:
    """A whole-slide image through OpenSlide."""

    thread_safe = True  # OpenSlide reads one slide from several threads at once (a viewer's tiles in parallel)

    def __init__(self, path: str | Path) -> None:
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError):
            raise InputRejected("OpenSlide cannot read this slide: the file is damaged or not a whole-slide "
                                "format it knows (SVS, NDPI, MRXS, SCN, tiled TIFF...).") from None
        self.width, self.height = self._slide.dimensions
        check_dimensions(self.width, self.height)
        self.native_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.crs = None
        self.transform = None
        try:  # one pixel of the coarsest level: a slide whose tiles cannot be decoded fails here, not later
            self._slide.read_region((0, 0), self._slide.level_count - 1, (1, 1))
        except openslide.OpenSlideError:
            self._slide.close()
            raise InputRejected("The slide's pixel data cannot be read: the file is damaged.") from None
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.microns_per_pixel = float(mpp) if mpp else None
        vendor = self._slide.properties.get("openslide.vendor", "slide")
        self.description = f"whole-slide image ({vendor}), {self._slide.level_count} levels"

    def read(self, box: Box, size: tuple[int, int]) -> Image.Image:
        import openslide

        x0, y0, x1, y1 = box
        downsample = max((x1 - x0) / size[0], (y1 - y0) / size[1])
        level = self._slide.get_best_level_for_downsample(max(1.0, downsample))
        factor = self.native_downsamples[level]
        region_size = (max(1, math.ceil((x1 - x0) / factor)), max(1, math.ceil((y1 - y0) / factor)))
        try:  # read_region takes level-0 coordinates for the corner and level coordinates for the size
            region = self._slide.read_region((x0, y0), level, region_size)
        except openslide.OpenSlideError:
            raise InputRejected("The slide's pixel data cannot be read: the file is damaged.") from None
        background = Image.new("RGB", region.size, (255, 255, 255))  # transparent = no tissue scanned: white
        background.paste(region, mask=region.getchannel("A"))
        return background.resize(size, Image.Resampling.BOX) if background.size != size else background

    def close(self) -> None:
        self._slide.close()


class PILSource:
    """An ordinary image, decoded once (bounded), read like the others."""

    def __init__(self, image: Image.Image) -> None:
        self._image = image.convert("RGB")
        self.width, self.height = self._image.size
        self.native_downsamples = (1.0,)
        self.crs = None
        self.transform = None
        self.description = f"image {self.width} × {self.height}"

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int, max_pixels: int) -> PILSource:
        from ..budgets import BudgetExceeded
        from ..images import open_bounded

        try:
            return cls(open_bounded(data, max_bytes, max_pixels))
        except BudgetExceeded as exc:  # only a size refusal gets the hint; a damaged or unknown file keeps its reason
            if exc.budget != "max_pixels":
                raise
            raise BudgetExceeded(f"{exc} Images this large can only be read in parts from {LAZY_FORMATS}.",
                                 exc.budget) from None

    def read(self, box: Box, size: tuple[int, int]) -> Image.Image:
        return self._image.resize(size, Image.Resampling.BOX, box=box)

    def close(self) -> None:
        self._image.close()


SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


def is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF / BigTIFF


def open_source(path: str | Path | Sequence[Path], max_pixels: int, bands: Sequence[int] | None = None,
                stretch: Stretch | None = None) -> TileSource:
    """The source for a file on disk, by its suffix (slides) or its first bytes (TIFF, DICOM); anything
    else is decoded whole, within ``max_pixels``. Several paths: the levels of a DICOM whole-slide image."""
    from .dicom_wsi import DicomSlideSource, is_dicom

    if not isinstance(path, (str, Path)):
        return DicomSlideSource.from_files([Path(p) for p in path])
    if isinstance(path, str) and path.startswith("/vsi"):  # GDAL's remote files: COGs read by reference
        return RasterSource(path, bands, stretch)
    if isinstance(path, str) and path.startswith("dicomweb+"):  # a DICOM slide in a PACS, read by frames
        from ..sources.dicomweb_slide import open_remote_slide

        return open_remote_slide(path)
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(132)
    if is_dicom(head):
        return DicomSlideSource.from_files([path])
    if path.suffix.lower() in SLIDE_SUFFIXES:
        return SlideSource(path)
    if is_tiff(head):
        return RasterSource(path, bands, stretch)
    return PILSource.from_bytes(path.read_bytes(), path.stat().st_size + 1, max_pixels)
