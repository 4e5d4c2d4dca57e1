"""The upload part of ``loupe bench sources``: a 1 GB scene uploaded through the web app, as a browser does.

A 1 GB GeoTIFF (3 bands, uint8, tiled, uncompressed, no overviews: what a user exports from their GIS;
18,432² px of smooth fields with noise) is written once into the work folder. ``loupe serve`` runs in
its own process group with a throwaway LOUPE_HOME; a Gradio client logs in as its admin, uploads the
file (multipart over HTTP, spooled to disk by the app) and creates a remote-sensing case from it (the
worker reads it in parts, writes the clean copy with overviews to a file the store moves into place).
Sampled every 50 ms: the web process's resident memory (against its idle figure before the upload) and
the job workers' (its other descendants).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIDE = 18_432  # 3 × 18,432² bytes = 1.02 GB


def scene(workdir: Path) -> Path:
    """The 1 GB scene (written once)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = workdir / f"scene-{SIDE}.tif"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    partial = path.with_suffix(".partial")
    profile = {"driver": "GTiff", "width": SIDE, "height": SIDE, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "crs": "EPSG:32618",
               "transform": from_origin(300_000, 4_700_000, 0.5, 0.5), "BIGTIFF": "YES"}
    with rasterio.open(partial, "w", **profile) as ds:
        for row in range(0, SIDE, 512):
            for col in range(0, SIDE, 512):
                field = (row // 2048 * 37 + col // 2048 * 53) % 200 + 30
                block = rng.integers(0, 24, (3, 512, 512), dtype=np.uint8) + np.uint8(field)
                ds.write(block, window=Window(col, row, 512, 512))
    partial.rename(path)
    return path


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """(the process's RSS, the largest RSS among its descendants), in MiB."""
    def rss(pid: int) -> float:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return 0.0
        return int(status.split("VmRSS:")[1].split()[0]) / 1024 if "VmRSS:" in status else 0.0

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    below, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        below.append(pid)
        stack.extend(children.get(pid, []))
    return rss(root), max((rss(p) for p in below), default=0.0)


class _Sampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.web, self.workers = pid, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            web, workers = _tree_rss_mb(self.pid)
            self.web, self.workers = max(self.web, web), max(self.workers, workers)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_upload_bench(workdir: Path) -> dict:
    from gradio_client import Client, handle_file

    from .nginx_site import free_port

    workdir.mkdir(parents=True, exist_ok=True)
    path = scene(workdir)
    home = Path(tempfile.mkdtemp(prefix="loupe-bench-upload-"))
    port = free_port()
    env = {**os.environ, "LOUPE_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LOUPE_DATABASE_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", "serve", "--port", str(port), "--model",
                               str(home / "no-model")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line or f"http://127.0.0.1:{port}" in line:
                break
        password = (home / "initial-admin-password").read_text().strip()
        client = None
        while client is None and time.monotonic() < deadline:
            try:
                client = Client(f"http://127.0.0.1:{port}/", auth=("admin", password), verbose=False)
            except Exception:  # noqa: BLE001 - still binding
                time.sleep(0.5)
        if client is None:
            raise RuntimeError("the app did not start")
        time.sleep(2.0)  # let start-up work settle before the idle figure
        idle_web, idle_workers = _tree_rss_mb(server.pid)
        with _Sampler(server.pid) as sampled:
            started = time.perf_counter()
            result = client.predict(handle_file(str(path)), "bench scene", api_name="/remote_sensing_create_case")
            seconds = time.perf_counter() - started
        status = str(result[5])
        stored = [p.stat().st_size for p in (home / "assets").rglob("*") if p.is_file()]
        return {"file_bytes": path.stat().st_size, "side": SIDE, "status": status, "upload_and_store_s":
                round(seconds, 1), "web_rss_idle_mb": round(idle_web, 1), "web_rss_peak_mb": round(sampled.web, 1),
                "web_rss_peak_above_idle_mb": round(sampled.web - idle_web, 1),
                "worker_rss_idle_mb": round(idle_workers, 1), "worker_rss_peak_mb": round(sampled.workers, 1),
                "largest_stored_bytes": max(stored, default=0), "created": "created" in status}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
