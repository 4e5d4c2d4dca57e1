"""Run one benchmark configuration in a fresh process, so its peak RSS (and warm caches) are its own."""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def samples_folder() -> Path:
    """The repository's ``data/samples``: beside the source in a checkout, else in the current folder (an
    installed copy run from a checkout, as on the GPU machine)."""
    for folder in (Path(__file__).parents[1] / "data" / "samples", Path.cwd() / "data" / "samples"):
        if folder.is_dir():
            return folder
    raise FileNotFoundError("the sample images (data/samples) were not found: run from a Loupe checkout")


def random_checkpoint(path: Path, family: str, size: str = "real") -> Path:
    """A random-weight checkpoint of ``family`` at ``size`` in ``path``: written once, then reused."""
    if not (path / "config.json").exists():
        from loupe.core.vlm.tiny import make_tiny

        make_tiny(family, path, size=size)
    return path


PRELOAD = ["loupe.core.vlm.hf"]


def in_own_process(target: Callable[..., None], *args: Any, timeout_s: float | None = None) -> dict:  # noqa: ANN401
    """``target(*args, queue)`` in a fresh process; returns what it put on the queue, or an error after
    ``timeout_s`` (the process is killed).

    Children fork from a server process that has imported the model code and nothing more (no thread
    pool, no CUDA context): each starts in a fraction of a second instead of importing torch again,
    and its peak RSS counts the same imported code a spawned child's would."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    out = context.Queue()
    process = context.Process(target=target, args=(*args, out))
    process.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:  # a process killed outright (out of memory, a crashed driver) never answers
        try:
            result = out.get(timeout=2)
            break
        except queue.Empty:
            if not process.is_alive() and out.empty():
                return {"error": f"the benchmark process ended without a result (exit code {process.exitcode})"}
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                process.join()
                return {"error": f"stopped after {timeout_s:.0f} s without a result"}
    process.join(timeout=60)  # a child that leaves worker processes behind may wait on them at exit
    if process.is_alive():
        process.kill()
        process.join()
    return result


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work: a CUDA kernel launch returns before the kernel ran, so a time
    read without it measures the launch."""
    import torch

    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
