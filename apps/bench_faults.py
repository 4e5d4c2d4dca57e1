"""Faults for ``loupe bench load --faults`` beyond killing whole processes: a job worker SIGKILLed while it
runs a user's upload, and the database server restarted under load. Processes are found through /proc
(Linux), as an operator's ``ps`` would find them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

FORK_SERVER = "multiprocessing.forkserver"  # in the command line of the fork server and of every worker


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command line, CPU ticks used) for every process readable now."""
    found: dict[int, tuple[int, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, …
        found[int(entry.name)] = (int(fields[1]), command, int(fields[11]) + int(fields[12]))
    return found


def job_workers(app_pid: int, table: dict[int, tuple[int, str, int]] | None = None) -> list[int]:
    """The job worker processes of one ``loupe serve`` process: children of its fork server."""
    table = _processes() if table is None else table
    servers = {pid for pid, (parent, command, _) in table.items() if parent == app_pid and FORK_SERVER in command}
    return [pid for pid, (parent, command, _) in table.items() if parent in servers and FORK_SERVER in command]


def kill_a_busy_worker(app_pid: int, within_s: float = 120.0, sample_s: float = 0.3) -> int | None:
    """SIGKILL the first job worker of ``app_pid`` seen using the processor (running a job, or still starting:
    call it once the pool is warm); its pid, or None when no worker was busy within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        table = _processes()
        before = {pid: table[pid][2] for pid in job_workers(app_pid, table)}
        time.sleep(sample_s)
        after = _processes()
        for pid, ticks in before.items():
            if pid in after and after[pid][2] > ticks:
                os.kill(pid, signal.SIGKILL)
                return pid
    return None


def restart_database(command: str, timeout_s: float = 120.0) -> float:
    """Run the operator's restart command (e.g. ``pg_ctl -D … restart -m fast``); seconds it took."""
    start = time.monotonic()
    subprocess.run(command, shell=True, check=True, timeout=timeout_s,  # noqa: S602 - the operator's own command
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start
