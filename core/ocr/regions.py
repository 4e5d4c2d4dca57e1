"""Where text is in an image: boxes with their text and confidence (burned-in annotations on DICOM
frames, captions on photos). One RapidOCR pass; no page orientation or reading order."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image

from .base import Box


@dataclass(frozen=True)
class TextRegion:
    box: Box  # pixels of the image given
    text: str
    confidence: float


@functools.cache
def _engine():  # noqa: ANN202 - one shared RapidOCREngine, built on first use
    from .rapid import RapidOCREngine

    return RapidOCREngine(word_boxes=False)


def find_text_regions(image: Image.Image, min_confidence: float = 0.5) -> list[TextRegion]:
    """Text regions of ``image`` (any mode; medical greyscale is fine), most confident first."""
    lines = _engine().read(image.convert("RGB"))
    regions = [TextRegion(ln.box, ln.text, ln.confidence) for ln in lines if ln.confidence >= min_confidence]
    return sorted(regions, key=lambda r: -r.confidence)
