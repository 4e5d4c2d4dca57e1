"""DICOM whole-slide images (VL Whole Slide Microscopy): one instance per resolution level, each a
matrix of tiles stored as frames. Levels are the VOLUME instances, finest first; a region is read by
decoding only the frames it overlaps, straight from the file (pydicom reads one frame by index).

Frames are placed by DimensionOrganizationType: TILED_FULL fills the matrix row by row; otherwise each
frame's Plane Position (Slide) says where it goes. One focal plane and one optical path are read (the
first), as a viewer shows them.

Nothing is sized from the header alone: a level whose file holds fewer frames than its header claims
is refused, one tile must fit the pixel budget, and a region is composed tile by tile straight into the
output size (memory: the output and one tile), after the tiles it decodes are counted against the work
budget.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..budgets import Budgets
from ..errors import InputRejected
from .sources import Box, check_dimensions

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass
class _Level:
    path: Path
    width: int
    height: int
    tile_w: int
    tile_h: int
    frames: dict[tuple[int, int], int]  # (tile col, tile row) -> frame index


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


def _frame_positions(ds, tiles_x: int, tiles_y: int) -> dict[tuple[int, int], int]:  # noqa: ANN001
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.get("DimensionOrganizationType") == "TILED_FULL":
        return {(i % tiles_x, i // tiles_x): i for i in range(min(count, tiles_x * tiles_y))}
    positions = {}
    for i, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        plane = item.get("PlanePositionSlideSequence")
        if not plane:
            continue
        col = int(plane[0].ColumnPositionInTotalImagePixelMatrix) - 1  # 1-based pixel positions
        row = int(plane[0].RowPositionInTotalImagePixelMatrix) - 1
        positions.setdefault((col // int(ds.Columns), row // int(ds.Rows)), i)
    return positions


class DicomSlideSource:
    def __init__(self, paths: Sequence[Path], budgets: Budgets | None = None) -> None:
        import pydicom
        from pydicom.errors import InvalidDicomError

        self.budgets = budgets or Budgets.from_env()
        levels = []
        for path in paths:
            try:
                with Path(path).open("rb") as handle:
                    ds = pydicom.dcmread(handle, stop_before_pixels=True)
                    pixels_at = handle.tell()  # pydicom stops at the pixel data element's header
            except (InvalidDicomError, OSError, ValueError, EOFError):
                raise InputRejected("A file of the slide is not readable DICOM.") from None
            if ds.get("SOPClassUID") != WSI_SOP_CLASS:
                continue
            kinds = [str(v).upper() for v in ds.get("ImageType", [])]
            if len(kinds) > 2 and kinds[2] not in ("VOLUME",):  # LABEL, OVERVIEW, THUMBNAIL: not tissue levels
                continue
            try:
                width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
                tile_w, tile_h = int(ds.Columns), int(ds.Rows)
            except (AttributeError, TypeError, ValueError):
                raise InputRejected("A whole-slide DICOM file lacks its pixel matrix size.") from None
            check_dimensions(width, height)
            if tile_w <= 0 or tile_h <= 0:
                raise InputRejected("A whole-slide DICOM file gives an empty tile size.")
            self.budgets.check("max_pixels", tile_w * tile_h, f"One tile of the slide ({tile_w:,} × {tile_h:,} pixels)")
            claimed = int(ds.get("NumberOfFrames") or 1)
            held = frames_present(Path(path), ds, pixels_at, claimed)
            if held is not None and held < claimed:
                raise InputRejected(f"The slide's header claims {claimed:,} tiles, but its file holds {held:,}: the "
                                    "file is damaged or not what it says.")
            tiles_x, tiles_y = math.ceil(width / tile_w), math.ceil(height / tile_h)
            levels.append(_Level(Path(path), width, height, tile_w, tile_h, _frame_positions(ds, tiles_x, tiles_y)))
        if not levels:
            raise InputRejected("No whole-slide (VL Whole Slide Microscopy VOLUME) image was found.")
        levels.sort(key=lambda level: -level.width)
        self._levels = levels
        self.width, self.height = levels[0].width, levels[0].height
        self.native_downsamples = tuple(self.width / level.width for level in levels)
        self.crs = None
        self.transform = None
        self.description = f"DICOM whole-slide image, {len(levels)} level{'s' if len(levels) != 1 else ''}"

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
        for col, row, frame in tiles:  # each tile scaled straight into its place: no level-sized canvas
            tile = self._frame(level, frame)
            tx, ty = col * level.tile_w, row * level.tile_h
            ax0, ay0 = max(lx0, tx), max(ly0, ty)
            ax1, ay1 = min(lx1, tx + tile.shape[1]), min(ly1, ty + tile.shape[0])
            dx0, dy0, dx1, dy1 = (round((ax0 - lx0) * sx), round((ay0 - ly0) * sy), round((ax1 - lx0) * sx),
                                  round((ay1 - ly0) * sy))
            if ax0 >= ax1 or ay0 >= ay1 or dx0 >= dx1 or dy0 >= dy1:
                continue
            part = Image.fromarray(np.ascontiguousarray(tile[ay0 - ty:ay1 - ty, ax0 - tx:ax1 - tx]))
            if part.size != (dx1 - dx0, dy1 - dy0):
                part = part.resize((dx1 - dx0, dy1 - dy0), Image.Resampling.BOX)
            canvas.paste(part, (dx0, dy0))
        return canvas

    @staticmethod
    def _frame(level: _Level, index: int) -> np.ndarray:
        from pydicom.pixels import pixel_array

        try:
            values = pixel_array(str(level.path), index=index)
        except Exception:  # noqa: BLE001 - decoders raise many types
            raise InputRejected("A tile of the slide cannot be decoded: the file is damaged.") from None
        if values.ndim == 2:
            values = np.repeat(values[..., None], 3, axis=-1)
        return values.astype(np.uint8) if values.dtype != np.uint8 else values

    def close(self) -> None:
        pass
