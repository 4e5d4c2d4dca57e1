"""Whole-slide images (pathology) into the medical domain, de-identified before storage.

- DICOM (VL Whole Slide Microscopy): each tissue level (VOLUME) instance goes through the same PS3.15
  de-identification as any DICOM upload, its compressed tiles untouched; LABEL and OVERVIEW images,
  which photograph the slide's paper label, are not kept.
- Vendor formats OpenSlide reads (SVS, NDPI, SCN, tiled TIFF...): their headers, label and macro
  images carry names and dates, so the file itself is never kept. The tissue is re-written, tile by
  tile, into a plain pyramidal TIFF (full resolution plus factor-2 reduced levels, deflate-compressed)
  with no metadata but the pixel size.

Either way the stored slide is a lazy asset read through ``loupe.core.pyramid``: questions are answered
from the thumbnail plus the tiles the model's attention points to. The work is checked before it is
done: the tiles a DICOM overview decodes, and every pixel a vendor slide's re-writing would decode.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from loupe.core.errors import InputRejected
from loupe.core.images import pixels_only_png
from loupe.core.ingest_io import file_asset, head, local_file, staged_path
from loupe.core.plugins import Budgets, IngestedAsset
from loupe.core.pyramid.dicom_wsi import WSI_SOP_CLASS, DicomSlideSource, is_tissue
from loupe.core.pyramid.pyramid import BASE_SIDE
from loupe.core.pyramid.sources import SlideSource, TileSource, is_tiff

from .deid.batch import encode
from .deid.deidentify import Deidentifier, DeidOptions

TILE = 512
VIEW_SIDE = 1024
Progress = Callable[[int, int], None]


def is_slide_dataset(ds: Dataset) -> bool:
    return ds.get("SOPClassUID") == WSI_SOP_CLASS


def _view_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, VIEW_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _view_asset(image: Image.Image, meta: dict) -> IngestedAsset:
    return IngestedAsset(pixels_only_png(image), "image/png", image.width, image.height,
                         {"kind": "view", "slide": True, "series_position": 0, "frame": 0, "frames": 1, "slices": 1,
                          **meta})


def ingest_dicom_slide(datasets: Sequence[Dataset], secret: bytes,
                       limits: Budgets | None = None) -> list[IngestedAsset]:
    levels = [ds for ds in datasets if is_slide_dataset(ds) and is_tissue(ds.get("ImageType", []))]
    if not levels:
        raise InputRejected("The slide has no tissue (VOLUME) image: only label or overview pictures.")
    deidentify = Deidentifier(DeidOptions(secret))
    stored = [encode(deidentify(ds, in_place=True)[0]) for ds in levels]
    with tempfile.TemporaryDirectory(prefix="loupe-slide-") as folder:
        paths = []
        for n, data in enumerate(stored):
            path = Path(folder) / f"level{n}.dcm"
            path.write_bytes(data)
            paths.append(path)
        # tiles against the data present, tile and view budgets
        source = DicomSlideSource.from_files(paths, limits)
        meta = {"Modality": "SM", "width": source.width, "height": source.height,
                "description": source.description, "levels": len(paths)}
        view = _view_asset(source.read((0, 0, source.width, source.height), _view_size(source.width, source.height)),
                           meta)
    assets = [IngestedAsset(data, "application/dicom", None, None,
                            {"kind": "slide_level", "lazy": True, "level_of": len(stored), **meta}) for data in stored]
    return [*assets, view]


def _reduced_sizes(width: int, height: int) -> list[tuple[int, int]]:
    sizes, factor = [], 2
    while max(width, height) / (factor // 2) > BASE_SIDE:
        sizes.append((math.ceil(width / factor), math.ceil(height / factor)))
        factor *= 2
    return sizes


def _tiles(source: TileSource, width: int, height: int, factor: float) -> Iterator[np.ndarray]:
    """Row by row, the level ``factor`` times smaller than level 0, as TILE × TILE arrays."""
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            w, h = min(TILE, width - x), min(TILE, height - y)
            box = (int(x * factor), int(y * factor), min(source.width, math.ceil((x + w) * factor)),
                   min(source.height, math.ceil((y + h) * factor)))
            tile = np.zeros((TILE, TILE, 3), dtype=np.uint8)
            tile[:h, :w] = np.asarray(source.read(box, (w, h)))
            yield tile


def rewrite_cost(source: TileSource, levels: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(pixels the re-writing decodes in all, the largest region read at once). Each written level is
    read from the finest native level at or below its scale, one TILE at a time: a slide without reduced
    levels of its own is read whole once per written level, in regions as large as the reduction."""
    work, largest = 0, 0
    for width, height in levels:
        factor = source.width / width
        native = max((d for d in source.native_downsamples if d <= factor + 1e-9), default=1.0)
        work += math.ceil(width * height * (factor / native) ** 2)
        largest = max(largest, math.ceil(TILE * factor / native) ** 2)
    return work, largest


