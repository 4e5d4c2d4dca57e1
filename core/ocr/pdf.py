"""PDFs through pypdfium2: a page's own text layer where it has one, OCR of the rendered page where not.

Pages are opened one at a time, so a 2,000-page file is never loaded whole; ``pages`` limits which are
read. Boxes are in pixels of the page as rendered, like OCR boxes: at ``dpi``, or at a lower resolution
for a page so large (a poster, a map) that ``dpi`` would give more than the pixel budget. Every page's
size is known from its box before it is rendered, so the budgets are checked first.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from ..budgets import Budgets
from ..errors import InputRejected
from .base import Line, Page, Word, overlap_share
from .layout import merge_runs, reading_order
from .tables import RuledTables

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
    """The page's text runs with their rectangles (pdfium groups characters into runs per line). Text a PDF
    draws twice at nearly the same place (a visible line and an invisible copy of another size: an OCR layer,
    fake bold) is kept once: pdfium reads both copies into each run's rectangle. A hyphen pdfium judges to
    break a word at the line's end becomes a soft hyphen (U+00AD), so the word can be joined again."""
    textpage = page.get_textpage()
    try:
        rects = [textpage.get_rect(index) for index in range(textpage.count_rects())]
        lines: list[Line] = []
        for index, (text, (left, bottom, right, top), size, mono) in enumerate(_runs(textpage, rects)):
            text = re.sub(r"\s+", " ", text).strip().translate(BREAK_HYPHENS)
            nearby = rects[max(0, index - OVERDRAW_LOOKBACK):index] + rects[index + 1:index + 1 + OVERDRAW_LOOKBACK]
            if any(overlap_share(rects[index], other) > OVERDRAWN for other in nearby):  # drawn twice here ("Bora Bora"
                text = _undoubled(text)  # alone in its rectangle is left as it is)
            if not text:
                continue
            box = (left * scale, (height_pt - top) * scale, right * scale, (height_pt - bottom) * scale)
            if any(_same_words(kept.text, text) and overlap_share(kept.box, box) > OVERDRAWN
                   for kept in lines[-OVERDRAW_LOOKBACK:]):
                continue  # the second copy of a run already read
            lines.append(Line(text, box, 1.0, tuple(_words(text, box)), mono=mono, size=size * scale))
        return lines
    finally:
        textpage.close()


def _runs(textpage: object, rects: list[tuple[float, float, float, float]]) -> list[tuple[str, tuple, float, bool]]:
    """Each run's characters, the box of its ink (its rectangle less the spaces at its ends, so the gap to the
    next run shows whether a space stood between them), the font size of its first letter (points) and whether
    it is set in a fixed-pitch font.

    pdfium makes its runs walking the characters in order, so the walk gives each character to one run;
    asking for the text inside each run's rectangle instead gave a glyph that reaches into the next run
    (joined Arabic letters overlap) to both ("بلغةة"), and a dash's neighbour twice ("content—t—an"). Two
    characters pdfium gives one glyph box, alef before lam, are a lam-alef ligature its font maps in visual
    order: read lam first."""
    import pypdfium2.raw as raw

    texts: list[list[str]] = [[] for _ in rects]
    boxes: list[list[tuple[float, float, float, float]]] = [[] for _ in rects]
    letters: list[list[int]] = [[] for _ in rects]  # the indices of each run's characters other than spaces
    run = 0
    for index in range(textpage.count_chars()):
        char = chr(raw.FPDFText_GetUnicode(textpage.raw, index))
        if char in "\r\n" or not rects:
            continue
        box = textpage.get_charbox(index)
        x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        run = next((k for k in range(run, min(run + RUN_LOOKAHEAD, len(rects))) if _holds(rects[k], x, y)), run)
        if texts[run] and char == LAM and texts[run][-1] in ALEFS and boxes[run][-1] == box:
            texts[run].insert(len(texts[run]) - 1, char)
        else:
            texts[run].append(char)
        boxes[run].append(box)
        if not char.isspace():
            letters[run].append(index)
    out = []
    for rect, chars, char_boxes, indices in zip(rects, texts, boxes, letters, strict=True):
        ink = [box for char, box in zip(chars, char_boxes, strict=True) if not char.isspace() and box[2] > box[0]]
        out.append(("".join(chars), (min(b[0] for b in ink), rect[1], max(b[2] for b in ink), rect[3]) if ink
                    else rect, _font_size(textpage, indices[0]) if indices else 0.0, _fixed_pitch(textpage, indices)))
    return out


