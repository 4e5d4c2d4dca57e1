"""Where text is in an image: boxes with their text and confidence (burned-in annotations on DICOM
frames, captions on photos). One RapidOCR pass; no page orientation or reading order."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image

from .base import Box, overlap_share


@dataclass(frozen=True)
class TextRegion:
    box: Box  # pixels of the image given
    text: str
    confidence: float


@functools.cache
def _engine():  # noqa: ANN202 - one shared RapidOCREngine, built on first use
    from .rapid import RapidOCREngine

    return RapidOCREngine(word_boxes=False)


TILE = 1280  # the detector's working size (rapid.py): larger images are also read tile by tile
OVERLAP = 160  # pixels shared by neighbouring tiles, so text on a seam is whole in one of them


def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    def starts(length: int) -> list[int]:
        if length <= TILE:
            return [0]
        step = TILE - OVERLAP
        return [*range(0, length - TILE, step), length - TILE]

    return [(x, y, min(x + TILE, width), min(y + TILE, height)) for y in starts(height) for x in starts(width)]


def _overlaps(a: Box, b: Box) -> bool:
    """Most of the smaller box lies inside the other: the same text found twice."""
    return overlap_share(a, b) > 0.5


MAX_LINE_SHARE = 0.2  # of the image's height: no line of text is taller (a skull or an ultrasound sector is)


def find_text_regions(image: Image.Image, min_confidence: float = 0.5) -> list[TextRegion]:
    """Text regions of ``image`` (any mode; medical greyscale is fine), most confident first.

    An image larger than the detector's working size is also read in overlapping tiles at full
    resolution: small burned-in text on a large radiograph is lost when the whole image is scaled down.
    A region taller than ``MAX_LINE_SHARE`` of the image is not a line of text: the detector finds such
    blobs on anatomy (a head CT's skull read as "0", an ultrasound's sector as "9")."""
    rgb = image.convert("RGB")
    found = [TextRegion(ln.box, ln.text, ln.confidence) for ln in _engine().read(rgb)]
    if max(rgb.size) > TILE:
        for x0, y0, x1, y1 in _tiles(*rgb.size):
            for ln in _engine().read(rgb.crop((x0, y0, x1, y1))):
                box = (ln.box[0] + x0, ln.box[1] + y0, ln.box[2] + x0, ln.box[3] + y0)
                found.append(TextRegion(box, ln.text, ln.confidence))
    tallest = MAX_LINE_SHARE * rgb.height
    kept: list[TextRegion] = []
    for region in sorted((r for r in found if r.confidence >= min_confidence and r.box[3] - r.box[1] <= tallest),
                         key=lambda r: -r.confidence):
        if not any(_overlaps(region.box, other.box) for other in kept):
            kept.append(region)
    return kept
