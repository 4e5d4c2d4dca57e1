"""Reading order: columns of running text read one after the other; labels and values read across."""

from __future__ import annotations

from loupe.core.ocr.base import Line
from loupe.core.ocr.layout import blocks_in_reading_order, reading_order


def _line(text: str, x0: float, y0: float, x1: float, height: float = 20) -> Line:
    return Line(text, (x0, y0, x1, y0 + height), 0.99)


def test_two_columns_read_column_by_column():
    title = _line("A two-column page", 100, 20, 700)
    left = [_line(f"left {i}", 50, 100 + 30 * i, 380) for i in range(6)]
    right = [_line(f"right {i}", 420, 100 + 30 * i, 750) for i in range(6)]
    footer = _line("page 1", 380, 400, 420)
    shuffled = [right[3], left[5], footer, right[0], left[0], title, *left[1:5], *right[1:3], right[4], right[5]]
    assert [ln.text for ln in reading_order(shuffled)] == [
        "A two-column page", *(f"left {i}" for i in range(6)), *(f"right {i}" for i in range(6)), "page 1"]
    blocks = blocks_in_reading_order(shuffled)
    assert [b.lines[0].text for b in blocks] == ["A two-column page", "left 0", "right 0", "page 1"]


def test_receipt_rows_keep_each_price_with_its_item():
    rows = []
    for i, (item, price) in enumerate([("COFFEE", "3.50"), ("BREAD", "2.10"), ("TOTAL", "5.60")]):
        rows += [_line(price, 300, 100 + 30 * i, 340), _line(item, 40, 101 + 30 * i, 150)]
    assert [ln.text for ln in reading_order(rows)] == ["COFFEE", "3.50", "BREAD", "2.10", "TOTAL", "5.60"]


def test_nothing_in_nothing_out():
    assert reading_order([]) == [] and blocks_in_reading_order([]) == []


def test_pieces_of_one_line_are_joined_but_cells_stay_apart():
    from loupe.core.ocr.layout import merge_runs

    pieces = [_line("Pre", 50, 100, 80), _line("-", 80, 100, 86), _line("Digital Era", 86, 100, 190),
              _line("(19th", 196, 100, 240), _line("12.50", 500, 100, 560)]
    assert [ln.text for ln in merge_runs(pieces)] == ["Pre-Digital Era (19th", "12.50"]


def test_a_right_to_left_line_is_joined_from_its_rightmost_piece():
    """An Arabic line's pieces (each in reading order, split where the font changes to Latin) joined right to
    left: "…بلغة R و Python", not "Python و R بلغة…"; a Latin line with one Arabic word stays left to right."""
    from loupe.core.ocr.layout import merge_runs

    pieces = [_line("Python", 50, 100, 110), _line("و", 114, 100, 122), _line("R", 126, 100, 134),
              _line("البرمجة بلغة", 138, 100, 260)]
    assert [ln.text for ln in merge_runs(pieces)] == ["البرمجة بلغة R و Python"]
    mixed = [_line("The word", 50, 100, 130), _line("سلام", 134, 100, 170), _line("means peace", 174, 100, 280)]
    assert [ln.text for ln in merge_runs(mixed)] == ["The word سلام means peace"]


def test_a_code_listing_drawn_a_token_at_a_time_is_joined_into_its_line():
    """Monospaced code is drawn token by token, its spaces a character wide: wider than 0.6 of the small
    glyphs' height, so each token used to become a line of its own ("function" / "add" / "(" ...)."""
    from loupe.core.ocr.layout import merge_runs

    def token(text: str, x0: float, x1: float) -> Line:
        return Line(text, (x0, 366, x1, 372), 1.0)

    tokens = [token("function", 135, 178), token("add", 186, 201), token("(", 204, 206), token(") {", 231, 246)]
    assert [ln.text for ln in merge_runs(tokens)][0].startswith("function add (")
    cells = [token("Total", 50, 78), token("12.50", 140, 168)]  # cells several characters apart stay apart
    assert [ln.text for ln in merge_runs(cells)] == ["Total", "12.50"]
