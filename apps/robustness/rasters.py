"""Specimens for raster inputs (see loupe.apps.robustness): GeoTIFF / COG scenes for ``remote_sensing``, plain
images for ``general``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from . import Specimen
from .documents import grey_tiff


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width × height 1-bit pixels, with a few rows of data: a few hundred bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * 4)) + chunk(b"IEND", b""))


def tiff_header(width: int, height: int) -> bytes:
    """A one-page 8-bit grey TIFF header claiming width × height, whose single strip is absent."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
            (277, 3, 1), (278, 4, height), (279, 4, min(width * height, 2**32 - 1))]
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                   else struct.pack("<I", value))
    return out + b"\x00\x00\x00\x00"


def _geotiff(path: Path, side: int, *, sparse: bool = False, fill: int = 120) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1 if sparse else 3, "dtype": "uint8",
               "crs": "EPSG:32618", "transform": from_origin(500_000, 2_700_000, 0.5, 0.5), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "sparse_ok": sparse,
               "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as ds:
        if not sparse:  # sparse: no block written, the header alone claims the size
            ds.write(np.full((3, side, side), fill, dtype=np.uint8))
    return path


def _sparse_geotiff(folder: Path) -> Path:
    return _geotiff(folder / "geotiff_sparse_120k.tif", 120_000, sparse=True)


def _small_geotiff(folder: Path) -> Path:
    return _geotiff(folder / "geotiff_small.tif", 256)


def _cog_with_overviews(folder: Path) -> Path:
    from loupe.core.pyramid.synthetic import random_objects, write_cog

    return write_cog(folder / "cog_with_overviews.tif", 2048, random_objects(2048, 2, 96, seed=5), seed=5)


def _netcdf4(folder: Path) -> Path:
    """A valid netCDF-4 file (HDF5 inside, as GDAL writes it): a format Loupe does not read."""
    import numpy as np
    import rasterio
    from rasterio.shutil import copy as gdal_copy
    from rasterio.transform import from_origin

    grid, path = folder / "grid.tif", folder / "grid_netcdf4.nc"
    profile = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "float32",
               "crs": "EPSG:4326", "transform": from_origin(10, 50, 0.1, 0.1)}
    with rasterio.open(grid, "w", **profile) as ds:
        ds.write(np.arange(256, dtype=np.float32).reshape(1, 16, 16))
    gdal_copy(grid, path, driver="netCDF", FORMAT="NC4")  # the netCDF driver only creates by copying
    grid.unlink()
    return path


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _small_png(folder: Path) -> Path:
    from PIL import Image

    path = folder / "photo_small.png"
    Image.new("RGB", (64, 48), (30, 120, 200)).save(path)
    return path


SPECIMENS: list[Specimen] = [
    Specimen("geotiff_sparse_120k", "remote_sensing", _sparse_geotiff, "refused", "max_work_pixels",
             about="a ~440 KB sparse GeoTIFF claiming 120,000² pixels without overviews (14.4 GP of work)"),
    Specimen("geotiff_side_2m", "remote_sensing",
             lambda f: _write(f, "geotiff_side_2m.tif", tiff_header(2_000_000, 10)), "refused",
             about="a header claiming two million columns: over the largest side any raster has"),
    Specimen("netcdf4_grid", "remote_sensing", _netcdf4, "refused",
             about="a valid netCDF-4 (HDF5) grid: not a format Loupe reads; the message says what to convert to"),
    Specimen("png_tiny_broken", "remote_sensing", lambda f: _write(f, "png_tiny_broken.png", png_header(4, 4)[:40]),
             "refused", about="a truncated 4 × 4 PNG: damaged, and not called too large"),
    Specimen("geotiff_small", "remote_sensing", _small_geotiff, "accepted", about="an everyday 256² GeoTIFF"),
    Specimen("cog_with_overviews", "remote_sensing", _cog_with_overviews, "accepted",
             about="a 2,048² COG with internal overviews"),
    Specimen("png_header_40k", "general", lambda f: _write(f, "png_header_40k.png", png_header(40_000, 40_000)),
             "refused", "max_pixels", about="a PNG header claiming 40,000² pixels"),
    Specimen("tiff_header_100k", "general", lambda f: _write(f, "tiff_header_100k.tif", tiff_header(100_000, 100_000)),
             "refused", "max_pixels", about="a TIFF header claiming 100,000² pixels"),
    Specimen("tiff_huge_page_2_general", "general",
             lambda f: _write(f, "tiff_huge_page_2_general.tif", grey_tiff([(640, 480), (12_000, 12_000)])),
             "refused", "max_pixels", about="a two-page TIFF whose page 2 is 144 MP"),
    Specimen("photo_small", "general", _small_png, "accepted", about="an everyday small photo (PNG)"),
]
