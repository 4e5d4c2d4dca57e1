"""Coarse-to-fine, question-guided tile selection (Dynamic Image Pyramid + Region Focus, after LRS-VQA).

Start with every tile of the base level (the whole image at about 1,000 px). A scorer gives each tile
a grid of relevance values (one per visual token). Each round keeps the top ``keep_share`` of the
tokens across the round's tiles, lets every kept token vote (with its score) for the child tile under
it on the next finer level — a token in the top-left quadrant of its tile votes for the top-left child
— and encodes only the best-voted children: as many as cover ``mass`` of the votes, at most
``per_level`` of them and never beyond the ``budget`` of tiles scored in all. A child descends further
only while its relevance is concentrated (its hottest token at least ``concentrated`` times its own
mean): what is looked for is then smaller than the tile, and a finer level shows more of it. A child
whose relevance is spread over the whole tile has nothing finer to show, and is kept as it is. The
search stops at full resolution, when the budget is spent, or when no child is concentrated.

A tile's score is that concentration, a ratio within one tile: attention is normalised per forward
pass, so raw values of different rounds are never compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from .pyramid import Pyramid, Tile
from .sources import Box


@dataclass(frozen=True)
class TileView:
    tile: Tile
    box: Box  # level 0, clipped to the image
    image: Image.Image


class Scorer(Protocol):
    def score(self, question: str, thumbnail: Image.Image, tiles: Sequence[TileView]) -> list[np.ndarray]:
        """One 2-D array of non-negative relevance per tile (rows × cols of its visual tokens, in raster
        order over the tile image), comparable within this call."""
        ...


@dataclass(frozen=True)
class FocusConfig:
    keep_share: float = 0.25  # tokens kept per round (the paper's default)
    mass: float = 0.8  # share of the votes the chosen children must cover
    per_level: int = 6  # children encoded per round at most (the paper caps 40-80 per level at 7B scale)
    budget: int = 34  # tiles scored in all, base level included
    answer_tiles: int = 6  # tiles shown to the model with the thumbnail when answering
    concentrated: float = 2.0  # peak / mean within a tile above which it is worth a finer look


@dataclass
class Chosen:
    tile: Tile
    box: Box
    score: float  # how concentrated its relevance is (peak / mean token relevance within the tile)


@dataclass
class Step:
    level: int
    scored: list[tuple[Tile, float]]  # tiles scored this round, with their standing
    descended: list[Tile]  # those whose children were looked at next


@dataclass
class Selection:
    tiles: list[Chosen]  # finest tiles found, best first: what the model sees beside the thumbnail
    steps: list[Step] = field(default_factory=list)
    tiles_scored: int = 0
    scored: list[Tile] = field(default_factory=list)  # every tile looked at, in order

    def as_dict(self) -> dict:
        return {"tiles": [{"level": c.tile.level, "col": c.tile.col, "row": c.tile.row, "box": list(c.box),
                           "score": round(c.score, 3)} for c in self.tiles],
                "tiles_scored": self.tiles_scored,
                "scored": [[t.level, t.col, t.row] for t in self.scored],
                "steps": [{"level": s.level, "scored": len(s.scored), "descended": len(s.descended)}
                          for s in self.steps]}


def _standing(maps: Sequence[np.ndarray]) -> list[float]:
    """Each tile's hottest token against its own mean token."""
    return [float(m.max()) / (float(m.mean()) or 1e-12) for m in maps]


