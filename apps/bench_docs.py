"""``loupe bench docs``: the Markdown a document case exports, scored against reference Markdown.

Documents: every PDF under DIR (default: the shipped ``data/documents``) with a reference ``groundtruth/
NAME.md`` beside it (docling's Markdown: machine-made, the format the field compares against), plus pages
made here from them: the scanned page turned 90°, 180° and 270° (against the upright page's reference), a page
whose text is drawn twice (a visible line and an invisible copy of another size, as an OCR layer over a
scan is) against the text once, and the pages of ``bench_docs_pages.py`` (a ruled table whose cells wrap,
two columns of running text, a listing in Courier; one of them also as a scan) against the Markdown they
were drawn from. Each goes through the documents tab's own path: ``ingest`` (text layer or OCR, orientation,
reading order, block types, tables) then the ``md`` export.

Scores, per document and in all:

- ``text_similarity``: the words of Loupe's Markdown against the reference's, in order (difflib's ratio over
  word sequences, letters and digits lower-cased; Markdown marks and page comments left out);
- ``heading_recall``: reference headings (``#`` lines) found among Loupe's headings (fuzzy ratio >= 85);
  ``heading_precision``: the share of Loupe's headings that are reference headings (a table's header row or
  a line of code made a heading counts against it);
- ``table_recall`` / ``table_precision``: a reference table (a run of ``|`` lines) is found when one of
  Loupe's tables holds at least half of its distinct words; precision is the share of Loupe's tables that
  find a reference table;
- ``code_recall``: reference code blocks (fenced) found as one of Loupe's fenced blocks holding at least half
  of their words;
- ``garbage_pages``: pages turned or scanned whose text similarity is under 0.5.

Baseline, side by side: the PDF's own text layer as plain text (pypdf), which is what copying the text out
gives (nothing for a scan); its text similarity is reported and the ratio Loupe / baseline.
"""

from __future__ import annotations

import difflib
import io
import re
import tempfile
import time
import unicodedata
from pathlib import Path

from rapidfuzz import fuzz

from .bench_docs_pages import GENERATED
from .pdf_bytes import text_pdf

DEFAULT_DIR = Path(__file__).parents[1] / "data" / "documents"
GARBAGE = 0.5  # text similarity under which a page's text is not the page
TURNS = (90, 180, 270)
OVERDRAWN_LINES = ("ENFORCED FOR ALL ACCESS", "Each request is checked against the reader's role.")


def words(markdown: str) -> list[str]:
    """The text's words, lower-cased letters and digits, without Markdown marks, images and comments."""
    text = re.sub(r"<!--.*?-->", " ", unicodedata.normalize("NFKC", markdown))
    text = re.sub(r"^\s*\|?\s*-+\s*(\|\s*-+\s*)*\|?\s*$", " ", text, flags=re.MULTILINE)  # table rules
    return [w for w in (re.sub(r"[\W_]+", "", token.lower()) for token in text.split()) if w]


def headings(markdown: str) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def tables(markdown: str) -> list[set[str]]:
    """Each table (a run of ``|`` lines) as its distinct words."""
    found, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.strip().startswith("|"):
            current.append(line)
        elif current:
            found.append(set(words("\n".join(current))))
            current = []
    return [t for t in found if t]


def code_blocks(markdown: str) -> list[set[str]]:
    """Each fenced block (``` or ~~~) as its distinct words."""
    return [set(words(body)) for body in re.findall(r"^(?:```|~~~)[^\n]*\n(.*?)^(?:```|~~~)", markdown,
                                                    flags=re.MULTILINE | re.DOTALL)]


def similarity(ours: str, reference: str) -> float:
    return difflib.SequenceMatcher(None, words(ours), words(reference), autojunk=False).ratio()


def score(ours: str, reference: str) -> dict:
    theirs, mine = headings(reference), headings(ours)
    found = sum(any(fuzz.ratio(h.lower(), m.lower()) >= 85 for m in mine) for h in theirs)
    right = sum(any(fuzz.ratio(h.lower(), m.lower()) >= 85 for h in theirs) for m in mine)
    ref_tables, our_tables = tables(reference), tables(ours)

    def covers(table: set[str], reference_table: set[str]) -> bool:
        return len(table & reference_table) >= 0.5 * len(reference_table)

    ref_code, our_code = code_blocks(reference), code_blocks(ours)
    return {"text_similarity": round(similarity(ours, reference), 4),
            "code_blocks": len(ref_code),
            "code_blocks_found": sum(any(covers(c, r) for c in our_code) for r in ref_code),
            "headings": len(theirs), "headings_found": found, "our_headings": len(mine), "our_headings_right": right,
            "tables": len(ref_tables), "tables_found": sum(any(covers(t, r) for t in our_tables) for r in ref_tables),
            "our_tables": len(our_tables),
            "our_tables_right": sum(any(covers(t, r) for r in ref_tables) for t in our_tables)}


