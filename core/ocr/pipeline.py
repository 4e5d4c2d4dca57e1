"""Loupe's OCR pipeline for one page image: bound the size, turn it upright, read, order the lines."""

from __future__ import annotations

from PIL import Image

from .base import Box, Line, OCREngine, Page, Table, Word
from .layout import reading_order
from .orientation import OrientationClassifier
from .scanned_tables import scanned_tables

MAX_SIDE = 2000  # RapidOCR's own ceiling: pages beyond twice this are first reduced by whole pixel blocks
MIN_SIDE = 1280  # smaller pages are enlarged to this (the detector's working size, rapid.py): small print
# in a phone photo or a 600-px receipt is found more reliably at that scale


def _scaled(box: Box, factor: float) -> Box:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def _rescale(lines: list[Line], factor: float) -> list[Line]:
    if factor == 1:
        return lines
    return [Line(ln.text, _scaled(ln.box, factor), ln.confidence,
                 tuple(Word(w.text, _scaled(w.box, factor), w.confidence) for w in ln.words)) for ln in lines]


class PageReader:
    """Reads page images with one engine; orientation is detected unless switched off, tables are read
    (scanned_tables.py) unless switched off."""

    def __init__(self, engine: OCREngine, orientation: bool = True, max_side: int = MAX_SIDE,
                 min_side: int = MIN_SIDE, tables: bool = True) -> None:
        self.engine = engine
        self.orientation = OrientationClassifier() if orientation else None
        self.max_side = max_side
        self.min_side = min_side
        self.tables = tables

    def read(self, image: Image.Image, number: int = 1) -> Page:
        image = image if image.mode == "RGB" else image.convert("RGB")  # no copy of a large page
        full_size = image.size
        blocks = max(image.size) // self.max_side  # the engine scales the last step itself
        if blocks >= 2:  # a 35 MP scan: average whole pixel blocks first, which is fast and antialiased
            image = image.reduce(blocks)
        elif 0 < max(image.size) < self.min_side:
            grow = self.min_side / max(image.size)
            image = image.resize((round(image.width * grow), round(image.height * grow)), Image.Resampling.LANCZOS)
        factor = full_size[0] / image.width  # page pixels per pixel read
        turn = self.orientation.turn_needed(image) if self.orientation else 0
        lines = self._read_turned(image, turn)
        if self.orientation and _mostly_vertical(lines):
            # The classifier misses sparse pages; lines standing on end mean a quarter turn is off.
            tries = {t: self._read_turned(image, t) for t in ((turn + 90) % 360, (turn + 270) % 360)}
            best = max(tries, key=lambda t: _evidence(tries[t]))
            # The engine also reads lines standing on end (it turns tall crops), as well as upright ones, but
            # then orders them as columns: lines lying down are kept unless they read clearly worse.
            if _evidence(tries[best]) >= LYING_DOWN * _evidence(lines) and not _mostly_vertical(tries[best]):
                turn, lines = best, tries[best]
        if self.orientation and _mean_confidence(lines) < UNSURE:
            # The classifier also misses pages upside down: read so, lines come out as confident garbage
            # ("pecage" for "package", 0.72 on average against 0.99). Read it turned over too; keep the better.
            over = (turn + 180) % 360
            flipped = self._read_turned(image, over)
            if _evidence(flipped) > _evidence(lines):
                turn, lines = over, flipped
        width, height = full_size if turn in (0, 180) else full_size[::-1]
        tables = scanned_tables(image.rotate(turn, expand=True) if turn else image, lines) if self.tables else []
        return Page(number, width, height, reading_order(_rescale(lines, factor)),
                    rotation=turn, engine=self.engine.name,
                    tables=[Table(_scaled(t.box, factor), t.rows) for t in tables])

    def _read_turned(self, image: Image.Image, turn: int) -> list[Line]:
        return self.engine.read(image.rotate(turn, expand=True) if turn else image)


def _mostly_vertical(lines: list[Line]) -> bool:
    """Most of the text area sits in boxes much taller than wide."""
    def area(line: Line) -> float:
        return (line.box[2] - line.box[0]) * (line.box[3] - line.box[1])

    upright = sum(area(ln) for ln in lines if ln.box[3] - ln.box[1] > 1.5 * (ln.box[2] - ln.box[0]))
    total = sum(area(ln) for ln in lines)
    return total > 0 and upright > 0.5 * total


UNSURE = 0.9  # a page read with less mean confidence than this is also read turned over
LYING_DOWN = 0.9  # lines lying down win over lines on end that read at most this much better


def _mean_confidence(lines: list[Line]) -> float:
    return sum(ln.confidence for ln in lines) / len(lines) if lines else 1.0


def _evidence(lines: list[Line]) -> float:
    """How much confidently read text a reading produced."""
    return sum(ln.confidence * len(ln.text.strip()) for ln in lines)
