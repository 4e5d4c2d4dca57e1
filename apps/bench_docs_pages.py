"""Pages drawn here for ``loupe bench docs`` and the tests, each with the Markdown a reader expects of it: the
layouts the shipped documents lack (a ruled table with wrapped cells and a shaded header, two and three
columns of running text, a listing in a typewriter face), written as PDF operators so nothing else decides
the layout."""

from __future__ import annotations

from collections.abc import Sequence

from .pdf_bytes import text_pdf

BODY, BOLD, MONO = 1, 2, 3  # /F1 Helvetica, /F2 Helvetica-Bold, /F3 Courier
FONTS = ("Helvetica", "Helvetica-Bold", "Courier")


def drawn(x: float, y: float, text: str, font: int = BODY, size: float = 10) -> bytes:
    """One run of text at (x, y) points from the page's bottom left."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"BT /F%d %.1f Tf %.1f %.1f Td (%s) Tj ET\n" % (font, size, x, y, escaped.encode("latin-1"))


def ruled_table(x: float, top: float, widths: Sequence[float], rows: Sequence[Sequence[Sequence[str]]], size: float = 9,
                leading: float = 11, pad: float = 4, columns_ruled: bool = True) -> tuple[bytes, float]:
    """A table ruled on every side (with ``columns_ruled=False``, between rows only, as technical manuals
    often are), its first row shaded and bold; a cell is its lines (it may wrap). Returns the operators and
    the table's bottom."""
    heights = [max(len(cell) for cell in row) * leading + 2 * pad for row in rows]
    content = b"0.85 g %.1f %.1f %.1f %.1f re f 0 g 0.5 w\n" % (x, top - heights[0], sum(widths), heights[0])
    edges, y = [top], top
    for r, (row, height) in enumerate(zip(rows, heights, strict=True)):
        left = x
        for width, cell in zip(widths, row, strict=True):
            for k, line in enumerate(cell):
                content += drawn(left + pad, y - pad - (k + 1) * leading + 3, line, BOLD if r == 0 else BODY, size)
            left += width
        y -= height
        edges.append(y)
    for edge in edges:
        content += b"%.1f %.1f m %.1f %.1f l S\n" % (x, edge, x + sum(widths), edge)
    left = x
    for width in (0, *widths) if columns_ruled else ():
        left += width
        content += b"%.1f %.1f m %.1f %.1f l S\n" % (left, top, left, y)
    return content, y


TABLE_ROWS = (
    (("Column",), ("Description",)),
    (("ENTRY_TYPE",), ("The kind of event: read, change or delete. Entries of",
                       "other kinds are written by the system.")),
    (("USER_NAME",), ("The profile that made the request.",)),
    (("OBJECT",), ("The library and object the request named, as", "LIBRARY/OBJECT, or blank for a system event.")),
    (("TIMESTAMP",), ("When the request was made.",)),
)
TABLE_BEFORE = ("Each entry of the audit journal has the columns described in Table 5; an entry is",
                "written when an object is read, changed or deleted by a user.")
TABLE_AFTER = "Entries are kept for ninety days unless the retention period is changed."


def wrapped_table_page(columns_ruled: bool = True) -> tuple[bytes, str]:
    """Prose, a two-column ruled table whose cells wrap (its columns ruled or not), its caption, prose."""
    content = b"".join(drawn(72, 680 - 13 * n, line) for n, line in enumerate(TABLE_BEFORE))
    table, bottom = ruled_table(72, 640, (110, 300), TABLE_ROWS, columns_ruled=columns_ruled)
    content += table + drawn(72, bottom - 20, "Table 5: Columns of the audit journal", size=9)
    content += drawn(72, bottom - 50, TABLE_AFTER)
    cells = [[" ".join(cell) for cell in row] for row in TABLE_ROWS]
    markdown = "\n".join([" ".join(TABLE_BEFORE), "", f"| {' | '.join(cells[0])} |", "| --- | --- |",
                          *(f"| {' | '.join(row)} |" for row in cells[1:]), "",
                          "Table 5: Columns of the audit journal", "", TABLE_AFTER])
    return text_pdf(content, fonts=FONTS), markdown + "\n"