def _font_size(textpage: object, index: int) -> float:
    """A character's font size as drawn (points): the font's size times the scale of its text matrix (many
    writers set every font at 1 pt and scale it with the matrix)."""
    import ctypes
    import math

    import pypdfium2.raw as raw

    matrix = raw.FS_MATRIX()
    size = raw.FPDFText_GetFontSize(textpage.raw, index)
    if not raw.FPDFText_GetMatrix(textpage.raw, index, ctypes.byref(matrix)):
        return size
    return size * math.sqrt(abs(matrix.a * matrix.d - matrix.b * matrix.c))


RUN_LOOKAHEAD = 4  # runs ahead a character's run is looked for (the walk never goes back)
LAM, ALEFS = "\u0644", "\u0627\u0623\u0625\u0622"


def _holds(rect: tuple[float, float, float, float], x: float, y: float, margin: float = 1.0) -> bool:
    left, bottom, right, top = rect
    return left - margin <= x <= right + margin and bottom - margin <= y <= top + margin


BREAK_HYPHENS = str.maketrans({"\x02": "\u00ad", "\ufffe": "\u00ad"})  # pdfium's marks for a line-end hyphen
# Typewriter faces by name, for the many embedded fonts whose descriptor leaves the FixedPitch flag unset
# (TeX's CMTT, for one).
MONO_FONT = re.compile(r"mono|courier|consol|menlo|cmtt|lmtt|typewriter|inconsolata|code|fixed|lucidaconsole",
                       re.IGNORECASE)
FIXED_PITCH_FLAG = 1  # PDF font descriptor flag bit 1


