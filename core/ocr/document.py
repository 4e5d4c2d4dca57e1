"""Any document file → pages read upright with lines in reading order (PDF, PNG, JPEG, TIFF)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import InputRejected
from ..images import open_bounded
from .base import Page
from .pdf import read_pdf
from .pipeline import PageReader

PDF_MAGIC = b"%PDF-"
MAX_BYTES = 200 * 2**20
MAX_PIXELS = 89_478_485


def is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip()[:5] == PDF_MAGIC


def read_document(data: bytes, reader: PageReader, pages: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int = MAX_PIXELS) -> list[Page]:
    """Read a document's pages (1-based ``pages``; all by default): a PDF's text layer where it has one,
    OCR elsewhere. Raises ``PDFError`` or ``InputRejected`` with a message for the user."""
    if is_pdf(data):
        return read_pdf(data, reader.read, pages, progress=progress)
    image = open_bounded(data, MAX_BYTES, max_pixels)
    count = getattr(image, "n_frames", 1)  # a multi-page TIFF: one page per frame, read one at a time
    wanted = list(pages) if pages is not None else list(range(1, count + 1))
    out = []
    for done, number in enumerate(wanted, 1):
        if not 1 <= number <= count:
            raise InputRejected(f"This file has {count} page(s); there is no page {number}.")
        image.seek(number - 1)
        out.append(reader.read(image.convert("RGB"), number))
        if progress:
            progress(done, len(wanted))
    return out