LEFT_COLUMN = ("Scanned records arrive from many clinics, each with",
               "its own forms. The reader first finds the page's",
               "columns, then reads each from top to bottom, so a",
               "sentence never jumps across the gutter into the",
               "other column halfway through.")
RIGHT_COLUMN = ("The second column starts at the top of the page",
                "again. Its lines are as long as the first column's,",
                "and a reader who mixed the two would join words",
                "that were never meant to be read together, which",
                "no table detector should take for a grid.")


def two_column_page() -> tuple[bytes, str]:
    """A heading across the page, then two columns of justified running text."""
    content = drawn(72, 680, "Reading two columns", BOLD, 14)
    for n, (left, right) in enumerate(zip(LEFT_COLUMN, RIGHT_COLUMN, strict=True)):
        content += drawn(72, 650 - 13 * n, left) + drawn(330, 650 - 13 * n, right)
    markdown = f"## Reading two columns\n\n{' '.join(LEFT_COLUMN)}\n\n{' '.join(RIGHT_COLUMN)}\n"
    return text_pdf(content, fonts=FONTS), markdown


BOOKTABS_ROWS = (
    ("Model", "Layout", "Text", "Table", "Figure"),
    ("YOLO-small", "71.2", "83.0", "77.5", "69.9"),
    ("YOLO-large", "76.8", "85.1", "81.6", "74.0"),
    ("DETR", "74.9", "84.4", "80.2", "72.8"),
)
BOOKTABS_CAPTION = "Table 2: Mean average precision per class on the test set"


def booktabs_table_page(spanning_header: bool = True) -> tuple[bytes, str]:
    """A paper's table in the booktabs style: rules above, under the header (and a short one under the
    columns that share the "mAP" header) and below; no vertical rule. Cells line up in columns."""
    columns = (72, 160, 230, 290, 350)
    content = drawn(72, 680, BOOKTABS_CAPTION, size=9)
    content += b"0 g 0.8 w 72 665 m 400 665 l S\n"  # top rule
    if spanning_header:
        content += drawn(230, 652, "mAP (%)", size=9)
        content += b"0.4 w 225 647 m 400 647 l S\n"  # cmidrule under the spanning header
    y = 635
    for n, row in enumerate(BOOKTABS_ROWS):
        font = BOLD if n == 0 else BODY
        content += b"".join(drawn(x, y, cell, font, 9) for x, cell in zip(columns, row, strict=True))
        if n == 0:
            content += b"0.4 w 72 %.1f m 400 %.1f l S\n" % (y - 5, y - 5)  # midrule
        y -= 14
    content += b"0.8 w 72 %.1f m 400 %.1f l S\n" % (y + 8, y + 8)  # bottom rule
    content += drawn(72, y - 20, "Larger models gain most on tables and figures.")
    rows = "\n".join(["| " + " | ".join(BOOKTABS_ROWS[0]) + " |", "| --- | --- | --- | --- | --- |",
                      *("| " + " | ".join(row) + " |" for row in BOOKTABS_ROWS[1:])])
    header = "mAP (%)\n\n" if spanning_header else ""
    markdown = f"{BOOKTABS_CAPTION}\n\n{header}{rows}\n\nLarger models gain most on tables and figures.\n"
    return text_pdf(content, fonts=FONTS), markdown


NARROW_COLUMNS = (
    (
        "A newsletter sets its",
        "text in three narrow",
        "columns, each under a",
        "quarter of the page wide,",
        "so that a reader's eye",
        "has only a short way to",
        "travel from the end of",
        "one line to the start of",
        "the next one below it.",
    ),
    (
        "The second column goes",
        "on where the first one",
        "stopped, at the top of",
        "the page again; its lines",
        "line up with the first",
        "column's lines, row for",
        "row, which is just what",
        "a table's rows would do",
        "if this were a table.",
    ),
    (
        "The third column ends",
        "the article. Read across,",
        "the rows would mix three",
        "sentences into nonsense,",
        "and a table made of",
        "them would hold nothing",
        "a reader could use, so",
        "the page must be read",
        "one column at a time.",
    ),
)


