"""``loupe bench ocr``: Loupe's OCR pipeline beside raw RapidOCR and Tesseract on pages with ground truth.

Ground truth is SROIE-style: ``NAME.jpg`` with ``NAME.box.csv`` (x1,y1,…,x4,y4,transcript per line).
Text is compared as lines sorted top to bottom, upper-cased, whitespace collapsed; character and word
error rates are pooled over all pages. Where ``NAME.key.json`` exists (company, date, address, total),
the rule-based key-field extractor runs on Loupe's pages. Each configuration runs in its own process
(peak RSS stays its own); pages/s counts whole-page reading after one warm-up page.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import re
import time
from pathlib import Path

from PIL import Image

from .bench_process import peak_rss_mb

CONFIGS = ("loupe", "rapidocr-defaults", "tesseract")


def normalise(lines: list[tuple[float, float, str]]) -> str:
    """(top, left, text) lines → one comparable string."""
    return re.sub(r"\s+", " ", " ".join(text for _, _, text in sorted(lines)).upper()).strip()


def ground_truth(box_csv: Path) -> str:
    rows = []
    with box_csv.open(encoding="utf-8", errors="replace", newline="") as handle:
        for row in csv.reader(handle):
            if len(row) >= 9:
                xs, ys = [float(v) for v in row[0:8:2]], [float(v) for v in row[1:8:2]]
                rows.append((min(ys), min(xs), ",".join(row[8:])))
    return normalise(rows)


def pages_with_truth(folder: Path) -> list[tuple[Path, str]]:
    return [(jpg, ground_truth(jpg.with_suffix(".box.csv"))) for jpg in sorted(folder.glob("*.jpg"))
            if jpg.with_suffix(".box.csv").exists()]


def _reader(config: str, seen: list):  # noqa: ANN202 - a callable image -> [(top, left, text)]
    if config == "loupe":
        from loupe.core.ocr.pipeline import PageReader
        from loupe.core.ocr.rapid import RapidOCREngine

        pipeline = PageReader(RapidOCREngine())

        def read_page(image: Image.Image) -> list[tuple[float, float, str]]:
            seen.append(page := pipeline.read(image))  # kept for key-field extraction afterwards
            return [(ln.box[1], ln.box[0], ln.text) for ln in page.lines]
        return read_page
    if config == "rapidocr-defaults":
        import numpy as np
        from rapidocr import RapidOCR

        raw = RapidOCR(params={"Global.log_level": "warning"})

        def read(image: Image.Image) -> list[tuple[float, float, str]]:
            out = raw(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
            if out.boxes is None:
                return []
            return [(float(b[:, 1].min()), float(b[:, 0].min()), t) for b, t in zip(out.boxes, out.txts, strict=False)]
        return read
    from loupe.core.ocr.engines import TesseractEngine

    tesseract = TesseractEngine()
    return lambda image: [(ln.box[1], ln.box[0], ln.text) for ln in tesseract.read(image)]


def _measure(config: str, pages: list[tuple[str, str]], out: mp.Queue) -> None:
    from rapidfuzz.distance import Levenshtein

    try:
        seen: list = []
        read = _reader(config, seen)
        images = [Image.open(path).convert("RGB") for path, _ in pages]
        read(images[0])  # warm-up: model sessions, first-call allocations
        seen.clear()
        char_errors = chars = word_errors = words = 0
        started = time.perf_counter()
        texts = [normalise(read(image)) for image in images]
        elapsed = time.perf_counter() - started
        for text, (_, truth) in zip(texts, pages, strict=True):
            char_errors += Levenshtein.distance(text, truth)
            chars += len(truth)
            word_errors += Levenshtein.distance(text.split(), truth.split())
            words += len(truth.split())
        row = {"config": config, "pages": len(pages), "cer": round(char_errors / chars, 4),
               "wer": round(word_errors / words, 4), "pages_per_s": round(len(pages) / elapsed, 3),
               "peak_rss_mib": peak_rss_mb()}
        if seen:
            row["key_fields"] = key_field_accuracy(seen, [Path(path) for path, _ in pages])
        out.put(row)
    except Exception as exc:  # one configuration failing (no Tesseract) must not hide the others
        out.put({"config": config, "error": f"{type(exc).__name__}: {exc}"})


def key_field_accuracy(read: list, paths: list[Path]) -> dict:
    """Exact match (case-insensitive) per field against NAME.key.json, where present."""
    import json

    from loupe.domains.documents.fields import extract_fields

    hits: dict[str, list[bool]] = {}
    for page, path in zip(read, paths, strict=True):
        truth_file = path.with_suffix(".key.json")
        if not truth_file.exists():
            continue
        truth, got = json.loads(truth_file.read_text(encoding="utf-8")), extract_fields(page)
        for field, expected in truth.items():
            hits.setdefault(field, []).append((got.get(field) or "").strip().upper() == expected.strip().upper())
    per_field = {field: round(sum(v) / len(v), 3) for field, v in hits.items()}
    every = [hit for v in hits.values() for hit in v]
    return {"per_field": per_field, "overall": round(sum(every) / len(every), 3) if every else None}


def run_ocr_bench(folder: Path, prompt_page: Path | None = None) -> dict:
    """OCR rows on every page of ``folder`` with ground truth; with ``prompt_page``, also the cost of
    asking about that page three ways (bench_ocr_prompts.py)."""
    pages = [(str(path), truth) for path, truth in pages_with_truth(folder)]
    if not pages:
        raise ValueError(f"no NAME.jpg with NAME.box.csv ground truth in {folder}")
    ctx = mp.get_context("spawn")
    results = []
    for config in CONFIGS:
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(config, pages, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    by = {r["config"]: r for r in results}

    def ratio(key: str, invert: bool = False) -> float | None:
        ours, raw = by["loupe"].get(key), by["rapidocr-defaults"].get(key)
        if not ours or not raw:
            return None
        return round(raw / ours if invert else ours / raw, 3)

    report = {"benchmark": "ocr", "data": folder.name, "pages": len(pages), "results": results}
    summary = {"cer_ratio_vs_rapidocr": ratio("cer"), "pages_per_s_ratio_vs_rapidocr": ratio("pages_per_s"),
               "key_field_accuracy": by["loupe"].get("key_fields", {}).get("overall")}
    if prompt_page is not None:
        from .bench_ocr_prompts import run_prompt_styles, style_ratios

        report["prompt_styles"] = run_prompt_styles(prompt_page)
        summary |= style_ratios(report["prompt_styles"])
    return {**report, "summary": summary}
