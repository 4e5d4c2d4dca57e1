"""Real ``loupe serve`` processes for the tests that need several (each in its own process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_serve(home: Path, port: int, **env: str) -> subprocess.Popen:
    """``loupe serve --port PORT`` on ``home`` (no model: the tests here never ask one)."""
    environment = {**os.environ, "LOUPE_HOME": str(home), "LOUPE_MODEL": str(home / "no-model"), **env}
    environment.pop("LOUPE_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", "serve", "--port", str(port)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_up(url: str, process: subprocess.Popen, timeout_s: float = 120, path: str = "/login",
            log: Path | None = None) -> None:
    """Wait until ``url + path`` answers 200; fail at once if ``process`` exits (showing the end of ``log``)."""
    deadline = time.monotonic() + timeout_s

    def tail() -> str:
        return log.read_text()[-3000:] if log is not None and log.exists() else ""

    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited ({process.returncode}):\n{tail()}"
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}{path} did not come up in {timeout_s:.0f} s:\n{tail()}")


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the server and its workers at once (a clean stop takes seconds)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
