"""Block types (title, text, table, header/footer) by geometry rules and by the CDLA layout model, scored on
real pages: ``loupe bench layout [--data DIR]`` (JSON; ``--table`` for a readable table).

Documents: every PDF and page image under DIR (``malformed`` folders skipped), with Markdown ground truth
in ``groundtruth/NAME.md`` beside it where there is one (docling's format); scanned pages are read by
Loupe's OCR pipeline once, up front. Scores per file, where there is ground truth:

- titles: ground-truth headings (Markdown lines starting ``#``) matched by title blocks (fuzzy ratio >= 85
  on lower-cased letters and digits): recall = headings found, precision = title blocks that are headings;
- tables: words of ground-truth table rows (``|`` lines) in table blocks: recall over the table's distinct
  words, precision = share of the table blocks' distinct words that are table words; "fp" counts table
  blocks on files whose ground truth has no table;
- header/footer: a block in the top or bottom 20% of the page whose text is not in the ground truth (docling
  leaves page furniture out) should be typed header/footer: true/false positives, misses.

Each method runs in its own process over the same pages: seconds per page (classification only, after one
warm-up page; reading the page is not counted) and the process's peak RSS growth while classifying.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import resource
import time
import unicodedata
from pathlib import Path

from rapidfuzz import fuzz

from .bench_process import peak_rss_mb

DEFAULT_DIR = Path(__file__).parents[1] / "data" / "documents"
METHODS = ("geometry", "model")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def norm(text: str) -> str:
    """Lower-cased letters and digits only; NFKC folds Arabic presentation forms from PDF text layers."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).lower())


def same_text(a: str, b: str) -> bool:
    """Fuzzy equal, or the same letters in another order (PDF text layers scramble right-to-left runs)."""
    a, b = norm(a), norm(b)
    return fuzz.ratio(a, b) >= 85 or (len(a) >= 8 and fuzz.ratio("".join(sorted(a)), "".join(sorted(b))) >= 90)


def in_truth(text: str, truth_lines: list[str], whole: str) -> bool:
    """The block's text is part of the ground truth (short strings, such as a page number, only as a line
    of their own; right-to-left text by its words)."""
    key = norm(text)
    if len(key) < 4:
        return any(key == norm(line) for line in truth_lines)
    if key in whole or fuzz.partial_ratio(key, whole) >= 90 or any(same_text(text, line) for line in truth_lines):
        return True
    found = words(text)
    return bool(found) and len(found & words(" ".join(truth_lines))) >= 0.5 * len(found)


def words(text: str) -> set[str]:
    return {w for w in (norm(t) for t in text.split()) if w}


