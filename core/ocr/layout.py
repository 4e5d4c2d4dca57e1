"""Lines → blocks in reading order (recursive XY-cut), so two-column pages read column by column.

XY-cut splits a region at the widest empty band: a vertical gap splits it into columns (read left to
right), a horizontal gap into bands (read top to bottom); regions with no clear gap are one block whose
lines read top to bottom, left to right within a row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Box, Line, union


@dataclass(frozen=True)
class Block:
    lines: tuple[Line, ...]
    box: Box
    kind: str = "text"  # title | text | table | code | figure | header | footer
    rows: tuple[tuple[str, ...], ...] = ()  # a ruled table's cells (base.Table), else empty

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def _gaps(spans: list[tuple[float, float]], minimum: float) -> list[tuple[float, float]]:
    """Empty intervals at least ``minimum`` wide between the union of ``spans``."""
    gaps, reach = [], None
    for start, end in sorted(spans):
        if reach is not None and start - reach >= minimum:
            gaps.append((reach, start))
        reach = end if reach is None else max(reach, end)
    return gaps


def rows(lines: Sequence[Line]) -> list[list[Line]]:
    """Lines grouped into visual rows, top to bottom, each left to right. A piece joins the row when its centre
    lies within half a height of the row's centre, the row measured over all its pieces so far: a comma or a
    lowercase word beside taller glyphs stays in the row."""
    grouped: list[list[Line]] = []
    top = bottom = 0.0
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if grouped and abs(centre - (top + bottom) / 2) <= max(bottom - top, line.box[3] - line.box[1]) / 2:
            grouped[-1].append(line)
            top, bottom = min(top, line.box[1]), max(bottom, line.box[3])
            continue
        grouped.append([line])
        top, bottom = line.box[1], line.box[3]
    return [sorted(row, key=lambda ln: ln.box[0]) for row in grouped]


def _rows(lines: Sequence[Line]) -> list[Line]:
    return [line for row in rows(lines) for line in row]


def _median_height(lines: Sequence[Line]) -> float:
    heights = sorted(ln.box[3] - ln.box[1] for ln in lines)
    return heights[len(heights) // 2] if heights else 0.0


def _cut(lines: list[Line], line_height: float, depth: int = 0) -> list[list[Line]]:
    if len(lines) <= 1 or depth > 24:
        return [lines] if lines else []
    columns = _gaps([(ln.box[0], ln.box[2]) for ln in lines], minimum=line_height)
    parts: list[list[Line]] = []
    # The widest vertical gap that separates columns of text (a narrower one may, where the widest parts a
    # cover's title from the text and sidebar beside it); labels and values (a receipt, a table) are not
    # columns: their rows read across the gap.
    for left, right in sorted(columns, key=lambda g: g[0] - g[1]):
        split = (left + right) / 2
        parts = [[ln for ln in lines if ln.box[2] <= split], [ln for ln in lines if ln.box[2] > split]]
        if _both_text_columns(parts, lines):
            break
        parts = []
    if not parts:
        bands = _gaps([(ln.box[1], ln.box[3]) for ln in lines], minimum=line_height * 0.8)
        if not bands:
            return [_rows(lines)]
        top, bottom = max(bands, key=lambda g: g[1] - g[0])
        split = (top + bottom) / 2
        parts = [[ln for ln in lines if ln.box[3] <= split], [ln for ln in lines if ln.box[3] > split]]
    if not parts[0] or not parts[1]:
        return [_rows(lines)]
    return [block for part in parts for block in _cut(part, line_height, depth + 1)]


def _both_text_columns(parts: list[list[Line]], lines: list[Line]) -> bool:
    """Columns of running text have lines of substantial width, or of several words, on both sides of the
    gap; a column of prices or table cells does not (narrow newspaper-like columns are read as columns by
    their words: three or four of them are each under a quarter of the page). A column of running text beside
    short lines that do not share its rows (a cover's title or a sidebar set in another size) is a column too;
    short lines that do share its rows are labels and values, read across."""
    width = max(ln.box[2] for ln in lines) - min(ln.box[0] for ln in lines)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2] if ordered else 0.0

    def wordy(group: list[Line]) -> bool:
        return median([len(ln.text.split()) for ln in group]) >= PROSE_WORDS

    if all(group and (median([ln.box[2] - ln.box[0] for ln in group]) >= 0.25 * width or wordy(group))
           for group in parts):
        return True
    prose = [group for group in parts if len(group) >= 3 and wordy(group) and _runs_on(group)]
    if len(prose) != 1:
        return False
    other = parts[1] if prose[0] is parts[0] else parts[0]
    return _sharing_rows(other, prose[0]) < 0.5


def _runs_on(group: list[Line]) -> bool:
    """Running text: most lines go on in the next one (it starts in lower case)."""
    ordered = sorted(group, key=lambda ln: ln.box[1])
    follows = [b.text[:1].islower() for b in ordered[1:]]
    return bool(follows) and sum(follows) >= 0.5 * len(follows)


def _sharing_rows(group: list[Line], others: list[Line]) -> float:
    """The share of ``group``'s lines whose middle is level (within a third of a line) with one of ``others``',
    in the same font size where the PDF gives sizes (a sidebar in another size shares no row with the text)."""
    def level(a: Line, b: Line) -> bool:
        height = min(a.box[3] - a.box[1], b.box[3] - b.box[1])
        same_size = not (a.size and b.size) or abs(a.size - b.size) <= 0.08 * max(a.size, b.size)
        return same_size and abs((a.box[1] + a.box[3]) - (b.box[1] + b.box[3])) / 2 <= height / 3

    return sum(any(level(ln, other) for other in others) for ln in group) / max(len(group), 1)


PROSE_WORDS = 4  # a column whose lines hold this many words or more (the median) is running text


def blocks_in_reading_order(lines: Sequence[Line]) -> list[Block]:
    groups = _cut(list(lines), max(_median_height(lines), 1.0))
    return [Block(tuple(group), union([ln.box for ln in group])) for group in groups if group]


def merge_runs(lines: Sequence[Line]) -> list[Line]:
    """Join pieces of one visual line (a PDF splits text at every font change: "Pre", "-", "Digital")
    that share a row and nearly touch; wider gaps (table cells, a price after its label) stay apart. A line
    mostly in a right-to-left script (Arabic, Hebrew) is joined from its rightmost piece: each piece's text is
    in reading order already, the pieces are not ("بلغة R و Python" came out as "Python و R بلغة")."""
    groups: list[list[Line]] = []
    joiners: list[list[str]] = []  # between neighbours, left to right
    for line in _rows(lines):
        if groups:
            box = union([ln.box for ln in groups[-1]])
            height = max(box[3] - box[1], line.box[3] - line.box[1])
            same_row = abs((box[1] + box[3]) - (line.box[1] + line.box[3])) / 2 <= height / 2
            gap = line.box[0] - box[2]
            mono = line.mono and all(part.mono for part in groups[-1])
            reach = (MONO_JOIN_CHARS * _advance([*groups[-1], line], height) if mono
                     else max(0.6 * height, WORD_GAP_CHARS * _char_width(groups[-1][-1])))
            if same_row and -height / 2 <= gap <= reach:
                joiners[-1].append(_joiner(mono, [*groups[-1], line], gap, height))
                groups[-1].append(line)
                continue
        groups.append([line])
        joiners.append([])
    return [_joined(parts, between) for parts, between in zip(groups, joiners, strict=True)]


WORD_GAP_CHARS = 1.6  # a gap up to this many of a run's average characters is a space between words: a
# monospaced code listing is drawn a token at a time, its spaces a character wide and wider than 0.6 of its
# (lowercase) glyphs' height; table cells sit several characters apart


def _char_width(line: Line) -> float:
    return (line.box[2] - line.box[0]) / max(len(line.text), 1)


def _advance(pieces: list[Line], height: float) -> float:
    """A fixed-pitch font's character advance, from the longest piece (ink boxes: a single "(" is narrower)."""
    longest = max(pieces, key=lambda ln: len(ln.text))
    return _char_width(longest) if len(longest.text) >= 3 else 0.6 * height


def _joiner(mono: bool, pieces: list[Line], gap: float, height: float) -> str:
    """A space before the last of ``pieces``, or none. Fixed-pitch pieces are boxed by their ink, so a
    narrow glyph ("(", ".") sits up to ~0.8 of a character from its neighbour with no space between; a
    space makes the gap at least one character."""
    if mono:
        return " " if gap >= MONO_SPACE * _advance(pieces, height) else ""
    before, after = pieces[-2].text, pieces[-1].text
    if (any(c.isalpha() for c in before) and any(c.isalpha() for c in after)
            and right_to_left(before) != right_to_left(after)):
        return " "  # a Latin word in Arabic or Hebrew text is a word of its own, however close it is drawn
    return " " if gap > 0.15 * height else ""


MONO_SPACE = 0.9  # of a fixed-pitch character's advance
MONO_JOIN_CHARS = 2.5  # fixed-pitch pieces of a row this many characters apart or closer are one line of code


def _joined(parts: list[Line], joiners: list[str]) -> Line:
    if len(parts) == 1:
        return parts[0]
    order = list(range(len(parts)))
    if right_to_left("".join(part.text for part in parts)):
        order.reverse()
    text = parts[order[0]].text
    for before, after in zip(order, order[1:], strict=False):
        text += joiners[min(before, after)] + parts[after].text
    return Line(text, union([part.box for part in parts]), min(part.confidence for part in parts),
                tuple(word for n in order for word in parts[n].words), mono=all(part.mono for part in parts),
                size=max(part.size for part in parts))


RTL_LETTERS = re.compile(r"[\u0590-\u05FF\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFF]")


def right_to_left(text: str) -> bool:
    """Mostly letters of a right-to-left script (Hebrew, Arabic) rather than of others."""
    rtl = len(RTL_LETTERS.findall(text))
    return rtl > sum(1 for char in text if char.isalpha()) - rtl


def reading_order(lines: Sequence[Line]) -> list[Line]:
    return [line for block in blocks_in_reading_order(lines) for line in block.lines]
