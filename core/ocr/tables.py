"""Ruled tables of a PDF page: pdfplumber finds the grid the page's drawn lines make; pdfium gives each cell's
text, as it gives the page's lines.

The rules decide, not text alignment: a table whose rows wrap onto several lines or that has two columns is
still one table, and its header row is a row, not a heading. The horizontal rules' ends count as vertical
edges too, so a table ruled only inside (open sides) keeps its first and last columns; a table ruled between
rows only takes its columns from the bands every row leaves free of text. A grid coarser than its text (a
booktabs table: a cell would hold two columns, or every cell of a band several rows) is refused and left to
the rules on aligned cells (block_kinds.py). A frame round a listing (one column) or round the page (one
cell) is no table. Pages drawn with more paths than ``MAX_PATHS`` (a vector map, a chart) are not searched.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Box, Line, Table, centre_inside
from .layout import rows

log = logging.getLogger(__name__)

MIN_RULE_PT = 20.0  # a horizontal rule shorter than this (an underline, a dash) gives no column edge
MAX_PATHS = 5000  # drawn paths on a page beyond which it is a drawing, not a page with tables
SETTINGS = {"vertical_strategy": "lines", "horizontal_strategy": "lines"}
BREAK_HYPHENS = str.maketrans({"\x02": "", "\ufffe": "", "\u00ad": ""})  # a word broken in a cell is one word


def path_count(page: Any) -> int:
    """Paths the page draws (pypdfium2 page; forms opened two levels deep), up to ``MAX_PATHS + 1``."""
    import pypdfium2.raw as raw

    count = 0
    for _ in page.get_objects(filter=(raw.FPDF_PAGEOBJ_PATH,), max_depth=2):
        count += 1
        if count > MAX_PATHS:
            break
    return count


class RuledTables:
    """A document's ruled tables, page by page; pdfplumber opens the document at the first page that draws
    enough paths to hold a grid, once."""

    def __init__(self, source: bytes | Path) -> None:
        self._source = source
        self._plumber: Any = None
        self._failed = False  # pdfminer could not parse the file: its pages are read without their rules

    def __enter__(self) -> RuledTables:
        return self

    def __exit__(self, *_: object) -> None:
        if self._plumber is not None:
            self._plumber.close()

    def find(self, page: Any, number: int, scale: float, lines: Sequence[Line] = ()) -> list[Table]:
        """The tables of page ``number`` (1-based; ``page`` its pypdfium2 page), boxes in pixels at ``scale``.
        ``lines``: the page's text runs (pixels), to refuse a grid coarser than its text (``_too_coarse``)."""
        paths = path_count(page)
        if paths < 4 or paths > MAX_PATHS:  # a grid needs at least two rules each way
            return []
        try:
            import pdfplumber
        except ImportError:  # the geometry rules still find tables whose cells line up
            return []
        if self._failed:
            return []
        plumbed = None
        try:
            if self._plumber is None:
                source = io.BytesIO(self._source) if isinstance(self._source, bytes) else self._source
                self._plumber = pdfplumber.open(source)
            plumbed = self._plumber.pages[number - 1]
            found = plumbed.find_tables({**SETTINGS, "explicit_vertical_lines": _rule_ends(plumbed)})
            return self._cells(page, plumbed, found, scale, lines)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - pdfminer's many parse errors: the page is read without its rules
            log.info("ruled tables not searched from page %d on: %s", number, type(exc).__name__)
            self._failed = True
            return []
        finally:
            if plumbed is not None:
                plumbed.close()  # pdfplumber keeps each page's objects until told

    @staticmethod
    def _cells(page: Any, plumbed: Any, found: Sequence[Any], scale: float, lines: Sequence[Line]) -> list[Table]:
        height = float(plumbed.height)  # pdfplumber measures from the page's top, pdfium from its bottom (points)
        textpage = page.get_textpage()
        try:
            tables = []
            for table in found:
                grid = [list(row.cells) for row in table.rows]
                if len(grid) >= 2 and max(len(row) for row in grid) == 1:  # rows ruled, columns not
                    grid = _columns_from_text(table, lines, scale)
                if len(grid) < 2 or max(len(row) for row in grid) < 2:
                    continue
                boxes = [tuple(v * scale for v in cell) for row in grid for cell in row if cell]
                if _too_coarse(boxes, lines):
                    continue
                rows = _filled([[_cell_text(textpage, cell, height) if cell else None for cell in row]
                                for row in grid], grid)
                if sum(bool(text) for row in rows for text in row) < 2:
                    continue
                x0, top, x1, bottom = table.bbox
                tables.append(Table((x0 * scale, top * scale, x1 * scale, bottom * scale),
                                    tuple(tuple(row) for row in rows)))
            return tables
        finally:
            textpage.close()


