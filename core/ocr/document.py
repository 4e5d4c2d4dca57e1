"""Any document file → pages read upright with lines in reading order (PDF, PNG, JPEG, TIFF).

Every page's size is known before it is decoded (a PDF's page box, a TIFF's directories), and checked
against the budgets (:class:`~loupe.core.budgets.Budgets`, from the environment unless given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from PIL import Image

from ..budgets import Budgets
from ..errors import InputRejected
from ..images import check_before_decoding, open_bounded
from .base import Page
from .pdf import read_pdf
from .pipeline import PageReader

PDF_MAGIC = b"%PDF-"


def is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip()[:5] == PDF_MAGIC


@dataclass
class ReadDocument:
    pages: list[Page]
    images: list  # each page upright as it was read (only when asked for; through ``convert`` when given)
    total_pages: int  # in the file, read or not
    reduced: dict[int, float] = field(default_factory=dict)  # page → dpi, for PDF pages too large for the dpi


def open_document(data: bytes, reader: PageReader, pages: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int | None = None,
                  keep_images: bool = False, max_pages: int | None = None, budgets: Budgets | None = None,
                  convert: Callable[[Image.Image], object] | None = None) -> ReadDocument:
    """Read a document's pages (1-based ``pages``; else the first ``max_pages``; else all): a PDF's text
    layer where it has one, OCR elsewhere. Raises ``InputRejected`` (``PDFError``, ``BudgetExceeded``) with
    a message for the user. Pages are opened one at a time: a long file is never loaded whole, and with
    ``convert`` each kept page image is converted (e.g. to PNG bytes) as soon as it is read.

    ``budgets`` defaults to the environment's; ``max_pixels`` (older callers) overrides its pixel limit."""
    budgets = budgets or Budgets.from_env()
    if max_pixels is not None:
        budgets = replace(budgets, max_pixels=max_pixels)
    if is_pdf(data):
        budgets.check("max_bytes", len(data), "The file")
        reduced: dict[int, float] = {}
        read, images, total = read_pdf(data, reader.read, pages, progress=progress, keep_images=keep_images,
                                       max_pages=max_pages, budgets=budgets, convert=convert, reduced=reduced)
        return ReadDocument(read, images, total, reduced)
    tiff_pages = check_before_decoding(data, budgets, read=_read_count(pages, max_pages))
    try:
        image = open_bounded(data, budgets.max_bytes, budgets.max_pixels)
    except InputRejected as exc:
        if str(exc).startswith("The file is not an image"):
            raise InputRejected("The file is neither a PDF nor a page image Loupe can read "
                                "(PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
        raise
    total = len(tiff_pages) if tiff_pages else getattr(image, "n_frames", 1)  # a multi-page TIFF: read one by one
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
            upright = frame.rotate(page.rotation, expand=True) if page.rotation else frame
            kept.append(convert(upright) if convert else upright)
        if progress:
            progress(done, len(wanted))
    return ReadDocument(out, kept, total)


def _read_count(pages: Sequence[int] | None, max_pages: int | None) -> int | None:
    """How many leading pages will be read (None: all), for the work budget."""
    if pages is not None:
        return max(pages, default=0)
    return max_pages


def read_document(data: bytes, reader: PageReader, pages: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None, max_pixels: int | None = None,
                  budgets: Budgets | None = None) -> list[Page]:
    return open_document(data, reader, pages, progress, max_pixels, budgets=budgets).pages
