"""DICOM whole-slide images (VL Whole Slide Microscopy): one instance per resolution level, each a
matrix of tiles stored as frames (a large level may be split over several instances). Levels are the
VOLUME instances, finest first; a region is read by decoding only the frames it overlaps, straight from
the file (pydicom reads one frame by index) or fetched from a PACS (``loupe.core.sources.dicomweb_slide``).

Frames are placed by DimensionOrganizationType: TILED_FULL fills the matrix row by row; otherwise each
frame's Plane Position (Slide) says where it goes. One focal plane and one optical path are read (the
first), as a viewer shows them.

Nothing is sized from the header alone: a level whose file holds fewer frames than its header claims
is refused, one tile must fit the pixel budget, and a region is composed tile by tile straight into the
output size (memory: the output and one decoded tile), after the tiles it decodes are counted against the work
budget.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..budgets import Budgets
from ..errors import InputRejected
from .sources import Box, check_dimensions

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True)
class LevelPart:
    """One instance of a tissue level; a large level may be split over several (a concatenation)."""

    key: str  # where its frames are read from: the file's path, or the instance's UID in a PACS
    width: int
    height: int
    tile_w: int
    tile_h: int
    frames: dict[tuple[int, int], int]  # (tile col, tile row) -> frame index within this instance


@dataclass
class _Level:
    width: int
    height: int
    tile_w: int
    tile_h: int
    frames: dict[tuple[int, int], tuple[str, int]]  # (tile col, tile row) -> (part key, frame index)


# (part key, frame indices) -> those frames as RGB uint8 arrays, in the order asked, decoded one at a time
FrameReader = Callable[[str, Sequence[int]], Iterator[np.ndarray]]


def is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def frames_present(path: Path, ds, pixels_at: int, wanted: int) -> int | None:  # noqa: ANN001 - a Dataset
    """How many frames the pixel data element at offset ``pixels_at`` holds, up to ``wanted``, without
    reading them: items of encapsulated data (a frame has at least one), or whole frames of native data.
    None where it cannot be counted from the file (a deflated or big-endian file, float pixels)."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax in ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"):
        return None
    with path.open("rb") as handle:
        handle.seek(pixels_at)
        head = handle.read(12)
        if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
            return 0 if len(head) < 8 else None
        if syntax == "1.2.840.10008.1.2":  # implicit VR: the length follows the tag
            length = struct.unpack("<I", head[4:8])[0]
            handle.seek(pixels_at + 8)
        else:  # OB / OW: two reserved bytes, then a 4-byte length
            length = struct.unpack("<I", head[8:12])[0]
        if length != 0xFFFFFFFF:  # native: whole frames in the element's length
            frame = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * max(
                1, int(ds.get("BitsAllocated") or 8) // 8)
            return min(wanted, length // max(frame, 1))
        count = -1  # the first item is the Basic Offset Table
        while count < wanted:
            item = handle.read(8)
            if len(item) < 8 or struct.unpack("<HH", item[:4]) != (0xFFFE, 0xE000):  # the delimiter, or damage
                break
            count += 1
            handle.seek(struct.unpack("<I", item[4:])[0], 1)
    return max(count, 0)


def is_tissue(image_type: Sequence[str]) -> bool:
    """LABEL, OVERVIEW and THUMBNAIL images are not tissue levels (a label photographs the patient's name)."""
    kinds = [str(v).upper() for v in image_type]
    return len(kinds) <= 2 or kinds[2] == "VOLUME"


def level_part(key: str, width: int, height: int, tile_w: int, tile_h: int, frames: int, tiled_full: bool,
               offset: int, positions: Sequence[tuple[int, int]], budgets: Budgets) -> LevelPart:
    """A level's part from its header: ``frames`` in this instance, the first of them frame ``offset`` of
    the level (a concatenation's ConcatenationFrameOffsetNumber); TILED_FULL fills the matrix row by row,
    otherwise ``positions`` gives each frame's 1-based (column, row) pixel position (Plane Position)."""
    check_dimensions(width, height)
    if tile_w <= 0 or tile_h <= 0:
        raise InputRejected("A whole-slide DICOM image gives an empty tile size.")
    budgets.check("max_pixels", tile_w * tile_h, f"One tile of the slide ({tile_w:,} × {tile_h:,} pixels)")
    tiles_x, tiles_y = math.ceil(width / tile_w), math.ceil(height / tile_h)
    if tiled_full:
        placed = {((offset + i) % tiles_x, (offset + i) // tiles_x): i
                  for i in range(max(0, min(frames, tiles_x * tiles_y - offset)))}
    else:
        placed = {}
        for i, (col, row) in enumerate(positions[:frames]):
            placed.setdefault(((col - 1) // tile_w, (row - 1) // tile_h), i)
    return LevelPart(key, width, height, tile_w, tile_h, placed)


def _dataset_part(key: str, ds, budgets: Budgets) -> LevelPart:  # noqa: ANN001 - a pydicom Dataset
    try:
        width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
        tile_w, tile_h = int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError):
        raise InputRejected("A whole-slide DICOM file lacks its pixel matrix size.") from None
    positions = []
    for item in ds.get("PerFrameFunctionalGroupsSequence", []):
        plane = item.get("PlanePositionSlideSequence")
        positions.append((int(plane[0].ColumnPositionInTotalImagePixelMatrix),
                          int(plane[0].RowPositionInTotalImagePixelMatrix)) if plane else (-10**9, -10**9))
    return level_part(key, width, height, tile_w, tile_h, int(ds.get("NumberOfFrames") or 1),
                      ds.get("DimensionOrganizationType") == "TILED_FULL",
                      int(ds.get("ConcatenationFrameOffsetNumber") or 0), positions, budgets)


def _read_file_frames(key: str, indices: Sequence[int]) -> Iterator[np.ndarray]:
    from pydicom.pixels import pixel_array

    for index in indices:
        try:
            values = pixel_array(key, index=index)
        except Exception:  # noqa: BLE001 - decoders raise many types
            raise InputRejected("A tile of the slide cannot be decoded: the file is damaged.") from None
        yield as_rgb(values)


def as_rgb(values: np.ndarray) -> np.ndarray:
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=-1)
    return values.astype(np.uint8) if values.dtype != np.uint8 else values


class DicomSlideSource:
    """A slide's tissue levels, finest first, each read frame by frame through ``read_frames``."""

    def __init__(self, parts: Sequence[LevelPart], read_frames: FrameReader, budgets: Budgets | None = None,
                 microns_per_pixel: float | None = None) -> None:
        self.budgets = budgets or Budgets.from_env()
        levels: dict[tuple[int, int], _Level] = {}
        for part in parts:  # the parts of one level share its size; their frames fill one matrix
            level = levels.setdefault((part.width, part.height),
                                      _Level(part.width, part.height, part.tile_w, part.tile_h, {}))
            if (level.tile_w, level.tile_h) != (part.tile_w, part.tile_h):
                raise InputRejected("Two images of one slide level give different tile sizes.")
            for place, index in part.frames.items():
                level.frames.setdefault(place, (part.key, index))
        if not levels:
            raise InputRejected("No whole-slide (VL Whole Slide Microscopy VOLUME) image was found.")
        self._levels = sorted(levels.values(), key=lambda level: -level.width)
        self._read_frames = read_frames
        self.width, self.height = self._levels[0].width, self._levels[0].height
        self.native_downsamples = tuple(self.width / level.width for level in self._levels)
        self.microns_per_pixel = microns_per_pixel
        self.crs = None
        self.transform = None
        count = len(self._levels)
        self.description = f"DICOM whole-slide image, {count} level{'s' if count != 1 else ''}"

    @classmethod
    def from_files(cls, paths: Sequence[Path], budgets: Budgets | None = None) -> DicomSlideSource:
        """The slide whose instances are these files; each file's frames are counted before any is read."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        budgets = budgets or Budgets.from_env()
        parts = []
        for path in paths:
            try:
                with Path(path).open("rb") as handle:
                    ds = pydicom.dcmread(handle, stop_before_pixels=True)
                    pixels_at = handle.tell()  # pydicom stops at the pixel data element's header
            except (InvalidDicomError, OSError, ValueError, EOFError):
                raise InputRejected("A file of the slide is not readable DICOM.") from None
            if ds.get("SOPClassUID") != WSI_SOP_CLASS or not is_tissue(ds.get("ImageType", [])):
                continue
            part = _dataset_part(str(path), ds, budgets)
            claimed = int(ds.get("NumberOfFrames") or 1)
            held = frames_present(Path(path), ds, pixels_at, claimed)
            if held is not None and held < claimed:
                raise InputRejected(f"The slide's header claims {claimed:,} tiles, but its file holds {held:,}: the "
                                    "file is damaged or not what it says.")
            parts.append(part)
        return cls(parts, _read_file_frames, budgets)

    def read(self, box: Box, size: tuple[int, int]) -> Image.Image:
        x0, y0, x1, y1 = box
        wanted = max((x1 - x0) / size[0], (y1 - y0) / size[1])
        index = max(i for i, d in enumerate(self.native_downsamples) if d <= max(1.0, wanted) + 1e-9)
        level, factor = self._levels[index], self.native_downsamples[index]
        lx0, ly0 = int(x0 / factor), int(y0 / factor)
        lx1, ly1 = max(lx0 + 1, math.ceil(x1 / factor)), max(ly0 + 1, math.ceil(y1 / factor))
        self.budgets.check("max_pixels", size[0] * size[1], f"The view of the slide asked for ({size[0]:,} × "
                                                            f"{size[1]:,} pixels)")
        tiles = [(col, row, level.frames[(col, row)])
                 for row in range(ly0 // level.tile_h, (ly1 - 1) // level.tile_h + 1)
                 for col in range(lx0 // level.tile_w, (lx1 - 1) // level.tile_w + 1) if (col, row) in level.frames]
        self.budgets.check("max_work_pixels", len(tiles) * level.tile_w * level.tile_h,
                           "This view of the slide, all the tiles it decodes together,")
        canvas = Image.new("RGB", size, (255, 255, 255))  # no tile: glass, white
        sx, sy = size[0] / (lx1 - lx0), size[1] / (ly1 - ly0)
        by_part: dict[str, list[tuple[int, int, int]]] = {}
        for col, row, (key, index) in tiles:
            by_part.setdefault(key, []).append((col, row, index))
        for key, wanted in by_part.items():  # one read per instance (one request to a PACS)
            for (col, row, _), tile in zip(wanted, self._read_frames(key, [i for _, _, i in wanted]), strict=True):
                self._paste(canvas, tile, col * level.tile_w, row * level.tile_h, (lx0, ly0, lx1, ly1), (sx, sy))
        return canvas

    @staticmethod
    def _paste(canvas: Image.Image, tile: np.ndarray, tx: int, ty: int, area: tuple[int, int, int, int],
               scale: tuple[float, float]) -> None:
        """The part of ``tile`` (placed at tx, ty of its level) inside ``area``, scaled into the canvas."""
        lx0, ly0, lx1, ly1 = area
        ax0, ay0 = max(lx0, tx), max(ly0, ty)
        ax1, ay1 = min(lx1, tx + tile.shape[1]), min(ly1, ty + tile.shape[0])
        dx0, dy0 = round((ax0 - lx0) * scale[0]), round((ay0 - ly0) * scale[1])
        dx1, dy1 = round((ax1 - lx0) * scale[0]), round((ay1 - ly0) * scale[1])
        if ax0 >= ax1 or ay0 >= ay1 or dx0 >= dx1 or dy0 >= dy1:
            return
        part = Image.fromarray(np.ascontiguousarray(tile[ay0 - ty:ay1 - ty, ax0 - tx:ax1 - tx]))
        if part.size != (dx1 - dx0, dy1 - dy0):
            part = part.resize((dx1 - dx0, dy1 - dy0), Image.Resampling.BOX)
        canvas.paste(part, (dx0, dy0))

    def close(self) -> None:
        pass