def _votes(round_tiles: Sequence[Tile], maps: Sequence[np.ndarray], keep_share: float,
           pyramid: Pyramid) -> dict[Tile, float]:
    values = np.concatenate([m.ravel() for m in maps])
    keep = max(1, int(round(len(values) * keep_share)))
    threshold = np.partition(values, len(values) - keep)[len(values) - keep]
    votes: dict[Tile, float] = {}
    for tile, grid in zip(round_tiles, maps, strict=True):
        rows, cols = grid.shape
        for r, c in zip(*np.nonzero(grid >= threshold), strict=True):
            child = Tile(tile.level - 1, 2 * tile.col + int(2 * c) // cols, 2 * tile.row + int(2 * r) // rows)
            if pyramid.exists(child):
                votes[child] = votes.get(child, 0.0) + float(grid[r, c])
    return votes


def _pick(votes: dict[Tile, float], mass: float, limit: int) -> list[Tile]:
    ranked = sorted(votes, key=lambda t: (-votes[t], t))
    total = sum(votes.values()) or 1.0
    chosen, covered = [], 0.0
    for tile in ranked[:max(0, limit)]:
        chosen.append(tile)
        covered += votes[tile]
        if covered >= mass * total:
            break
    return chosen


def focus(pyramid: Pyramid, question: str, scorer: Scorer, config: FocusConfig = FocusConfig(),
          thumbnail: Image.Image | None = None) -> Selection:
    thumbnail = thumbnail or pyramid.thumbnail()

    looked_at: list[Tile] = []

    def score(tiles: list[Tile]) -> tuple[list[np.ndarray], list[float]]:
        looked_at.extend(tiles)
        views = [TileView(t, pyramid.box(t), pyramid.read(t)) for t in tiles]
        maps = [np.asarray(m, dtype=np.float64) for m in scorer.score(question, thumbnail, views)]
        return maps, _standing(maps)

    frontier = pyramid.tiles(pyramid.base_level)
    maps, standing = score(frontier)
    selection = Selection([], tiles_scored=len(frontier), scored=looked_at)
    leaves: dict[Tile, float] = {}
    while frontier:
        level = frontier[0].level
        room = config.budget - selection.tiles_scored
        if level == 0 or room <= 0:
            leaves.update(zip(frontier, standing, strict=True))
            selection.steps.append(Step(level, list(zip(frontier, standing, strict=True)), []))
            break
        children = _pick(_votes(frontier, maps, config.keep_share, pyramid), config.mass,
                         min(config.per_level, room))
        parents = {child.parent() for child in children}
        selection.steps.append(Step(level, list(zip(frontier, standing, strict=True)),
                                    [t for t in frontier if t in parents]))
        if level < pyramid.base_level or not children:  # chosen earlier, nothing finer chosen under it
            leaves.update((t, s) for t, s in zip(frontier, standing, strict=True) if t not in parents)
        if not children:
            break
        child_maps, child_standing = score(children)
        selection.tiles_scored += len(children)
        onward = [i for i in range(len(children)) if child_standing[i] >= config.concentrated]
        leaves.update((children[i], child_standing[i]) for i in range(len(children)) if i not in onward)
        frontier = [children[i] for i in onward]
        maps = [child_maps[i] for i in onward]
        standing = [child_standing[i] for i in onward]
    best = sorted(leaves, key=lambda t: (t.level, -leaves[t], t))  # the finest first: they carry the detail
    # a tile whose relevance is flat (nothing in it stands out) has nothing to show
    standing_out = [t for t in best if leaves[t] >= config.concentrated] or best[:1]
    selection.tiles = [Chosen(t, pyramid.box(t), leaves[t]) for t in standing_out[:config.answer_tiles]]
    return selection


class PlantedScorer:
    """Relevance planted at known level-0 boxes (tests, benchmarks): a token is as relevant as the share
    of its footprint that overlaps a planted box, plus a faint floor so every map has a mean."""

    def __init__(self, boxes: Sequence[Box], grid: int = 8, floor: float = 1e-3) -> None:
        self.boxes = list(boxes)
        self.grid = grid
        self.floor = floor
        self.calls = 0

    def score(self, question: str, thumbnail: Image.Image, tiles: Sequence[TileView]) -> list[np.ndarray]:
        self.calls += 1
        return [self._map(view) for view in tiles]

    def _map(self, view: TileView) -> np.ndarray:
        level_span = view.image.width * 2**view.tile.level  # the padded tile's level-0 side
        x0, y0 = view.box[0], view.box[1]
        cell = level_span / self.grid
        out = np.full((self.grid, self.grid), self.floor)
        for bx0, by0, bx1, by1 in self.boxes:
            for r in range(self.grid):
                for c in range(self.grid):
                    cx0, cy0 = x0 + c * cell, y0 + r * cell
                    overlap = max(0.0, min(bx1, cx0 + cell) - max(bx0, cx0)) * max(0.0, min(by1, cy0 + cell) -
                                                                                    max(by0, cy0))
                    out[r, c] += overlap / (cell * cell)
        return out
