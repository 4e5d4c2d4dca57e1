"""The rule checker on Ray Data, for report sets bigger than one machine.

Reports go out as plain rows; an actor pool keeps one built spaCy pipeline per worker; results stream
back to the driver, which alone appends to the output file, so resumability is the same as for local
runs. Connects to the cluster in ``RAY_ADDRESS`` (or ``address``); without one it starts a local Ray
with ``workers`` CPUs and stops it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .sections import Report

BATCH = 64  # reports per task: large enough to hide scheduling, small enough to keep the progress bar moving


class _RuleBatch:
    """One per Ray worker: the pipeline is built once, in __init__."""

    def __init__(self) -> None:
        from .batch import check_one

        self.check = check_one
        self.check(Report("warm-up", {"findings": "No effusion."}))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        import json

        lines = []
        for report_id, sections, sex, side in zip(batch["id"], batch["sections"], batch["patient_sex"],
                                                  batch["image_laterality"], strict=True):
            report = Report(str(report_id), json.loads(sections), sex or None, side or None)
            lines.append(json.dumps(self.check(report), ensure_ascii=False))
        return {"line": lines}


def ray_results(pending: list[Report], workers: int, address: str | None = None) -> Iterator[dict]:
    import json
    import logging
    import os

    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'loupe[scale]'") from None
    if not pending:
        return
    started_here = not ray.is_initialized()
    if started_here:
        address = address or os.environ.get("RAY_ADDRESS")
        local = {} if address else {"num_cpus": workers, "include_dashboard": False}
        # report text stays out of the driver's console: worker output is not forwarded
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **local)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        rows = [{"id": r.id, "sections": json.dumps(r.sections), "patient_sex": r.patient_sex or "",
                 "image_laterality": r.image_laterality or ""} for r in pending]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // BATCH)).map_batches(
            _RuleBatch, batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
            batch_format="numpy")
        for row in dataset.iter_rows():
            yield json.loads(row["line"])
    finally:
        if started_here:
            ray.shutdown()