def _turned_pdf(source: Path, turn: int) -> bytes:
    """``source``'s first page rendered and turned ``turn``° counter-clockwise, as a one-page image PDF."""
    import pypdfium2 as pdfium

    image = pdfium.PdfDocument(str(source))[0].render(scale=2).to_pil().convert("RGB")
    out = io.BytesIO()
    image.rotate(turn, expand=True).save(out, "PDF", resolution=144)
    return out.getvalue()


def _overdrawn_pdf() -> bytes:
    """A page whose lines are drawn twice: visible, and an invisible copy a point off in another size."""
    content = b""
    for n, line in enumerate(OVERDRAWN_LINES):
        y = 700 - 40 * n
        text = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
        content += b"BT /F1 16 Tf 72 %d Td (%s) Tj ET BT 3 Tr /F1 15.5 Tf 72.8 %.1f Td (%s) Tj ET\n" % (
            y, text, y + 0.6, text)
    return text_pdf(content)


def documents(root: Path) -> list[tuple[str, bytes, str, bool]]:
    """(name, PDF bytes, reference Markdown, whether it is a turned or scanned page) of every case."""
    cases = []
    for pdf in sorted(root.glob("*.pdf")):
        truth = root / "groundtruth" / f"{pdf.stem}.md"
        if truth.is_file():
            cases.append((pdf.name, pdf.read_bytes(), truth.read_text(), "ocr" in pdf.stem))
    scan, scan_truth = root / "ocr_test.pdf", root / "groundtruth" / "ocr_test.md"
    if scan.is_file() and scan_truth.is_file():
        cases += [(f"ocr_test turned {turn}°", _turned_pdf(scan, turn), scan_truth.read_text(), True)
                  for turn in TURNS]
    cases.append(("text drawn twice", _overdrawn_pdf(), "\n\n".join(OVERDRAWN_LINES) + "\n", False))
    cases += [(name, *make(), False) for name, make in GENERATED.items()]
    data, reference = GENERATED["rows ruled, columns not"]()
    cases.append(("rows ruled, columns not, scanned", _scanned_pdf(data), reference, True))
    return cases


def _scanned_pdf(data: bytes) -> bytes:
    """A PDF's first page as a scan of it: rendered at 150 dpi into an image-only PDF (no text layer)."""
    import pypdfium2 as pdfium

    image = pdfium.PdfDocument(data)[0].render(scale=150 / 72).to_pil().convert("RGB")
    out = io.BytesIO()
    image.save(out, "PDF", resolution=150)
    return out.getvalue()


def _baseline_text(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


def run(root: Path = DEFAULT_DIR) -> dict:
    from loupe.core.budgets import Budgets
    from loupe.core.ocr.export import to_markdown
    from loupe.domains.documents import DocumentsDomain
    from loupe.domains.documents.pages import page_from_meta

    domain = DocumentsDomain()
    results = []
    for name, data, reference, scanned in documents(root):
        with tempfile.TemporaryDirectory(prefix="loupe-bench-docs-") as folder:
            path = Path(folder) / "document.pdf"
            path.write_bytes(data)
            started = time.perf_counter()
            assets = domain.ingest(path, Budgets())
            seconds = time.perf_counter() - started
        ours = to_markdown([page_from_meta(a.meta) for a in assets if a.meta.get("ocr")])
        result = {"document": name, "scanned_or_turned": scanned, "seconds": round(seconds, 2),
                  **score(ours, reference),
                  "baseline_text_similarity": round(similarity(_baseline_text(data), reference), 4)}
        result["garbage"] = scanned and result["text_similarity"] < GARBAGE
        results.append(result)
    return {"benchmark": "docs", "documents": str(root), "results": results, "summary": summary(results)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summary(results: list[dict]) -> dict:
    mean = sum(r["text_similarity"] for r in results) / len(results)
    baseline = sum(r["baseline_text_similarity"] for r in results) / len(results)
    return {"documents": len(results), "text_similarity": round(mean, 4),
            "heading_recall": _share(sum(r["headings_found"] for r in results), sum(r["headings"] for r in results)),
            "heading_precision": _share(sum(r["our_headings_right"] for r in results),
                                        sum(r["our_headings"] for r in results)),
            "table_recall": _share(sum(r["tables_found"] for r in results), sum(r["tables"] for r in results)),
            "table_precision": _share(sum(r["our_tables_right"] for r in results),
                                      sum(r["our_tables"] for r in results)),
            "code_recall": _share(sum(r["code_blocks_found"] for r in results), sum(r["code_blocks"] for r in results)),
            "garbage_pages": sum(r["garbage"] for r in results),
            "baseline_text_similarity": round(baseline, 4),
            "text_similarity_vs_baseline": round(mean / baseline, 3) if baseline else None,
            "targets": {"text_similarity": 0.90, "heading_recall": 0.80, "table_recall": 0.90,
                        "table_precision": 0.90, "garbage_pages": 0}}
