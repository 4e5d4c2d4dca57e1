"""Run one benchmark configuration in a fresh process, so its peak RSS (and warm caches) are its own."""

from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Callable
from typing import Any


def in_own_process(target: Callable[..., None], *args: Any) -> dict:  # noqa: ANN401
    """``target(*args, queue)`` in a spawned process; returns what it put on the queue."""
    context = mp.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=target, args=(*args, out))
    process.start()
    result = out.get()
    process.join()
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
