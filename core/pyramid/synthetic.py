"""A large synthetic Cloud-Optimized GeoTIFF with objects planted at known places (tests, benchmarks).

Written block by block (memory stays at a few blocks whatever the size), then given internal
overviews and copied into COG layout by GDAL. The ground is a smooth, seeded field of greens and
browns; each planted object is a bright square with a dark border, so it stands out at full
resolution and disappears in the overviews once it is smaller than a pixel or two.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FULL_SIDE = 27_328  # the benchmark's size: 53.4 tiles of 512 px, so edge tiles overhang
BLOCK = 512
CRS = "EPSG:32618"  # UTM 18N, as the rasterio sample scene
ORIGIN = (500_000.0, 2_700_000.0)  # metres: west edge, north edge
PIXEL_M = 0.5


@dataclass(frozen=True)
class Planted:
    name: str
    box: tuple[int, int, int, int]  # level-0 pixels, half-open
    colour: tuple[int, int, int]


def random_objects(side: int, count: int, size: int, seed: int) -> list[Planted]:
    rng = random.Random(seed)
    colours = [(230, 40, 40), (250, 250, 250), (40, 90, 230), (250, 200, 0)]
    out = []
    for i in range(count):
        x, y = rng.randrange(0, side - size), rng.randrange(0, side - size)
        out.append(Planted(f"object-{i}", (x, y, x + size, y + size), colours[i % len(colours)]))
    return out


def _ground(x0: int, y0: int, width: int, height: int, seed: int) -> np.ndarray:
    """[3, h, w] uint8: a smooth field, continuous across blocks (a function of absolute position)."""
    ys, xs = np.mgrid[y0:y0 + height, x0:x0 + width].astype(np.float32)
    phase = (seed % 97) * 0.37
    wave = (np.sin(xs / 1733.0 + phase) + np.sin(ys / 2411.0 - phase) + np.sin((xs + ys) / 977.0)) / 3
    fine = np.sin(xs / 37.0) * np.sin(ys / 41.0) * 0.15
    field = (wave + fine + 1) / 2  # 0..1
    red = 70 + 60 * field
    green = 90 + 70 * (1 - field)
    blue = 50 + 30 * field
    return np.stack([red, green, blue]).astype(np.uint8)


def _paint(block: np.ndarray, x0: int, y0: int, objects: Sequence[Planted]) -> None:
    height, width = block.shape[1:]
    for obj in objects:
        bx0, by0, bx1, by1 = obj.box
        ix0, iy0, ix1, iy1 = max(bx0, x0), max(by0, y0), min(bx1, x0 + width), min(by1, y0 + height)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        block[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = 20  # dark border ...
        border = max(1, (bx1 - bx0) // 8)
        jx0, jy0, jx1, jy1 = max(bx0 + border, x0), max(by0 + border, y0), min(bx1 - border, x0 + width), \
            min(by1 - border, y0 + height)
        if jx0 < jx1 and jy0 < jy1:  # ... around a bright face
            block[:, jy0 - y0:jy1 - y0, jx0 - x0:jx1 - x0] = np.asarray(obj.colour, dtype=np.uint8)[:, None, None]


def write_cog(path: str | Path, side: int = FULL_SIDE, objects: Sequence[Planted] = (), seed: int = 0,
              progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a ``side`` × ``side`` 3-band uint8 COG (JPEG tiles, overviews down to one tile) and a
    ``.objects.json`` beside it listing the planted objects."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as gdal_copy
    from rasterio.transform import from_origin

    path = Path(path)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": from_origin(*ORIGIN, PIXEL_M, PIXEL_M), "tiled": True, "blockxsize": BLOCK,
               "blockysize": BLOCK, "compress": "deflate", "photometric": "RGB", "BIGTIFF": "IF_SAFER"}
    blocks = [(x, y) for y in range(0, side, BLOCK) for x in range(0, side, BLOCK)]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staging = Path(tmp) / "staging.tif"
        with rasterio.open(staging, "w", **profile) as ds:
            for done, (x, y) in enumerate(blocks, start=1):
                width, height = min(BLOCK, side - x), min(BLOCK, side - y)
                block = _ground(x, y, width, height, seed)
                _paint(block, x, y, objects)
                ds.write(block, window=rasterio.windows.Window(x, y, width, height))
                if progress is not None:
                    progress(done, len(blocks))
            factors, size = [], side
            while size > BLOCK:
                size //= 2
                factors.append(2 ** len(factors) * 2)
            ds.build_overviews(factors, Resampling.average)
        gdal_copy(staging, path, driver="COG", COMPRESS="JPEG", QUALITY=90, BLOCKSIZE=BLOCK,
                  OVERVIEWS="FORCE_USE_EXISTING")
    path.with_suffix(".objects.json").write_text(json.dumps([asdict(o) for o in objects]))
    return path


def write_svs(path: str | Path, side: int, seed: int = 0, tile: int = BLOCK,
              progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a ``side`` × ``side`` Aperio-style slide (what OpenSlide opens as a vendor slide): tiled RGB levels
    down by 4 until one is under 2 tiles across, deflate tiles, the Aperio description OpenSlide detects, no
    label or macro. Its tiles cycle through a few smooth stained-tissue textures, so even 50,000² (2.5 Gpx)
    is written in a minute and stays a few hundred MB: for measuring how much memory opening one takes."""
    import tifffile

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:tile, 0:tile].astype(np.float32) / tile
    textures = []
    for _ in range(6):
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6.3)
        wave = (np.sin(2 * np.pi * (fx * x + fy * y) + phase) + 1) / 2  # 0..1, smooth: deflates well
        pink = np.array([236, 170, 205], np.float32) - wave[..., None] * np.array([60, 110, 50], np.float32)
        textures.append(pink.astype(np.uint8))
    sides = [side]
    while sides[-1] > 2 * tile:
        sides.append(sides[-1] // 4)
    counts = [math.ceil(s / tile) ** 2 for s in sides]
    total, done = sum(counts), 0
    head = f"Aperio Image Library Loupe synthetic\r\n{side}x{side} [0,0 {side}x{side}] ({tile}x{tile})"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level, (width, count) in enumerate(zip(sides, counts, strict=True)):
            def tiles(count: int = count):  # noqa: ANN202
                nonlocal done
                for n in range(count):
                    done += 1
                    if progress is not None and done % 256 == 0:
                        progress(done, total)
                    yield textures[(n * 7 + n // 13) % len(textures)]

            description = f"{head} RAW|AppMag = 20|MPP = 0.5" if level == 0 else f"{head} -> {width}x{width}"
            tif.write(tiles(), shape=(width, width, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                      compression="zlib", description=description, metadata=None)
    return Path(path)
