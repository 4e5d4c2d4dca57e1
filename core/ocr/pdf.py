"""PDFs through pypdfium2: a page's own text layer where it has one, OCR of the rendered page where not.

Pages are opened one at a time, so a 2,000-page file is never loaded whole; ``pages`` limits which are
read. Boxes are in pixels of the page rendered at ``dpi``, like OCR boxes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from ..errors import InputRejected
from .base import Line, Page, Word
from .layout import merge_runs, reading_order

DPI = 150  # the PDF user unit is 1/72 inch
MIN_LAYER_CHARS = 8  # fewer characters than this on a page: treat it as scanned


class PDFError(InputRejected):
    """A PDF that cannot be read; the message says why in the user's terms."""


@contextmanager
def open_pdf(source: bytes | Path) -> Iterator[object]:
    import pypdfium2 as pdfium

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        raise PDFError(_why_unreadable(data)) from None
    try:
        if len(document) == 0:
            raise PDFError("This PDF has no pages.")
        yield document
    finally:
        document.close()


def _why_unreadable(data: bytes) -> str:
    """PDFium's error code can be stale after an earlier failure, so the reason is read with pypdf."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            return "This PDF is password-protected; remove the password and upload it again."
        if len(reader.pages) == 0:
            return "This PDF has no pages."
    except (PyPdfError, ValueError, KeyError, OSError):
        pass
    return "This file is not a readable PDF (it may be damaged or incomplete)."


def _layer_lines(page: object, scale: float, height_pt: float) -> list[Line]:
    """The page's text runs with their rectangles (pdfium groups characters into runs per line)."""
    textpage = page.get_textpage()
    try:
        lines = []
        for index in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(index)
            text = re.sub(r"\s+", " ", textpage.get_text_bounded(left, bottom, right, top)).strip()
            if not text:
                continue
            box = (left * scale, (height_pt - top) * scale, right * scale, (height_pt - bottom) * scale)
            lines.append(Line(text, box, 1.0, tuple(_words(text, box))))
        return lines
    finally:
        textpage.close()


def _words(text: str, box: tuple[float, float, float, float]) -> Iterator[Word]:
    """Word boxes spread over the run in proportion to characters (runs are single-font, so close)."""
    per_char = (box[2] - box[0]) / max(len(text), 1)
    for match in re.finditer(r"\S+", text):
        x0 = box[0] + match.start() * per_char
        yield Word(match.group(), (x0, box[1], x0 + len(match.group()) * per_char, box[3]), 1.0)


def render(page: object, dpi: int = DPI) -> Image.Image:
    return page.render(scale=dpi / 72).to_pil().convert("RGB")


def read_pdf(source: bytes | Path, ocr: Callable[[Image.Image, int], Page] | None, pages: Sequence[int] | None = None,
             dpi: int = DPI, progress: Callable[[int, int], None] | None = None, keep_images: bool = False,
             max_pages: int | None = None) -> tuple[list[Page], list[Image.Image], int]:
    """Read ``pages`` (1-based; else the first ``max_pages``, else all) of a PDF. Pages without a text
    layer go to ``ocr`` (page image, page number) when given, else come back empty with
    ``source="scanned"``. Returns the pages, their rendered images (with ``keep_images``) and the
    document's page count."""
    scale = dpi / 72
    out, images = [], []
    with open_pdf(source) as document:
        total = len(document)
        wanted = list(pages) if pages is not None else list(range(1, min(total, max_pages or total) + 1))
        for done, number in enumerate(wanted, 1):
            if not 1 <= number <= total:
                raise PDFError(f"This PDF has {total} pages; there is no page {number}.")
            page = document[number - 1]
            try:
                width_pt, height_pt = page.get_size()
                lines = merge_runs(_layer_lines(page, scale, height_pt))
                image = render(page, dpi) if keep_images or ocr is not None else None
                if sum(len(ln.text) for ln in lines) >= MIN_LAYER_CHARS:
                    read = Page(number, round(width_pt * scale), round(height_pt * scale), reading_order(lines),
                                source="text-layer", engine="pdfium")
                elif ocr is not None:
                    read = ocr(image, number)
                    read.source = "ocr"
                    if read.rotation and keep_images:
                        image = image.rotate(read.rotation, expand=True)  # shown as it was read
                else:
                    read = Page(number, round(width_pt * scale), round(height_pt * scale), source="scanned")
                out.append(read)
                if keep_images:
                    images.append(image)
            finally:
                page.close()
            if progress:
                progress(done, len(wanted))
    return out, images, total