def documents(root: Path) -> list[tuple[Path, Path | None]]:
    """(file, ground-truth Markdown or None) for every readable page file under ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        if {"malformed", "groundtruth"} & set(path.relative_to(root).parts[:-1]):
            continue
        if path.suffix.lower() == ".pdf" or path.suffix.lower() in IMAGE_SUFFIXES:
            stem = path.stem.removesuffix("_rotated_90")  # the same page turned: the same ground truth
            truth = path.parent / "groundtruth" / f"{stem}.md"
            found.append((path, truth if truth.exists() else None))
    return found


def read_all(root: Path) -> list[dict]:
    """Every page with its upright image and lines (OCR where there is no text layer)."""
    from loupe.core.ocr.document import open_document
    from loupe.core.ocr.pipeline import PageReader
    from loupe.core.ocr.rapid import RapidOCREngine

    reader = PageReader(RapidOCREngine())
    pages = []
    for path, truth in documents(root):
        started = time.perf_counter()
        read = open_document(path.read_bytes(), reader, keep_images=True)
        per_page = (time.perf_counter() - started) / max(len(read.pages), 1)
        for page, image in zip(read.pages, read.images, strict=True):
            pages.append({"file": f"{path.parent.name}/{path.name}", "truth": str(truth) if truth else None,
                          "page": page, "image": image, "read_s": per_page})
    return pages


def _classify(method: str, pages: list[dict], out: mp.Queue) -> None:
    from loupe.core.ocr.block_kinds import classify_blocks
    from loupe.core.ocr.layout import blocks_in_reading_order

    try:
        base = _rss_mib()
        first = pages[0]
        classify_blocks(first["page"], image=first["image"], method=method)  # warm-up: model session
        results = []
        for item in pages:
            page = item["page"]
            blocks = blocks_in_reading_order(page.lines)
            started = time.perf_counter()
            typed = classify_blocks(page, blocks, image=item["image"], method=method)
            elapsed = time.perf_counter() - started
            fallback = 0
            if method == "model":  # blocks no detected region covered: they kept the geometry answer
                from loupe.core.ocr.block_kinds import _model_kinds

                sentinel = ["?"] * len(blocks)
                fallback = _model_kinds(page, blocks, item["image"], sentinel).count("?")
            results.append({"file": item["file"], "seconds": elapsed, "fallback": fallback,
                            "blocks": [(b.kind, b.text, b.box) for b in typed],
                            "height": page.height, "lines": len(page.lines)})
        out.put({"method": method, "pages": results, "rss_growth_mib": round(_rss_mib() - base, 1),
                 "peak_rss_mib": peak_rss_mb()})
    except Exception as exc:  # the model missing must not hide the geometry numbers
        out.put({"method": method, "error": f"{type(exc).__name__}: {exc}"})


def _rss_mib() -> float:
    """Resident memory now (Linux), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def truth_parts(markdown: str) -> tuple[list[str], set[str], str]:
    """Headings, distinct table words, and the whole text (normalised) of a docling Markdown file."""
    headings = [ln.lstrip("#").strip() for ln in markdown.splitlines() if ln.startswith("#")]
    table = set()
    for line in markdown.splitlines():
        if line.lstrip().startswith("|"):
            for cell in line.strip().strip("|").split("|"):
                if cell.strip().strip("-").strip():
                    table |= words(cell)
    return headings, table, norm(markdown)


def score_file(pages: list[dict], truth_path: str | None) -> dict:
    blocks = [(kind, text, box, p["height"]) for p in pages for kind, text, box in p["blocks"]]
    kinds: dict[str, int] = {}
    for kind, *_ in blocks:
        kinds[kind] = kinds.get(kind, 0) + 1
    row: dict = {"pages": len(pages), "blocks": len(blocks), "kinds": kinds,
                 "s_per_page": round(sum(p["seconds"] for p in pages) / len(pages), 4),
                 "fallback_blocks": sum(p["fallback"] for p in pages)}
    if truth_path is None:
        return row
    markdown = Path(truth_path).read_text(encoding="utf-8")
    headings, table_words, whole = truth_parts(markdown)
    truth_lines = [ln.lstrip("#|- ").strip() for ln in markdown.splitlines() if ln.strip()]
    titles = [" ".join(text.split("\n")) for kind, text, _, _ in blocks if kind == "title"]

    found = sum(any(same_text(h, t) for t in titles) for h in headings)
    right = sum(any(same_text(h, t) for h in headings) for t in titles)
    row["title"] = {"gt": len(headings), "pred": len(titles), "recall": _ratio(found, len(headings)),
                    "precision": _ratio(right, len(titles))}
    table_blocks = [text for kind, text, _, _ in blocks if kind == "table"]
    predicted = set().union(*(words(t) for t in table_blocks)) if table_blocks else set()
    if table_words:
        row["table"] = {"recall": _ratio(len(predicted & table_words), len(table_words)),
                        "precision": _ratio(len(predicted & table_words), len(predicted))}
    else:
        row["table"] = {"fp_blocks": len(table_blocks)}
    tp = fp = fn = 0
    for kind, text, box, height in blocks:
        near_edge = box[3] <= 0.2 * height or box[1] >= 0.8 * height
        furniture = near_edge and not in_truth(text, truth_lines, whole)
        typed = kind in ("header", "footer")
        tp += typed and furniture
        fp += typed and not furniture
        fn += furniture and not typed
    row["header_footer"] = {"tp": tp, "fp": fp, "fn": fn}
    return row


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def run(root: Path = DEFAULT_DIR) -> dict:
    pages = read_all(root)
    truth = {p["file"]: p["truth"] for p in pages}
    ctx = mp.get_context("spawn")
    report: dict = {"benchmark": "layout-block-kinds", "data": str(root), "pages": len(pages), "methods": {}}
    for method in METHODS:
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_classify, args=(method, pages, queue))
        proc.start()
        result = queue.get()
        proc.join()
        if "error" in result:
            report["methods"][method] = result
            continue
        by_file: dict[str, list[dict]] = {}
        for page in result["pages"]:
            by_file.setdefault(page["file"], []).append(page)
        report["methods"][method] = {
            "s_per_page": round(sum(p["seconds"] for p in result["pages"]) / len(result["pages"]), 4),
            "rss_growth_mib": result["rss_growth_mib"], "peak_rss_mib": result["peak_rss_mib"],
            "files": {name: score_file(file_pages, truth[name]) for name, file_pages in by_file.items()},
        }
    report["summary"] = summary(report)
    return report


