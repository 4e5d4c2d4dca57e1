"""Loupe's OCR pipeline for one page image: bound the size, turn it upright, read, order the lines."""

from __future__ import annotations

from PIL import Image

from .base import Box, Line, OCREngine, Page, Word
from .layout import reading_order
from .orientation import OrientationClassifier

MAX_SIDE = 2000  # longer pages are read at this size (RapidOCR's own ceiling), boxes mapped back


def _scaled(box: Box, factor: float) -> Box:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def _rescale(lines: list[Line], factor: float) -> list[Line]:
    if factor == 1.0:
        return lines
    return [Line(ln.text, _scaled(ln.box, factor), ln.confidence,
                 tuple(Word(w.text, _scaled(w.box, factor), w.confidence) for w in ln.words)) for ln in lines]


class PageReader:
    """Reads page images with one engine; orientation is detected unless switched off."""

    def __init__(self, engine: OCREngine, orientation: bool = True, max_side: int = MAX_SIDE) -> None:
        self.engine = engine
        self.orientation = OrientationClassifier() if orientation else None
        self.max_side = max_side

    def read(self, image: Image.Image, number: int = 1) -> Page:
        image = image.convert("RGB")
        turn = self.orientation.turn_needed(image) if self.orientation else 0
        upright = image.rotate(turn, expand=True) if turn else image
        factor = 1.0
        if max(upright.size) > self.max_side:
            factor = max(upright.size) / self.max_side
            small = upright.resize((round(upright.width / factor), round(upright.height / factor)),
                                   Image.Resampling.LANCZOS)
        else:
            small = upright
        lines = _rescale(self.engine.read(small), factor)
        return Page(number, upright.width, upright.height, reading_order(lines), rotation=turn,
                    engine=self.engine.name)