def ingest_vendor_slide(upload: Path | BinaryIO, limits: Budgets,
                        progress: Progress | None = None) -> list[IngestedAsset] | None:
    """The slide re-written without labels or metadata, read tile by tile from the upload's file (a stream
    is spooled to disk first) and written to a file the store moves into place: memory stays bounded
    whatever the slide's size (within ``max_stream_bytes``). None when the upload is no slide OpenSlide
    knows by its vendor (a plain TIFF is not one). The work is checked from the levels' sizes before any
    tile is read or written."""
    if not is_tiff(head(upload, 4)):
        return None
    import openslide
    import tifffile

    with local_file(upload, limits, ".svs") as original:
        if openslide.OpenSlide.detect_format(str(original)) in (None, "generic-tiff"):
            return None
        clean = staged_path(".tif")
        try:
            source = SlideSource(original)  # reads only the tissue levels; label and macro are never opened
            try:
                mpp = source.microns_per_pixel
                levels = [(source.width, source.height), *_reduced_sizes(source.width, source.height)]
                work, largest = rewrite_cost(source, levels)
                limits.check("max_work_pixels", work, f"Re-writing the slide ({source.width:,} × "
                                                      f"{source.height:,} pixels) without its labels, all levels "
                                                      "together,")
                limits.check("max_pixels", largest, "The largest region read at once to re-write the slide")
                total = sum(math.ceil(w / TILE) * math.ceil(h / TILE) for w, h in levels)
                done = 0

                def counted(tiles: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                    nonlocal done
                    for tile in tiles:  # counted before it is handed over: the writer stops after the last
                        done += 1
                        if progress is not None:
                            progress(done, total)
                        yield tile

                with tifffile.TiffWriter(clean, bigtiff=source.width * source.height * 3 > 2**31) as tif:
                    for n, (width, height) in enumerate(levels):
                        tif.write(counted(_tiles(source, width, height, source.width / width)),
                                  shape=(height, width, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                                  compression="zlib", subfiletype=1 if n else 0, metadata=None, software=False)
                meta = {"Modality": "SM", "width": source.width, "height": source.height, "levels": len(levels),
                        "description": f"whole-slide image, {len(levels)} levels", "microns_per_pixel": mpp}
            finally:
                source.close()
            view = _view_asset(_smallest_level(clean, _view_size(*levels[0])), meta)
            level = file_asset(clean, "image/tiff", levels[0][0], levels[0][1],
                               {"kind": "slide_level", "lazy": True, "level_of": 1, **meta})
        except BaseException:
            clean.unlink(missing_ok=True)
            raise
    return [level, view]


MAX_VIEW_READ_SIDE = 4 * VIEW_SIDE  # the largest level read (by reference) to make the view picture


def open_slide_item(path: str, limits: Budgets) -> list[IngestedAsset]:
    """A vendor slide in a data source's folder, opened where it lives: its levels' sizes are read and its
    smallest tissue level for the view picture; its tiles are read when a question needs them. Its label
    and macro pictures are never opened and its vendor header is not kept (only sizes and microns per
    pixel)."""
    import openslide

    if openslide.OpenSlide.detect_format(path) in (None, "generic-tiff"):
        raise InputRejected("This file is not a whole slide OpenSlide reads (SVS, NDPI, MRXS, SCN...).")
    source = SlideSource(path)  # the tissue levels only
    try:
        return _by_reference(source, limits, "image/tiff", "whole-slide image")
    finally:
        source.close()


def open_pacs_slide(location: str, metadata: list[dict], limits: Budgets) -> list[IngestedAsset]:
    """A DICOM whole slide in a PACS, opened where it lives: its metadata gives the levels, the view picture
    is made from the frames of its smallest level; other frames are fetched when a question needs them. No
    header is kept (only sizes and microns per pixel); label and overview images are never fetched."""
    from loupe.core.sources.dicomweb_slide import open_remote_slide

    return _by_reference(open_remote_slide(location, limits, metadata), limits, "application/dicom",
                         "DICOM whole-slide image")


def _by_reference(source: TileSource, limits: Budgets, media_type: str, what: str) -> list[IngestedAsset]:
    """The assets of a slide read by reference: its description (no bytes) and its view picture, read from
    its smallest level. One without a level small enough for the view is refused: it would be read whole."""
    if max(source.width, source.height) / max(source.native_downsamples) > MAX_VIEW_READ_SIDE:
        raise InputRejected(f"This {source.width:,} × {source.height:,} px slide has no level small enough to "
                            "show it without reading it whole; upload it instead (it is then re-written with "
                            "its levels).")
    size = _view_size(source.width, source.height)
    limits.check("max_pixels", size[0] * size[1], "The slide's view picture")
    image = source.read((0, 0, source.width, source.height), size)
    levels = len(source.native_downsamples)
    meta = {"Modality": "SM", "width": source.width, "height": source.height, "levels": levels,
            "microns_per_pixel": source.microns_per_pixel, "description": f"{what}, {levels} levels"}
    return [IngestedAsset(b"", media_type, meta["width"], meta["height"],
                          {"kind": "slide_level", "by_reference": True, "level_of": 1, **meta}),
            _view_asset(image.convert("RGB"), meta)]


def _smallest_level(path: Path, size: tuple[int, int]) -> Image.Image:
    """The overview from the re-written slide's smallest level (at most BASE_SIDE across), not from level 0."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        image = Image.fromarray(tif.pages[-1].asarray())
    return image.resize(size, Image.Resampling.BOX) if image.size != size else image
