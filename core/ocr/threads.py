"""Threads for OCR's onnxruntime sessions, so that OCR and the model do not oversubscribe the cores.

The model runs torch on every core (torch's default) on one thread of the web or CLI process
(core/vlm/worker.py). OCR runs in job worker processes (core/jobs.py), several at once, and
onnxruntime's default gives each session one intra-op thread per core: on a 2-core machine answering
while two workers read pages, six busy threads spun against each other, and every engine fell to 1-2
tokens/s (issue 20). So an OCR session in a worker process uses one intra-op and one inter-op thread:
the parallelism is the workers', and torch keeps the cores it expects. A session in the main process
(benchmarks, scripts, nothing else running) keeps onnxruntime's default. ``LOUPE_OCR_THREADS`` sets
the intra-op count for both.
"""

from __future__ import annotations

import multiprocessing
import os

WORKER_THREADS = 1


def ocr_threads() -> int | None:
    """Intra-op threads for an OCR session created here; None: onnxruntime's default (one per core)."""
    raw = os.environ.get("LOUPE_OCR_THREADS", "").strip()
    if raw:
        return max(1, int(raw))
    return WORKER_THREADS if multiprocessing.parent_process() is not None else None
