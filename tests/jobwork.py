"""Job functions the worker tests run (a worker imports them by module name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from loupe.core.budgets import Budgets
from loupe.core.jobs import report_progress


def counted(steps: int) -> int:
    for step in range(steps):
        report_progress(step + 1, steps)
        time.sleep(0.02)
    return os.getpid()


def allocate(mib: int) -> int:
    """Touch ``mib`` MiB (a decoder inflating a bomb)."""
    block = np.ones(mib * 2**20 // 8)
    return int(block.size)


def spin() -> None:
    while True:
        pass


def refuse() -> None:
    Budgets().check("max_pixels", 10**9, "The image")


def wait_for(flag: str, seconds: float = 60) -> str:
    """Run until ``flag`` exists (a test's signal), writing our pid beside it first."""
    Path(flag + ".pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "done"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def where_read(assets: list) -> tuple[int, list[int]]:
    """A case tool's job: the worker's pid and the size of each asset's bytes as the worker sees them."""
    return os.getpid(), [len(a.data) for a in assets]


def spin_on(assets: list) -> None:
    spin()
