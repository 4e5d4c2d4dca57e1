"""Scores of a checker's results against injected labels: SIMPLE (error or not) and COMPLEX (which kind),
with a confusion matrix of kinds drawn as a PNG."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from .taxonomy import KINDS, RULE_KINDS


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def binary_scores(pairs: list[tuple[bool, bool]]) -> dict:
    """(truth, predicted) pairs -> accuracy, precision, recall, F1, balanced accuracy."""
    tp = sum(t and p for t, p in pairs)
    tn = sum(not t and not p for t, p in pairs)
    fp = sum(not t and p for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    recall, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    f1 = _ratio(2 * (precision or 0) * (recall or 0), (precision or 0) + (recall or 0))
    balanced = round((recall + specificity) / 2, 3) if recall is not None and specificity is not None else None
    return {"n": len(pairs), "accuracy": _ratio(tp + tn, len(pairs)), "precision": precision, "recall": recall,
            "f1": f1, "specificity": specificity, "balanced_accuracy": balanced}


def evaluate(results: list[dict], labels: list[dict]) -> dict:
    by_id = {r["id"]: r for r in results}
    rows = [(label, by_id[label["id"]]) for label in labels if label["id"] in by_id]
    simple = binary_scores([(bool(label["has_error"]), bool(result["has_error"])) for label, result in rows])
    rule_rows = [(label, result) for label, result in rows if not label["has_error"] or label["kind"] in RULE_KINDS]
    rule_simple = binary_scores([(bool(label["has_error"]), bool(result["has_error"])) for label, result in rule_rows])
    clean = [result for label, result in rows if not label["has_error"]]
    confusion: Counter = Counter()
    per_kind: dict[str, dict] = {}
    for label, result in rows:
        predicted = max(result["findings"], key=lambda f: f["confidence"])["kind"] if result["findings"] else "none"
        confusion[(label.get("kind", "none"), predicted)] += 1
    for kind in KINDS:
        truth = [result for label, result in rows if label.get("kind") == kind]
        called = sum(n for (t, p), n in confusion.items() if p == kind)
        right = confusion[(kind, kind)]
        per_kind[kind] = {"n": len(truth), "detected": _ratio(sum(r["has_error"] for r in truth), len(truth)),
                          "kind_recall": _ratio(right, len(truth)), "kind_precision": _ratio(right, called)}
    return {"reports": len(rows), "simple": simple, "simple_rule_kinds": rule_simple,
            "clean_false_flag_rate": _ratio(sum(r["has_error"] for r in clean), len(clean)),
            "complex": per_kind, "confusion": {f"{t}->{p}": n for (t, p), n in sorted(confusion.items())}}


def confusion_png(report: dict, path: Path) -> None:
    """Rows: the injected kind (or none); columns: the kind the checker named first (or none)."""
    names = ["none", *KINDS]
    counts = {tuple(key.split("->")): n for key, n in report["confusion"].items()}
    cell, left, top = 46, 120, 110
    image = Image.new("RGB", (left + cell * len(names) + 10, top + cell * len(names) + 10), "white")
    draw = ImageDraw.Draw(image)
    peak = max(counts.values(), default=1)
    for j, name in enumerate(names):
        draw.text((left + j * cell + 4, top - 16 - (j % 2) * 14), name[:10], fill="black")
    for i, truth in enumerate(names):
        draw.text((4, top + i * cell + cell // 2 - 6), truth[:16], fill="black")
        for j, predicted in enumerate(names):
            n = counts.get((truth, predicted), 0)
            shade = 255 - int(200 * n / peak)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 2, top + (i + 1) * cell - 2)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            if n:
                draw.text((box[0] + 14, box[1] + 16), str(n), fill="black")
    draw.text((4, 4), "rows: injected kind · columns: kind flagged first", fill="black")
    image.save(path)