def _fixed_pitch(textpage: object, indices: list[int]) -> bool:
    """Whether most of up to five characters spread over a run (their indices) are set in a fixed-pitch font."""
    import ctypes

    import pypdfium2.raw as raw

    if not indices:
        return False
    name, flags = ctypes.create_string_buffer(128), ctypes.c_int(0)
    sample = indices[::max(1, len(indices) // 5)][:5]
    votes = 0
    for index in sample:
        if raw.FPDFText_GetFontInfo(textpage.raw, index, name, len(name), ctypes.byref(flags)):
            votes += bool(flags.value & FIXED_PITCH_FLAG) or bool(MONO_FONT.search(name.value.decode("latin-1")))
    return votes > len(sample) / 2


OVERDRAWN = 0.6  # of the smaller box: two runs of the same text sharing this much are one run drawn twice
OVERDRAW_LOOKBACK = 8  # runs back a copy is looked for (copies are drawn next to each other)


def _same_words(a: str, b: str) -> bool:
    """The same words, whatever the punctuation around them (one copy's final stop may fall outside a run)."""
    return re.sub(r"[\W_]+", " ", a).split() == re.sub(r"[\W_]+", " ", b).split()


def _undoubled(text: str) -> str:
    """``text`` once where it is the same text twice ("A B A B." or "ABAB"): both copies in one rectangle; of
    two copies that differ in punctuation, the longer."""
    tokens = text.split(" ")
    half, rest = divmod(len(tokens), 2)
    if half and not rest and _same_words(" ".join(tokens[:half]), " ".join(tokens[half:])):
        return max(" ".join(tokens[:half]), " ".join(tokens[half:]), key=len)
    half, rest = divmod(len(text), 2)
    if half and not rest and text[:half] == text[half:]:
        return text[:half]
    return text


def _words(text: str, box: tuple[float, float, float, float]) -> Iterator[Word]:
    """Word boxes spread over the run in proportion to characters (runs are single-font, so close)."""
    per_char = (box[2] - box[0]) / max(len(text), 1)
    for match in re.finditer(r"\S+", text):
        x0 = box[0] + match.start() * per_char
        yield Word(match.group(), (x0, box[1], x0 + len(match.group()) * per_char, box[3]), 1.0)


def rendered_size(width_pt: float, height_pt: float, scale: float) -> tuple[int, int]:
    """The bitmap PDFium makes for a page of this size at ``scale`` pixels per point."""
    return math.ceil(width_pt * scale), math.ceil(height_pt * scale)


def page_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """Pixels per point for a page: ``dpi``, or less where that would render more than ``max_pixels``."""
    scale = dpi / 72
    width, height = rendered_size(width_pt, height_pt, scale)
    if width * height > max_pixels:
        scale *= math.sqrt(max_pixels / (width * height))
        while math.prod(rendered_size(width_pt, height_pt, scale)) > max_pixels:  # ceil() may add a row
            scale *= 0.999
    return scale


def render(page: object, dpi: int = DPI, scale: float | None = None) -> Image.Image:
    # RGB byte order from PDFium: the bitmap becomes the image without another copy of a large page
    image = page.render(scale=scale or dpi / 72, rev_byteorder=True).to_pil()
    return image if image.mode == "RGB" else image.convert("RGB")


def read_pdf(source: bytes | Path, ocr: Callable[[Image.Image, int], Page] | None, pages: Sequence[int] | None = None,
             dpi: int = DPI, progress: Callable[[int, int], None] | None = None, keep_images: bool = False,
             max_pages: int | None = None, budgets: Budgets | None = None,
             convert: Callable[[Image.Image], object] | None = None,
             reduced: dict[int, float] | None = None) -> tuple[list[Page], list, int]:
    """Read ``pages`` (1-based; else the first ``max_pages``, else all) of a PDF. Pages without a text
    layer go to ``ocr`` (page image, page number) when given, else come back empty with
    ``source="scanned"``. Returns the pages, their rendered images (with ``keep_images``; passed
    through ``convert`` as soon as each is read, so pages need not all stay decoded) and the
    document's page count.

    ``budgets`` (default: from the environment): a page is rendered at most at ``max_pixels`` (a lower
    resolution than ``dpi`` for a poster page: its ``Page`` size says so), and the pages rendered in
    all must fit ``max_work_pixels``, checked from the page boxes before the first page is rendered
    when every page is rendered (``keep_images``). ``reduced`` receives page number → dpi rendered
    for the pages rendered below ``dpi``."""
    budgets = budgets or Budgets.from_env()
    out, images = [], []
    with open_pdf(source) as document, RuledTables(source) as ruled:
        total = len(document)
        wanted = list(pages) if pages is not None else list(range(1, min(total, max_pages or total) + 1))
        for number in wanted:
            if not 1 <= number <= total:
                raise PDFError(f"This PDF has {total} pages; there is no page {number}.")
        sizes = {number: _page_size(document, number) for number in wanted}
        scales = {n: page_scale(*sizes[n], dpi, budgets.max_pixels) for n in wanted}
        pixels = {n: math.prod(rendered_size(*sizes[n], scales[n])) for n in wanted}
        if reduced is not None:
            reduced.update({n: scales[n] * 72 for n in wanted if scales[n] < dpi / 72})
        if keep_images:
            budgets.check("max_work_pixels", sum(pixels.values()),
                          f"The work of rendering the {len(wanted):,} pages of this PDF")
        rendered = 0
        for done, number in enumerate(wanted, 1):
            scale = scales[number]
            page = document[number - 1]
            try:
                width_pt, height_pt = page.get_size()
                lines = merge_runs(_layer_lines(page, scale, height_pt))
                has_layer = sum(len(ln.text) for ln in lines) >= MIN_LAYER_CHARS
                image = None
                if keep_images or (ocr is not None and not has_layer):
                    rendered += pixels[number]
                    budgets.check("max_work_pixels", rendered, f"The work of rendering this PDF up to page {number}")
                    image = render(page, scale=scale)
                width, height = round(width_pt * scale), round(height_pt * scale)
                if has_layer:
                    read = Page(number, width, height, reading_order(lines), source="text-layer", engine="pdfium",
                                tables=ruled.find(page, number, scale, lines))
                elif ocr is not None:
                    read = ocr(image, number)
                    read.source = "ocr"
                    if read.rotation and keep_images:
                        image = image.rotate(read.rotation, expand=True)  # shown as it was read
                else:
                    read = Page(number, width, height, source="scanned")
                out.append(read)
                if keep_images:
                    images.append(convert(image) if convert else image)
                del image
            finally:
                page.close()
            if progress:
                progress(done, len(wanted))
    return out, images, total


def _page_size(document: object, number: int) -> tuple[float, float]:
    """Page ``number``'s size in points, from its box alone (the page is not loaded)."""
    import pypdfium2 as pdfium

    try:
        width, height = document.get_page_size(number - 1)
    except pdfium.PdfiumError:
        width = height = 0
    if not (width > 0 and height > 0 and math.isfinite(width * height)):
        raise PDFError(f"Page {number} of this PDF has no size (its page box is empty or invalid).")
    return width, height
