"""Any document file → pages read upright with lines in reading order (PDF, PNG, JPEG, TIFF)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

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


@dataclass
class ReadDocument:
    pages: list[Page]
    images: list[Image.Image]  # each page upright as it was read (only when asked for)
    total_pages: int  # in the file, read or not


def open_document(data: bytes, reader: PageReader, pages: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int = MAX_PIXELS,
                  keep_images: bool = False, max_pages: int | None = None) -> ReadDocument:
    """Read a document's pages (1-based ``pages``; else the first ``max_pages``; else all): a PDF's text
    layer where it has one, OCR elsewhere. Raises ``InputRejected`` (``PDFError``) with a message for
    the user. Pages are opened one at a time: a long file is never loaded whole."""
    if is_pdf(data):
        read, images, total = read_pdf(data, reader.read, pages, progress=progress, keep_images=keep_images,
                                       max_pages=max_pages)
        return ReadDocument(read, images, total)
    try:
        image = open_bounded(data, MAX_BYTES, max_pixels)
    except InputRejected as exc:
        if str(exc).startswith("The file is not an image"):
            raise InputRejected("The file is neither a PDF nor a page image Loupe can read "
                                "(PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
        raise
    total = getattr(image, "n_frames", 1)  # a multi-page TIFF: one page per frame, read one at a time
    wanted = list(pages) if pages is not None else list(range(1, min(total, max_pages or total) + 1))
    out, kept = [], []
    for done, number in enumerate(wanted, 1):
        if not 1 <= number <= total:
            raise InputRejected(f"This file has {total} page(s); there is no page {number}.")
        image.seek(number - 1)
        frame = image.convert("RGB")
        page = reader.read(frame, number)
        out.append(page)
        if keep_images:
            kept.append(frame.rotate(page.rotation, expand=True) if page.rotation else frame)
        if progress:
            progress(done, len(wanted))
    return ReadDocument(out, kept, total)


def read_document(data: bytes, reader: PageReader, pages: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int = MAX_PIXELS) -> list[Page]:
    return open_document(data, reader, pages, progress, max_pixels).pages