def _columns_from_text(table: Any, lines: Sequence[Line], scale: float) -> list[list[tuple]]:
    """A table ruled between its rows only (technical manuals): its columns where a band at least a line
    height wide is free of text in every row; each row's cells cut there (points, as pdfplumber's)."""
    inside = _lines_in(tuple(v * scale for v in table.bbox), lines)
    if not inside:
        return []
    height = sorted(ln.box[3] - ln.box[1] for ln in inside)[len(inside) // 2]
    spans = sorted((ln.box[0], ln.box[2]) for ln in inside)
    cuts, reach = [], spans[0][1]
    for start, end in spans[1:]:
        if start - reach >= height:
            cuts.append((reach + start) / 2 / scale)
        reach = max(reach, end)
    edges = [table.bbox[0], *cuts, table.bbox[2]]
    grid = [[(left, row.bbox[1], right, row.bbox[3]) for left, right in zip(edges, edges[1:], strict=False)]
            for row in table.rows]
    for row in grid:  # every cell of a band several text rows tall: rows the rules left out (booktabs' body)
        stacked = [len(rows(_lines_in(tuple(v * scale for v in cell), inside))) for cell in row]
        if sum(n > 0 for n in stacked) >= 2 and all(n != 1 for n in stacked):
            return []
    return grid


def _lines_in(cell: Box, lines: Sequence[Line]) -> list[Line]:
    return [ln for ln in lines if centre_inside(ln.box, cell)]


def _too_coarse(cells: Sequence[Box], lines: Sequence[Line]) -> bool:
    """Whether some cell holds two runs side by side, a line height or more apart: the rules drew fewer columns
    than the text has (a booktabs table: rules above, below and under a header that spans columns, none
    between them). Such a table is left to the rules on aligned text."""
    for cell in cells:
        for row in rows(_lines_in(cell, lines)):
            if any(b.box[0] - a.box[2] >= max(a.box[3] - a.box[1], b.box[3] - b.box[1])
                   for a, b in zip(row, row[1:], strict=False)):
                return True
    return False


def _rule_ends(plumbed: Any) -> list[float]:
    ends = {round(x, 1) for edge in plumbed.horizontal_edges if edge["x1"] - edge["x0"] >= MIN_RULE_PT
            for x in (edge["x0"], edge["x1"])}
    return sorted(ends)


def _cell_text(textpage: Any, cell: Sequence[float], height: float) -> str:
    x0, top, x1, bottom = cell
    text = textpage.get_text_bounded(x0, height - bottom, x1, height - top)
    return re.sub(r"\s+", " ", text.translate(BREAK_HYPHENS)).strip()


def _filled(texts: list[list[str | None]], grid: list[list[Any]]) -> list[list[str]]:
    """Cells a merged cell covers take its text (as the field's reference Markdown repeats it): from the left
    where the cell to the left reaches over, else from above."""
    out: list[list[str]] = []
    for r, row in enumerate(texts):
        filled: list[str] = []
        for c, text in enumerate(row):
            if text is None:
                left = next((k for k in range(c - 1, -1, -1) if grid[r][k] is not None), None)
                centre = _column_centre(grid, c)
                if left is not None and centre is not None and grid[r][left][2] > centre:
                    text = filled[left]
                else:
                    text = out[r - 1][c] if r and c < len(out[r - 1]) else ""
            filled.append(text)
        out.append(filled)
    return out


def _column_centre(grid: list[list[Any]], column: int) -> float | None:
    """The middle of ``column``, from the first row where it has a cell of its own."""
    cell = next((row[column] for row in grid if column < len(row) and row[column] is not None), None)
    return (cell[0] + cell[2]) / 2 if cell is not None else None
