"""Checking a file of reports: one JSON line per report, resumable, on local worker processes.

The output is appended one complete line at a time and flushed, so a run killed at any moment leaves
whole lines only (a torn last line is dropped on the next run); a rerun skips the ids already there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loupe.core.errors import InputRejected

from .rules import check_rules
from .sections import Report, read_reports
from .studies import find_study
from .vlm_check import VLMChecker, combine

Progress = Callable[[int, int], None]


def result_line(report_id: str, flags: list) -> dict:
    return {"id": report_id, "has_error": bool(flags),
            "findings": [{"kind": f.kind, "section": f.section, "span": list(f.span), "text": f.text,
                          "reason": f.reason, "confidence": f.confidence} for f in flags]}


def check_one(report: Report) -> dict:
    """The rules' result line for one report, or ``{"id", "refused", "budget"}`` when it is refused (e.g. over
    the text budget): a refusal is a result, so it crosses process pools and Ray and the run goes on."""
    try:
        return result_line(report.id, check_rules(report))
    except InputRejected as exc:
        return refusal(report.id, exc)


def refusal(report_id: str, exc: InputRejected) -> dict:
    return {"id": report_id, "refused": str(exc), "budget": getattr(exc, "budget", None)}


def finished_ids(out: Path) -> set[str]:
    """Ids already in ``out``; a last line cut off by a kill is removed first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with out.open("r+b") as handle:
            handle.truncate(len(complete))
    return {json.loads(line)["id"] for line in complete.decode("utf-8").splitlines() if line.strip()}


@dataclass
class CheckRun:
    checked: int = 0
    skipped: int = 0  # already in the output
    flagged: int = 0
    problems: list[str] = field(default_factory=list)  # input lines that could not be read
    # every report of the input, in order: (its id or "line N", status, reason); status is processed,
    # already_done, duplicate (the id came earlier in the input) or refused
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)


def _results(pending: list[Report], workers: int, model: VLMChecker | None, rules: bool,
             images: Path | None, engine: str) -> Iterator[dict]:
    if engine == "ray":
        from .ray_engine import ray_results

        yield from ray_results(pending, workers)
        return
    studies = {r.id: find_study(images, r.id) for r in pending} if images is not None else {}
    for report in pending:  # the header's facts ride with the report, to any worker
        study = studies.get(report.id)
        if study is not None:
            report.image_laterality = study.laterality
            report.patient_sex = study.sex or report.patient_sex
    if model is not None:
        def check_with_model(report: Report) -> dict:
            try:
                flags = check_rules(report) if rules else []
                study = studies.get(report.id)
                return result_line(report.id, combine(flags, model.flags(report, study.image() if study else None)))
            except InputRejected as exc:
                return refusal(report.id, exc)

        if workers <= 1:  # an in-process model: one report at a time
            yield from map(check_with_model, pending)
            return
        # a served model: several reports in flight, which the server batches; results stay in input order
        with ThreadPoolExecutor(workers, thread_name_prefix="loupe-check") as pool:
            yield from pool.map(check_with_model, pending)
        return
    check_one(Report("warm-up", {"findings": "No effusion."}))  # build the pipeline before forking
    if workers <= 1:
        yield from map(check_one, pending)
        return
    # fork: workers start at once with the spaCy pipeline already built (this process runs no threads of its own)
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(check_one, pending, chunksize=max(1, min(256, len(pending) // (workers * 4) or 1)))


def check_file(source: Path, out: Path, workers: int = 1, progress: Progress | None = None,
               model: VLMChecker | None = None, rules: bool = True, images: Path | None = None,
               engine: str = "local") -> CheckRun:
    """Check every report of ``source`` not yet in ``out``: by the rules, the model (a VLMChecker), or
    both, with the study ``images/ID.dcm|png|jpg`` where there is one; on local processes or
    (``engine="ray"``) Ray Data."""
    if model is not None and (engine != "local" or (workers > 1 and not model.served)):
        raise ValueError("--engine ray, and --workers with an in-process model, need the rules-only checker: "
                         "the model runs in this process (a served model, --model-server, takes --workers)")
    run = CheckRun()
    done = finished_ids(out)
    reports = list(read_reports(source, run.problems))
    pending, seen = [], set()
    for report in reports:
        if report.id in seen:  # checked once: a second line with the id would give two results for it
            run.outcomes.append((report.id, "duplicate", "the same report id as an earlier report in the file"))
        elif report.id in done:
            run.outcomes.append((report.id, "already_done", ""))
            run.skipped += 1
        else:
            pending.append(report)
        seen.add(report.id)
    for problem in run.problems:
        where, _, why = problem.partition(": ")
        run.outcomes.append((where, "refused", why or problem))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for result in _results(pending, workers, model, rules, images, engine):
            if "refused" in result:  # not written: a rerun (with a raised budget) checks it
                run.outcomes.append((result["id"], "refused", result["refused"]))
                continue
            handle.write(json.dumps(result, ensure_ascii=False) + "\n")  # one whole line per write
            handle.flush()
            run.checked += 1
            run.flagged += result["has_error"]
            run.outcomes.append((result["id"], "processed", ""))
            if progress is not None:
                progress(run.checked, len(pending))
        os.fsync(handle.fileno())
    return run


def load_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
