"""``loupe bench memory``: the web app's resident memory with the model loaded and many open cases.

The real app (gate, Gradio, service, SQLite under a throwaway LOUPE_HOME) runs in a child process with
the app's defaults; a client there logs in, creates each case from its own photo and asks a question,
so every case leaves a conversation cache and encoded features behind (answers are as long as the
app lets them be: random weights rarely stop early). RSS is read after the model
loads and after each case; cache evictions are counted from the log the app writes.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import socket
import tempfile
import time
from pathlib import Path

from PIL import Image

from .bench_process import peak_rss_mb

BUDGET_MIB = 2560  # the documented default budget on CPU (docs/performance.md)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _photo(index: int) -> bytes:
    image = Image.effect_noise((1024, 768), 40 + index).convert("RGB")
    image.putpixel((0, 0), (index, index, index))  # every case its own pixels: nothing shared by accident
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


class _Evictions(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "evicted" in record.getMessage() or "dropped the oldest" in record.getMessage():
            self.count += 1


def _measure(model: Path, cases: int, out: mp.Queue) -> None:
    try:
        from gradio_client import Client, handle_file

        from loupe.apps.service import LoupeService
        from loupe.apps.web import launch
        from loupe.core.config import Settings

        evictions = _Evictions()
        for name in ("loupe.core.vlm.reuse", "loupe.core.vlm.features"):
            logging.getLogger(name).addHandler(evictions)
            logging.getLogger(name).setLevel(logging.INFO)
        with tempfile.TemporaryDirectory(prefix="loupe-bench-") as tmp:
            home = Path(tmp)
            settings = Settings(home=home / "home", database_url=None, model=str(model))
            service = LoupeService.open(settings)
            service.slot.load(model)
            service.store.add_user("bench", "bench-password-1", "user")
            rss_loaded = _rss_mib()
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            app, url = launch(service, port=port, block=False)
            try:
                client = Client(url, auth=("bench", "bench-password-1"), verbose=False)
                per_case, started = [], time.perf_counter()
                for index in range(cases):
                    photo = home / f"case-{index}.jpg"
                    photo.write_bytes(_photo(index))
                    created = client.predict(handle_file(str(photo)), f"case {index}", api_name="/general_create_case")
                    case_id = int(created[5].split()[1])  # "Case N created."
                    client.predict(case_id, "What is shown?", api_name="/general_ask")
                    per_case.append(_rss_mib())
                vlm = service.slot.get()
                out.put({
                    "cases": cases, "seconds": round(time.perf_counter() - started, 1),
                    "rss_model_loaded_mib": rss_loaded, "rss_after_cases_mib": per_case[-1] if per_case else rss_loaded,
                    "rss_per_case_mib": per_case,
                    "peak_rss_mib": peak_rss_mb(),
                    "conversations_kept": len(vlm.conversations),
                    "kv_cache_mib": round(vlm.conversations.nbytes / 2**20, 1),
                    "kv_cache_budget_mib": settings.kv_cache_mb, "feature_cache_budget_mib": settings.feature_cache_mb,
                    "features_kept": len(vlm.features), "evictions_logged": evictions.count,
                    "engine": vlm.engine.name, "dtype": vlm.placement.dtype_name,
                })
            finally:
                app.close()
    except Exception as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run_memory_bench(family: str, size: str, cases: int) -> dict:
    from loupe.core.vlm.tiny import make_tiny

    with tempfile.TemporaryDirectory(prefix="loupe-bench-model-") as tmp:
        model = make_tiny(family, Path(tmp) / family, size=size)  # built here: the app only loads it
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_measure, args=(model, cases, queue))
        proc.start()
        result = queue.get()
        proc.join()
    peak = result.get("peak_rss_mib")
    return {"benchmark": "memory", "family": family, "size": size, "weights": "random", **result,
            "budget_mib": BUDGET_MIB, "within_budget": peak is not None and peak <= BUDGET_MIB}