def three_column_page() -> tuple[bytes, str]:
    """Three columns of running text, each narrower than a quarter of the page, their rows aligned."""
    content = b"".join(drawn(50 + 180 * k, 650 - 12 * n, line, size=9)
                       for k, column in enumerate(NARROW_COLUMNS) for n, line in enumerate(column))
    return text_pdf(content, fonts=FONTS), "\n\n".join(" ".join(column) for column in NARROW_COLUMNS) + "\n"


COVER_TITLE = ("IBM i 7.1", "Security", "Reference")
COVER_BLURB = ("This guide describes how the operating system protects its objects and data, how an administrator "
               "plans security for a new system, and how the audit journal records what users did. It covers "
               "profiles, authorities, exit programs and the tools that report on them, with examples taken "
               "from the installations of several customers.")
COVER_SIDEBAR = (("INTERNATIONAL", "TECHNICAL", "SUPPORT", "ORGANIZATION"),
                 ("BUILDING TECHNICAL", "INFORMATION BASED ON", "PRACTICAL EXPERIENCE"))


def back_cover_page() -> tuple[bytes, str]:
    """A technical book's back cover: the title large on the left, the blurb in the middle, a sidebar of short
    capitals on the right in another size, the book's numbers at the foot. Read across, its rows made a
    three-column table."""
    import textwrap

    content = b"".join(drawn(40, 700 - 22 * n, line, BOLD, 18) for n, line in enumerate(COVER_TITLE))
    blurb = textwrap.wrap(COVER_BLURB, 48)
    content += b"".join(drawn(200, 700 - 12 * n, line, BODY, 9) for n, line in enumerate(blurb))
    sidebar = [*COVER_SIDEBAR[0], "", *COVER_SIDEBAR[1]]
    content += b"".join(drawn(450, 700 - 12 * n, line, BOLD, 8) for n, line in enumerate(sidebar) if line)
    content += drawn(40, 150, "SG24-7777-00", BODY, 9) + drawn(450, 150, "ISBN 0738434000", BODY, 9)
    markdown = "\n\n".join([f"## {' '.join(COVER_TITLE)}", COVER_BLURB, *(" ".join(part) for part in COVER_SIDEBAR),
                             "SG24-7777-00 ISBN 0738434000"])
    return text_pdf(content, fonts=FONTS), markdown + "\n"


LISTING = ("def mean(values):", "    total = sum(values)", "    return total / len(values)")


def listing_page() -> tuple[bytes, str]:
    """A sentence, a caption and a Courier listing drawn a token at a time (as TeX's listings package does)."""
    content = drawn(72, 680, "The function below returns the mean of a list of numbers it is given.")
    content += drawn(72, 655, "Listing 2: The mean of a list")
    for n, line in enumerate(LISTING):
        column = len(line) - len(line.lstrip())
        for token in line.split():
            content += drawn(72 + 6 * column, 630 - 12 * n, token, MONO, 10)  # Courier advances 0.6 em
            column += len(token) + 1
    content += drawn(72, 580, "The list must not be empty.")
    markdown = ("The function below returns the mean of a list of numbers it is given.\n\n"
                "Listing 2: The mean of a list\n\n```\n" + "\n".join(LISTING) + "\n```\n\n"
                "The list must not be empty.\n")
    return text_pdf(content, fonts=FONTS), markdown


GENERATED = {"ruled table, wrapped cells": wrapped_table_page,
             "rows ruled, columns not": lambda: wrapped_table_page(columns_ruled=False),
             "two columns of text": two_column_page,
             "three narrow columns": three_column_page, "booktabs table": booktabs_table_page,
             "booktabs, no spanning header": lambda: booktabs_table_page(spanning_header=False),
             "back cover": back_cover_page,
             "listing in Courier": listing_page}