def summary(report: dict) -> dict:
    """Title recall and precision pooled over the files with ground truth, per method, and the speed ratio."""
    out: dict[str, float | None] = {}
    for method, result in report["methods"].items():
        titles = [row["title"] for row in result.get("files", {}).values() if row.get("title")]
        found = sum(round(t["recall"] * t["gt"]) for t in titles if t["recall"] is not None)
        right = sum(round(t["precision"] * t["pred"]) for t in titles if t["precision"] is not None)
        out[f"title_recall_{method}"] = _ratio(found, sum(t["gt"] for t in titles))
        out[f"title_precision_{method}"] = _ratio(right, sum(t["pred"] for t in titles))
    speeds = [report["methods"].get(m, {}).get("s_per_page") for m in ("model", "geometry")]
    out["geometry_speedup_vs_model"] = round(speeds[0] / speeds[1], 1) if all(speeds) else None
    return out


def table(report: dict) -> str:
    """One line per file and method."""
    out = [f"{'file':38} {'method':8} {'pg':>2} {'s/page':>7} {'title R/P (gt,pred)':>22} "
           f"{'table R/P|fp':>13} {'hdr/ftr tp/fp/fn':>16}  kinds"]
    files = sorted({name for m in report["methods"].values() for name in m.get("files", {})})
    for name in files:
        for method, result in report["methods"].items():
            row = result.get("files", {}).get(name)
            if row is None:
                continue
            title = row.get("title")
            title_text = (f"{_fmt(title['recall'])}/{_fmt(title['precision'])} ({title['gt']},{title['pred']})"
                          if title else "-")
            tab = row.get("table")
            tab_text = ("-" if tab is None else f"fp={tab['fp_blocks']}" if "fp_blocks" in tab
                        else f"{_fmt(tab['recall'])}/{_fmt(tab['precision'])}")
            hf = row.get("header_footer")
            hf_text = f"{hf['tp']}/{hf['fp']}/{hf['fn']}" if hf else "-"
            kinds = ",".join(f"{k}={v}" for k, v in sorted(row["kinds"].items()))
            out.append(f"{name:38} {method:8} {row['pages']:>2} {row['s_per_page']:>7.3f} {title_text:>22} "
                       f"{tab_text:>13} {hf_text:>16}  {kinds}"
                       + (f" fallback={row['fallback_blocks']}" if method == "model" else ""))
    for method, result in report["methods"].items():
        if "error" in result:
            out.append(f"{method}: {result['error']}")
        else:
            out.append(f"{method}: {result['s_per_page']:.4f} s/page overall; peak RSS {result['peak_rss_mib']} MiB "
                       f"(RSS +{result['rss_growth_mib']} MiB from first page to last)")
    return "\n".join(out)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
