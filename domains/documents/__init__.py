"""The ``documents`` domain: PDFs and page images, read with OCR (or the PDF's own text) and answered
from a small page image plus the page text, so fine print does not need a high-resolution encode."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from loupe.core.errors import InputRejected
from loupe.core.images import pixels_only_png
from loupe.core.ingest_io import read_whole
from loupe.core.ocr.citations import cite as quoted_lines
from loupe.core.ocr.document import is_pdf, open_document
from loupe.core.ocr.export import grid_box, to_json, to_markdown, to_prompt
from loupe.core.ocr.pdf import DPI
from loupe.core.ocr.retrieval import pick_pages
from loupe.core.plugins import Budgets, DomainTab, IngestedAsset, VisualContext

from .fields import fields_with_confidence
from .pages import page_from_meta, page_meta
from .viewer import pages_html

PAGES_PER_QUESTION = 3  # pages the model sees for one question, picked by BM25 over their text
PROMPT_TOKENS = 1500  # OCR text budget in the prompt
PROMPTS = ("What is the total amount, and on which page is it?", "Summarise this document in three sentences.",
           "List every date in the document with what it refers to.", "Who issued this document, and to whom?")


@functools.cache
def _reader():  # noqa: ANN202 - one PageReader (ONNX sessions load once per process)
    from loupe.core.ocr.pipeline import PageReader
    from loupe.core.ocr.rapid import RapidOCREngine

    return PageReader(RapidOCREngine())


class _LazyReader:
    """The OCR reader, loaded when a page first needs OCR: a refusal or a PDF with a text layer never loads it."""

    def read(self, image: Image.Image, number: int = 1):  # noqa: ANN201 - a Page
        return _reader().read(image, number)


def _stored(image: Image.Image) -> tuple[bytes, int, int]:
    """A read page as stored: a PNG of its pixels only (no metadata of the file survives), and its size."""
    return pixels_only_png(image), image.width, image.height


class DocumentsDomain:
    name = "documents"
    title = "Documents"
    accepts = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
    system_prompt = ("You read documents. Answer from the document's text and page images, quote the words you "
                     "relied on with their page number, and say so when the document does not contain the answer.")
    default_detail = "low"  # the page text comes from OCR: one small view of each page is enough
    export_formats = {"md": "text/markdown; charset=utf-8", "json": "application/json"}

    def ingest(self, source: Path | BinaryIO, limits: Budgets,
               progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        data = read_whole(source, limits)
        if not data:
            raise InputRejected("The file is empty (0 bytes).")
        # Pages beyond limits.max_pages are not read (the note says so); each page is stored as a PNG as soon as
        # it is read, so a long document never holds all its pages decoded.
        doc = open_document(data, _LazyReader(), keep_images=True, max_pages=limits.max_pages, budgets=limits,
                            progress=progress, convert=_stored)
        kind = "PDF" if is_pdf(data) else "image"
        assets = []
        for page, (stored, width, height) in zip(doc.pages, doc.images, strict=True):
            meta: dict[str, object] = {"page": page.number, "ocr": page_meta(page), "format": kind}
            if page.number in doc.reduced:
                meta["rendered_dpi"] = round(doc.reduced[page.number], 1)
                meta["note"] = (f"Page {page.number} is very large (a poster or a map?): it is shown at "
                                f"{doc.reduced[page.number]:.0f} dpi instead of {DPI}, to stay within the "
                                f"{limits.max_pixels / 1e6:.1f} megapixels one page may have (LOUPE_MAX_IMAGE_PIXELS).")
            assets.append(IngestedAsset(stored, "image/png", width, height, meta))
        if assets:  # receipts and invoices: who, when, where, how much (rules over the first page's lines)
            with_confidence = fields_with_confidence(doc.pages[0])
            assets[0].meta["fields"] = {name: f["value"] for name, f in with_confidence.items()}
            assets[0].meta["fields_confidence"] = {name: f["confidence"] for name, f in with_confidence.items()}
        notes = []
        if doc.total_pages > len(assets):
            notes.append(f"Only the first {len(assets)} of {doc.total_pages} pages are kept; "
                         "split the file to ask about the rest.")
        if not any(asset.meta["ocr"]["lines"] for asset in assets):
            notes.append("No text was found on these pages; answers rely on the page images alone.")
        if notes:
            assets[0].meta["note"] = " ".join([*notes, str(assets[0].meta.get("note", ""))]).strip()
        return assets

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        pages = [page_from_meta(a.meta) for a in assets]
        chosen = pick_pages([p.text for p in pages], question, PAGES_PER_QUESTION)
        text, complete = to_prompt([pages[i] for i in chosen], PROMPT_TOKENS)
        numbers = [pages[i].number for i in chosen]
        pages_named = f"page{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} of {len(pages)}"
        header = (f"Document text, {pages_named}; each line starts with its box [left,top,right,bottom] on a "
                  f"0-1000 page grid{'' if complete else ' (cut to fit)'}:")
        images = [Image.open(io.BytesIO(assets[i].data)).convert("RGB") for i in chosen]
        # lines are stored in reading order
        layout = [(line.text, grid_box(line.box, pages[i])) for i in chosen for line in pages[i].lines]
        return VisualContext(images=images, extra_text=f"{header}\n{text}\n\nQuestion:",
                             meta={"pages_read": numbers, "pages_in_case": len(pages)}, layout=layout,
                             query_text=f"Document {pages_named}; its text is given in the reading tokens above."
                                        "\n\nQuestion:")

    def export(self, assets: Sequence[IngestedAsset], name: str, answers: Sequence[dict] = ()) -> bytes:
        pages = [page_from_meta(a.meta) for a in assets]
        if name == "md":
            return to_markdown(pages).encode()
        if name == "json":  # with the key fields the viewer shows, each with its confidence
            first = assets[0].meta if assets else {}
            fields = {field: {"value": value, "confidence": (first.get("fields_confidence") or {}).get(field)}
                      for field, value in (first.get("fields") or {}).items()}
            return json.dumps({**to_json(pages), "fields": fields}, ensure_ascii=False, indent=1).encode()
        raise KeyError(name)

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict) -> list[dict]:
        """Lines of the pages read for the answer that it quotes (core/ocr/citations.py)."""
        read = set(context_meta.get("pages_read", ()))
        lines = [(page.number, line) for page in map(page_from_meta, (a.meta for a in assets))
                 if page.number in read for line in page.lines]
        return [c.as_dict() for c in quoted_lines(answer, lines)]

    def build_tab(self, tab: DomainTab) -> None:
        tab.set_viewer(pages_html)
        tab.add_prompts(PROMPTS)
