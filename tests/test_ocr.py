"""Real OCR (RapidOCR's shipped models) on real pages; PDFs by text layer or OCR; bad documents."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from loupe.core.errors import InputRejected
from loupe.core.ocr.document import read_document
from loupe.core.ocr.pdf import PDFError
from loupe.core.ocr.pipeline import PageReader
from loupe.core.ocr.rapid import RapidOCREngine

DATA = Path(__file__).parents[1] / "data"
RECEIPT = DATA / "samples" / "sroie_receipt_275.jpg"
SENTENCE = "Docling bundles PDF document conversion to JSON and Markdown in an easy self contained package"


@pytest.fixture(scope="module")
def reader() -> PageReader:
    return PageReader(RapidOCREngine())


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_real_receipt_reads_with_boxes_in_reading_order(reader):
    (page,) = read_document(RECEIPT.read_bytes(), reader)
    text = page.text.upper()
    for expected in ("SPEED", "JALAN ANGSA", "41150 KLANG, SELANGOR", "11.50", "THANK YOU"):
        assert expected in text
    assert page.source == "ocr" and page.rotation == 0 and (page.width, page.height) == Image.open(RECEIPT).size
    for line in page.lines:
        x0, y0, x1, y1 = line.box
        assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height and 0 < line.confidence <= 1
    tops = [ln.box[1] for ln in page.lines]
    assert tops.index(min(tops)) == 0  # the top line comes first
    assert page.text.index("JALAN ANGSA") < page.text.index("Thank You")


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_turned_receipts_are_put_upright(reader, turn):
    turned = Image.open(RECEIPT).convert("RGB").rotate(turn, expand=True)
    (page,) = read_document(_png(turned), reader)
    assert (page.rotation + turn) % 360 == 0
    assert "41150 KLANG, SELANGOR" in page.text.upper()


@pytest.mark.parametrize("name", ["ocr_test.pdf", "ocr_test_rotated_90.pdf"])
def test_scanned_pdf_pages_go_through_ocr_upright(reader, name):
    (page,) = read_document((DATA / "documents" / name).read_bytes(), reader)
    assert page.source == "ocr" and _flat(page.text) == SENTENCE


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_sparse_scanned_page_at_any_turn_is_read_upright_and_in_order(reader, turn):
    """Three lines on a white page: the orientation classifier calls it upright when it is upside down (read so,
    the lines are confident garbage); the page is read turned over too, and the better reading kept."""
    scan = pdfium.PdfDocument(str(DATA / "documents" / "ocr_test.pdf"))[0].render(scale=2).to_pil().convert("RGB")
    (page,) = read_document(_png(scan.rotate(turn, expand=True)), reader)
    assert (page.rotation + turn) % 360 == 0 and _flat(page.text) == SENTENCE


@pytest.mark.parametrize("copy", [
    b"3 Tr /F1 17.5 Tf 72.8 700.6 Td",  # an invisible OCR layer of another size over the visible text
    b"/F1 18 Tf 73.2 701.1 Td",  # fake bold: the same text again, a point off
])
def test_text_a_pdf_draws_twice_is_read_once(copy):
    """pdfium reads both copies into each run's rectangle ("ENFORCED FOR ALL ACCESS ENFORCED FOR ALL ACCESS",
    twice); the text is kept once. A phrase that repeats a word, alone in its run, is left as written."""
    from loupe.apps.pdf_bytes import text_pdf
    from loupe.core.ocr.pdf import read_pdf

    content = (b"BT /F1 18 Tf 72 700 Td (ENFORCED FOR ALL ACCESS) Tj ET BT " + copy + b" (ENFORCED FOR ALL ACCESS) "
               b"Tj ET BT /F1 12 Tf 72 600 Td (Flights to Bora Bora) Tj ET")
    (page,), _, _ = read_pdf(text_pdf(content), None)
    assert page.source == "text-layer" and [ln.text for ln in page.lines] == ["ENFORCED FOR ALL ACCESS",
                                                                            "Flights to Bora Bora"]


def test_text_layer_is_used_where_a_page_has_one(reader):
    pages = read_document((DATA / "documents" / "multi_page.pdf").read_bytes(), reader, pages=[1, 2])
    assert [p.number for p in pages] == [1, 2] and {p.source for p in pages} == {"text-layer"}
    assert pages[0].lines[0].text == "The Evolution of the Word Processor"
    assert "Pre-Digital Era" in pages[0].text  # runs split at font changes are joined into one line


def test_a_mixed_pdf_is_read_page_by_page(reader):
    mixed = pdfium.PdfDocument.new()
    mixed.import_pages(pdfium.PdfDocument(str(DATA / "documents" / "multi_page.pdf")), [0])
    mixed.import_pages(pdfium.PdfDocument(str(DATA / "documents" / "ocr_test.pdf")), [0])
    out = io.BytesIO()
    mixed.save(out)
    seen = []
    pages = read_document(out.getvalue(), reader, progress=lambda done, total: seen.append((done, total)))
    assert [p.source for p in pages] == ["text-layer", "ocr"]
    assert _flat(pages[1].text) == SENTENCE and seen == [(1, 2), (2, 2)]


def test_an_image_without_text_gives_an_empty_page(reader):
    (page,) = read_document(_png(Image.new("RGB", (400, 300), "white")), reader)
    assert page.lines == [] and page.text == ""


def _encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(DATA / "documents" / "ocr_test.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _empty_pdf() -> bytes:
    out = io.BytesIO()
    pdfium.PdfDocument.new().save(out)
    return out.getvalue()


@pytest.mark.parametrize(("make", "message"), [
    (_encrypted_pdf, "password-protected"),
    (_empty_pdf, "has no pages"),
    (lambda: (DATA / "documents" / "multi_page.pdf").read_bytes()[:5000], "not a readable PDF"),
    (lambda: b"%PDF-1.7 this is not a PDF at all", "not a readable PDF"),
    (lambda: b"neither an image nor a PDF", "neither a PDF nor a page image"),
])
def test_bad_documents_get_one_clear_message(reader, make, message):
    with pytest.raises(InputRejected, match=message):
        read_document(make(), reader)


def test_pages_outside_the_document_are_refused(reader):
    with pytest.raises(PDFError, match="has 5 pages; there is no page 9"):
        read_document((DATA / "documents" / "multi_page.pdf").read_bytes(), reader, pages=[9])


def test_tesseract_reads_a_scanned_page():
    import shutil

    from conftest import missing_service

    from loupe.core.ocr.engines import TesseractEngine

    if shutil.which("tesseract") is None:
        missing_service("Tesseract (apt-get install tesseract-ocr)")
    scan = (DATA / "documents" / "ocr_test.pdf").read_bytes()
    (page,) = read_document(scan, PageReader(TesseractEngine(), orientation=False))
    assert page.engine == "tesseract" and _flat(page.text) == SENTENCE
    assert all(0 <= ln.confidence <= 1 and ln.words for ln in page.lines)


def test_engines_that_cannot_run_say_what_to_do(monkeypatch):
    from loupe.core.ocr.base import OCRUnavailable
    from loupe.core.ocr.engines import make_engine

    monkeypatch.delenv("LOUPE_PADDLEOCR_DET_DIR", raising=False)
    with pytest.raises(OCRUnavailable, match="LOUPE_PADDLEOCR_DET_DIR"):
        make_engine("paddleocr")  # never downloads models at run time
    with pytest.raises(OCRUnavailable, match="unknown OCR engine"):
        make_engine("nonesuch")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OCRUnavailable, match="apt-get install tesseract-ocr"):
        make_engine("tesseract")


def test_text_regions_of_an_image_come_with_text_and_confidence():
    from loupe.core.ocr.regions import find_text_regions

    receipt = Image.open(RECEIPT)
    regions = find_text_regions(receipt.convert("L"))  # greyscale, as a radiograph would be
    assert any("KLANG" in r.text.upper() for r in regions)
    assert [r.confidence for r in regions] == sorted((r.confidence for r in regions), reverse=True)
    assert all(r.confidence >= 0.5 and 0 <= r.box[0] < r.box[2] <= receipt.width for r in regions)
    assert find_text_regions(Image.new("L", (256, 256), 0)) == []


def test_small_text_on_a_large_radiograph_is_found_in_tiles():
    from PIL import ImageDraw, ImageFont

    from loupe.core.ocr.regions import find_text_regions

    frame = Image.new("L", (2048, 2048), 20)  # 24-px text: scaled to the detector's 1280 px it is lost
    ImageDraw.Draw(frame).text((1500, 1300), "DOE^JOHN 1960-01-01", fill=230, font=ImageFont.load_default(size=24))
    (region,) = find_text_regions(frame)
    assert region.text.startswith("DOE^JOHN") and 1480 < region.box[0] < 1510 and 1290 < region.box[1] < 1310
