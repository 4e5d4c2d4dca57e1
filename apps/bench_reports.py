"""``loupe bench reports``: the rule checker's speed and accuracy on real reports with injected errors.

- speed: reports/s of the rule checker in one process (after a warm-up), and ``loupe check-reports``
  with ``--workers 2`` against ``--workers 1`` on the same file (process start-up included, as users
  run it; the median of three interleaved runs each);
- accuracy: an evaluation set injected into the reports (seeded), scored SIMPLE and per kind, with
  negation read by negspacy's NegEx (the default) and by a short hand-written cue list, side by side.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = 3  # timed runs per worker count


def _speed(reports: list, copies: int) -> dict:
    from loupe.domains.medical.reports.batch import check_file, check_one

    check_one(reports[0])  # builds the spaCy pipeline
    started = time.perf_counter()
    for report in reports:
        check_one(report)
    per_core = len(reports) / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "reports.jsonl"
        source.write_text("".join(json.dumps({"id": f"{r.id}-{n}", **r.sections}) + "\n"
                                  for n in range(copies) for r in reports))
        runs: dict[int, list[float]] = {1: [], 2: []}
        for attempt in range(REPEATS):  # interleaved, median taken: two shared cores are noisy
            for workers in (1, 2):
                started = time.perf_counter()
                check_file(source, Path(tmp) / f"out{workers}-{attempt}.jsonl", workers=workers)
                runs[workers].append(time.perf_counter() - started)
        seconds = {workers: statistics.median(times) for workers, times in runs.items()}
    return {"rules_reports_per_s_per_core": round(per_core, 1), "batch_reports": len(reports) * copies,
            "batch_seconds_workers1": round(seconds[1], 2), "batch_seconds_workers2": round(seconds[2], 2),
            "workers2_speedup": round(seconds[1] / seconds[2], 2)}


def _vlm_speed(reports: list, count: int = 20) -> dict:
    """Rules plus the VLM checker (3 SIMPLE prompts, the COMPLEX one on a yes), on the tiny SmolVLM
    architecture with random weights: the cost of the plumbing per report, not a real model's."""
    from loupe.core.vlm.hf import HFVLM
    from loupe.core.vlm.tiny import make_tiny
    from loupe.domains.medical.reports.rules import check_rules
    from loupe.domains.medical.reports.vlm_check import VLMChecker, combine

    with tempfile.TemporaryDirectory() as tmp:
        checker = VLMChecker(HFVLM.from_pretrained(make_tiny("smolvlm", Path(tmp) / "tiny")))
    chosen = reports[:count]
    checker.flags(chosen[0])  # warm-up
    started = time.perf_counter()
    for report in chosen:
        combine(check_rules(report), checker.flags(report))
    return {"rules_plus_tiny_vlm_reports_per_s": round(len(chosen) / (time.perf_counter() - started), 2),
            "vlm_model": "tiny SmolVLM architecture, random weights"}


def _accuracy(reports: list, seed: int, polarity: str) -> dict:
    from loupe.domains.medical.reports.evaluate import evaluate
    from loupe.domains.medical.reports.inject import build_eval
    from loupe.domains.medical.reports.rules import check_rules

    pairs = build_eval(reports, 0.5, seed)
    results = []
    for report, _ in pairs:
        flags = check_rules(report, polarity=polarity)
        results.append({"id": report.id, "has_error": bool(flags),
                        "findings": [{"kind": f.kind, "confidence": f.confidence} for f in flags]})
    return evaluate(results, [label for _, label in pairs])


def run_reports_bench(source: Path, seeds: tuple[int, ...] = (1, 2, 3), copies: int = 20) -> dict:
    from loupe.domains.medical.reports.sections import read_reports

    reports = list(read_reports(source, []))
    speed = {**_speed(reports, copies), **_vlm_speed(reports)}
    accuracy = {}
    for polarity in ("negex", "cues"):
        runs = [_accuracy(reports, seed, polarity) for seed in seeds]
        accuracy[polarity] = {
            "simple_balanced_accuracy_rule_kinds": [r["simple_rule_kinds"]["balanced_accuracy"] for r in runs],
            "clean_false_flag_rate": [r["clean_false_flag_rate"] for r in runs],
            "simple_all_kinds": [r["simple"] for r in runs],
            "detected_per_kind": {kind: [r["complex"][kind]["detected"] for r in runs] for kind in runs[0]["complex"]},
        }

    def mean(values: list) -> float | None:
        present = [v for v in values if v is not None]
        return round(sum(present) / len(present), 3) if present else None

    ours = accuracy["negex"]
    return {"benchmark": "reports", "data": source.name, "reports": len(reports), "seeds": list(seeds), **speed,
            "accuracy": accuracy,
            "summary": {"rules_reports_per_s_per_core": speed["rules_reports_per_s_per_core"],
                        "workers2_speedup": speed["workers2_speedup"],
                        "simple_balanced_accuracy_rule_kinds": mean(ours["simple_balanced_accuracy_rule_kinds"]),
                        "clean_false_flag_rate": mean(ours["clean_false_flag_rate"]),
                        "simple_balanced_accuracy_rule_kinds_cues": mean(
                            accuracy["cues"]["simple_balanced_accuracy_rule_kinds"])}}
