"""Answering about a giant image: what the model sees is the thumbnail plus the tiles focus chose.

A domain asks for this by returning a ``VisualContext`` with a ``PyramidRequest`` (how to open the
image, how to say where a box is); the service, which holds the model, runs ``focused_images``. The
images go in as a multi-image turn, each tile named with its place and scale in the prompt text; the
run record keeps the selection (tiles, scores, trace).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import ModelUnavailable
from .attention import AttentionScorer, tile_side
from .focus import FocusConfig, Selection, focus
from .pyramid import Pyramid
from .sources import Box, open_source

OPEN_PYRAMIDS = 4  # file handles (and their tile caches) kept between questions


@dataclass
class PyramidRequest:
    # the stored image, read lazily, never whole: a GDAL address for an item read by reference; several paths
    # for a DICOM slide's levels
    path: Path | str | tuple[Path, ...]
    max_pixels: int  # for formats that cannot be read lazily
    where: Callable[[Box], str] | None = None  # "25.06° N, 77.41° W" for a level-0 box, where georeferenced
    config: FocusConfig = field(default_factory=FocusConfig)


_open: OrderedDict[tuple[str, int], Pyramid] = OrderedDict()  # (path(s), tile side)
_open_lock = threading.Lock()


def open_pyramid(path: Path | str | tuple[Path, ...], tile: int, max_pixels: int) -> Pyramid:
    """A pyramid over ``path`` with ``tile``-px tiles, reused while it is among the last few opened."""
    key = (str(path), tile)  # a tuple of level paths is keyed by all of them
    with _open_lock:
        pyramid = _open.get(key)
        if pyramid is not None:
            _open.move_to_end(key)
            return pyramid
    pyramid = Pyramid(open_source(path, max_pixels), tile=tile)
    with _open_lock:
        _open[key] = pyramid
        while len(_open) > OPEN_PYRAMIDS:
            _, old = _open.popitem(last=False)
            old.source.close()
    return pyramid


def describe(selection: Selection, where: Callable[[Box], str] | None) -> str:
    lines = ["Image 1 shows the whole scene, reduced."]
    for n, chosen in enumerate(selection.tiles, start=2):
        x0, y0, x1, y1 = chosen.box
        scale = "full resolution" if chosen.tile.level == 0 else f"1:{2 ** chosen.tile.level}"
        place = f"; centre {where(chosen.box)}" if where else ""
        lines.append(f"Image {n}: the part from x {x0:,}-{x1:,}, y {y0:,}-{y1:,} px, at {scale}{place}.")
    return "\n".join(lines)


def _facts(pyramid: Pyramid) -> dict:
    return {"width": pyramid.source.width, "height": pyramid.source.height, "tile": pyramid.tile,
            "levels": pyramid.levels}


# The overview a served model gets instead of focused tiles: this many tiles on its longer side.
OVERVIEW_TILES = 2


def overview(pyramid: Pyramid) -> tuple[list[Image.Image], str, dict]:
    """The whole image, reduced to a few tiles' size: what a served model reads of a giant image. Question-
    steered focus needs the model's attention in this process; the record says it was off."""
    image = pyramid.thumbnail(pyramid.tile * OVERVIEW_TILES)
    record = {"focus_off": "the model is served: tile focus needs it in this process", "pyramid": _facts(pyramid)}
    return [image], f"Image 1 shows the whole scene, reduced to {image.width:,} × {image.height:,} px.", record


def focused_images(vlm, request: PyramidRequest, question: str,  # noqa: ANN001 - an HFVLM
                   adapter: str | None = None) -> tuple[list[Image.Image], str, dict]:
    """The thumbnail and the chosen tiles, the text that places them, and the record of the choice.
    ``adapter``: the LoRA adapter the answer uses (None: base weights), which scores the tiles too."""
    if not hasattr(vlm, "family"):
        raise ModelUnavailable("Giant images need one of Loupe's model families (its tile size sets the pyramid).")
    pyramid = open_pyramid(request.path, tile_side(vlm), request.max_pixels)
    if not hasattr(vlm, "model"):  # a served model: no attention here to steer the tiles
        return overview(pyramid)
    scorer = AttentionScorer(vlm, adapter=adapter)
    thumbnail = pyramid.thumbnail()
    selection = focus(pyramid, question, scorer, request.config, thumbnail=thumbnail)
    images = [thumbnail, *(pyramid.read(chosen.tile) for chosen in selection.tiles)]
    record = {"focus": selection.as_dict(), "focus_tiles_encoded": scorer.encoded_units,
              "pyramid": _facts(pyramid)}
    return images, describe(selection, request.where), record
