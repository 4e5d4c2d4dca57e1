"""A factor-2 tile pyramid over a TileSource, read lazily.

Level 0 is full resolution; level ``l`` is the image shrunk by ``2**l``; the top (``base``) level is the
first whose longer side fits ``base_side`` (two tiles: 1,024 px for 512-px tiles). Each level is cut
into ``tile`` × ``tile`` squares from its top-left corner. Overhang policy: an edge tile is read for the
part inside the image and padded to a full square with black on the right and bottom, so every tile has
the same token grid and a tile's four children on the next finer level are exactly its four quadrants
(children that would lie wholly in the padding do not exist). Tiles are addressed by (level, col, row)
and mapped to level-0 boxes here, once: sources only ever see level-0 coordinates.

Nothing reads the whole image: a tile costs one windowed read from the source's nearest overview, and
an LRU keeps the most recent tiles (bounded in bytes).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from .sources import Box, TileSource

DEFAULT_TILE = 512
BASE_TILES = 2  # the base level fits in 2 × 2 tiles: 1,024 px for 512-px tiles, as the paper's ~1,000 px
BASE_SIDE = DEFAULT_TILE * BASE_TILES
TILE_CACHE_BYTES = 96 * 2**20


@dataclass(frozen=True, order=True)
class Tile:
    level: int
    col: int
    row: int

    def children(self) -> tuple[Tile, ...]:
        if self.level == 0:
            return ()
        return tuple(Tile(self.level - 1, 2 * self.col + dx, 2 * self.row + dy) for dy in (0, 1) for dx in (0, 1))

    def parent(self) -> Tile:
        return Tile(self.level + 1, self.col // 2, self.row // 2)


class Pyramid:
    def __init__(self, source: TileSource, tile: int = DEFAULT_TILE, base_side: int | None = None,
                 cache_bytes: int = TILE_CACHE_BYTES) -> None:
        if tile < 16:
            raise ValueError("tiles smaller than 16 px carry no detail")
        self.source = source
        self.tile = tile
        base_side = base_side or tile * BASE_TILES
        longest = max(source.width, source.height)
        self.base_level = max(0, math.ceil(math.log2(longest / base_side))) if longest > base_side else 0
        self._cache: OrderedDict[Tile, Image.Image] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._held = 0
        self._lock = threading.Lock()
        self.reads = 0  # tiles read from the source (cache misses), for tests and benchmarks

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return self.base_level + 1

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2**level
        return math.ceil(self.source.width / scale), math.ceil(self.source.height / scale)

    def grid(self, level: int) -> tuple[int, int]:
        """Columns and rows of tiles on ``level``."""
        width, height = self.level_size(level)
        return math.ceil(width / self.tile), math.ceil(height / self.tile)

    def tiles(self, level: int) -> list[Tile]:
        cols, rows = self.grid(level)
        return [Tile(level, c, r) for r in range(rows) for c in range(cols)]

    def exists(self, tile: Tile) -> bool:
        cols, rows = self.grid(tile.level)
        return 0 <= tile.level < self.levels and 0 <= tile.col < cols and 0 <= tile.row < rows

    def box(self, tile: Tile) -> Box:
        """The tile's level-0 box, clipped to the image (the padded overhang is not part of it)."""
        span = self.tile * 2**tile.level
        x0, y0 = tile.col * span, tile.row * span
        return x0, y0, min(self.source.width, x0 + span), min(self.source.height, y0 + span)

    def tile_count(self) -> int:
        return sum(math.prod(self.grid(level)) for level in range(self.levels))

    # -- pixels -----------------------------------------------------------------------------------
    def read(self, tile: Tile) -> Image.Image:
        """The tile as a ``tile`` × ``tile`` RGB image (edge tiles padded black)."""
        if not self.exists(tile):
            raise IndexError(f"{tile} is outside the pyramid")
        with self._lock:
            cached = self._cache.get(tile)
            if cached is not None:
                self._cache.move_to_end(tile)
                return cached
        x0, y0, x1, y1 = self.box(tile)
        scale = 2**tile.level
        size = (max(1, math.ceil((x1 - x0) / scale)), max(1, math.ceil((y1 - y0) / scale)))
        region = self.source.read((x0, y0, x1, y1), size)
        if region.size != (self.tile, self.tile):
            padded = Image.new("RGB", (self.tile, self.tile))
            padded.paste(region, (0, 0))
            region = padded
        with self._lock:
            self.reads += 1
            self._cache[tile] = region
            self._held += self.tile * self.tile * 3
            while self._held > self._cache_bytes and len(self._cache) > 1:
                self._cache.popitem(last=False)
                self._held -= self.tile * self.tile * 3
        return region

    def thumbnail(self, side: int | None = None) -> Image.Image:
        """The whole image with its longer side ``side`` (default: one tile), aspect kept."""
        side = side or self.tile
        width, height = self.source.width, self.source.height
        scale = side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return self.source.read((0, 0, width, height), size)

    def region(self, box: Box, longest: int) -> Image.Image:
        """Any level-0 box at most ``longest`` px on its longer side (for viewers)."""
        x0, y0, x1, y1 = box
        scale = min(1.0, longest / max(x1 - x0, y1 - y0))
        return self.source.read(box, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))))
