"""What OCR produces: words and lines with boxes and confidence, per page, in page pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

from PIL import Image

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the upright page


def overlap_share(a: Box, b: Box) -> float:
    """How much two boxes overlap, as a share of the smaller one (0 when either is empty)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def centre_inside(inner: Box, outer: Box) -> bool:
    """The centre of ``inner`` lies in ``outer``."""
    x, y = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= x <= outer[2] and outer[1] <= y <= outer[3]


def union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@dataclass(frozen=True)
class Word:
    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class Line:
    text: str
    box: Box
    confidence: float
    words: tuple[Word, ...] = ()
    mono: bool = False  # set in a fixed-pitch font (a PDF's text layer says so; OCR cannot tell)
    size: float = 0.0  # the font size in page pixels where a PDF's text layer says it; 0 from OCR


@dataclass(frozen=True)
class Table:
    """A table the page draws with rules: its box and its cells' text, row by row (a merged cell's text
    repeated in each cell it covers)."""

    box: Box
    rows: tuple[tuple[str, ...], ...]


@dataclass
class Page:
    """One page read upright: ``rotation`` is how far (degrees, counter-clockwise) the input was
    turned to read it; boxes are in the upright page's pixels."""

    number: int  # 1-based
    width: int
    height: int
    lines: list[Line] = field(default_factory=list)
    rotation: int = 0
    source: str = "ocr"  # "ocr" or "text-layer" (a PDF's own text)
    engine: str = ""
    tables: list[Table] = field(default_factory=list)  # ruled tables (a PDF's drawing; tables.py)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def as_dict(self) -> dict:
        return asdict(self)


class OCREngine(Protocol):
    """Reads the text lines of one upright image."""

    name: str

    def read(self, image: Image.Image) -> list[Line]: ...


class OCRUnavailable(RuntimeError):
    """An engine cannot run here; the message says what to install or configure."""
