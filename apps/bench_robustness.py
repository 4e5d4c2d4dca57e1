"""``loupe bench robustness``: every generated hostile and everyday input through the app's own path, while a
second user keeps loading pages.

The app runs as ``loupe serve`` runs it (default budgets, uploads read in worker processes) on a loopback
port. For each specimen (``loupe.apps.robustness``) an uploader sends it the way the New case form does
(``LoupeService.create_case``'s worker job, then the store), a report goes to the rule checker and a
question to ``ask``, while a colleague signed in from another client loads the start page and the case list
over and over. Reported per specimen: what happened (processed, refused with its reason, stopped by a job
limit, crashed), whether that is what the specimen expects, the worker's peak RSS, and the colleague's
page-load times (p95, max) beside the same measure with nothing running.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.config import Settings
from loupe.core.errors import InputRejected, LoupeError
from loupe.core.jobs import JobFailed, JobStats

from .bench_process import peak_rss_mb
from .robustness import Specimen, specimens
from .service import LoupeService, ingest_in_worker

UPLOADER, COLLEAGUE = "bench_uploader", "bench_colleague"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway account in a throwaway home
IDLE_SAMPLES = 20


def check_report_in_worker(text: str, budgets: Budgets) -> int:
    """A worker job: the radiology rule checker over one report; returns how many spans it flags."""
    from loupe.domains.medical.reports.rules import check_rules
    from loupe.domains.medical.reports.sections import parse_report

    return len(check_rules(parse_report("bench", text), limits=budgets))


class Colleague:
    """Another signed-in user loading the start page and the case list until stopped, timing each load."""

    def __init__(self, url: str, domain: str = "general") -> None:
        from gradio_client import Client

        self.page = httpx.Client(base_url=url, timeout=60)
        self.page.post("/login", data={"username": COLLEAGUE, "password": PASSWORD}).raise_for_status()
        self.cases = Client(url, auth=(COLLEAGUE, PASSWORD), verbose=False)
        self.list_api = f"/{domain}_list_cases"
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_once(self) -> None:
        for load in (lambda: self.page.get("/").raise_for_status(),
                     lambda: self.cases.predict("", False, api_name=self.list_api)):
            start = time.perf_counter()
            try:
                load()
                self.times.append(time.perf_counter() - start)
            except Exception:  # noqa: BLE001 - a failed load counts as the slowest possible
                self.times.append(float("inf"))

    def start(self) -> None:
        self.times, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.load_once()
            time.sleep(0.05)

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
        return latency(self.times)


def latency(times: list[float]) -> dict:
    if not times:
        return {"loads": 0}
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"loads": len(ordered), "p95_ms": round(p95 * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1),
            "median_ms": round(statistics.median(ordered) * 1000, 1)}


def _outcome(service: LoupeService, specimen: Specimen, path: Path) -> tuple[str, str, str | None, JobStats | None]:
    """(outcome, message, budget named, worker stats) of one specimen through the app's path."""
    budgets = service.settings.budgets
    user = service.store.get_user(UPLOADER)
    try:
        if specimen.kind == "question":
            cases = service.store.list_cases(user)
            case_id = cases[0].id if cases else 0
            for _ in service.ask(user, case_id, path.read_text()):
                break
            return "processed", "", None, None
        if specimen.kind == "report":
            flagged, stats = service.jobs.run_with_stats(UPLOADER, "Checking the report", check_report_in_worker,
                                                         (path.read_text(), budgets))
            return "processed", f"{flagged} spans flagged", None, stats
        assets, stats = service.jobs.run_with_stats(UPLOADER, "Reading the file", ingest_in_worker,
                                                    (service.settings, type(service.domain(specimen.domain)),
                                                     path))
        service.store.create_case(user, specimen.domain, specimen.name, assets)
        return "processed", f"{len(assets)} assets", None, stats
    except BudgetExceeded as exc:
        return "refused", str(exc), exc.budget, getattr(exc, "job_stats", None)
    except JobFailed as exc:
        return "stopped", str(exc), None, None
    except (InputRejected, LoupeError) as exc:
        return "refused", str(exc), None, getattr(exc, "job_stats", None)
    except Exception as exc:  # noqa: BLE001 - the count that must stay 0
        return "crashed", type(exc).__name__, None, None


def corpus_specimens(folder: Path, domain: str) -> list[Specimen]:
    """Every file under ``folder`` as a specimen for ``domain``: real files, whatever their fate (counted, and a
    crash is never right)."""
    def copy(source: Path) -> Callable[[Path], Path]:
        def make(into: Path) -> Path:
            target = into / f"{len(list(into.iterdir())):05d}{source.suffix.lower()}"  # no original name on disk
            shutil.copyfile(source, target)
            return target
        return make

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [Specimen(f"{domain}:{p.relative_to(folder)}", domain, copy(p), "either", about="corpus file")
            for p in files]


def run_robustness_bench(workdir: Path, only: tuple[str, ...] = (),
                         corpus: tuple[Path, str] | None = None) -> dict:
    """The specimens (``only`` some of them by name), or with ``corpus=(folder, domain)`` every file under the
    folder sent to that domain."""
    from .web import launch

    named = [s for s in specimens() if not only or s.name in only]
    chosen = corpus_specimens(*corpus) if corpus is not None else named
    if workdir.exists():
        shutil.rmtree(workdir)
    files = workdir / "files"
    files.mkdir(parents=True)
    settings = Settings(home=workdir / "home", database_url=None, model="unused")  # serve's default budgets
    service = LoupeService.open(settings)
    for name in (UPLOADER, COLLEAGUE):
        service.store.add_user(name, PASSWORD)
    app, url = launch(service, port=_free_port(), block=False)
    try:
        colleague = Colleague(url)
        for _ in range(IDLE_SAMPLES):
            colleague.load_once()
        idle = latency(colleague.times)
        rows = []
        for specimen in chosen:
            path = specimen.make(files)
            colleague.start()
            started = time.perf_counter()
            outcome, message, budget, stats = _outcome(service, specimen, path)
            seconds = time.perf_counter() - started
            while len(colleague.times) < 4:  # a fast refusal still gets a few loads measured
                time.sleep(0.05)
            loads = colleague.stop()
            expected = {"accepted": outcome == "processed", "refused": outcome == "refused",
                        "either": outcome in ("processed", "refused")}[specimen.expect]
            if specimen.expect == "refused" and specimen.budget is not None:
                expected = expected and budget == specimen.budget
            rows.append({"name": specimen.name, "domain": specimen.domain, "kind": specimen.kind,
                         "about": specimen.about, "file_bytes": path.stat().st_size, "expect": specimen.expect,
                         "outcome": outcome, "as_expected": expected, "budget": budget, "message": message,
                         "seconds": round(seconds, 2),
                         "worker_peak_rss_mb": round(stats.peak_rss_bytes / 2**20, 1) if stats else None,
                         "colleague": loads})
    finally:
        app.close()
    return {"summary": _summary(rows, idle), "idle_colleague": idle, "specimens": rows,
            "web_process_peak_rss_mb": peak_rss_mb(), "cpu": _cpu()}


def _summary(rows: list[dict], idle: dict) -> dict:
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("processed", "refused", "stopped", "crashed")}
    p95s = [r["colleague"].get("p95_ms", 0) for r in rows]
    worst = max(p95s, default=0)
    rss = [r["worker_peak_rss_mb"] for r in rows if r["worker_peak_rss_mb"] is not None]
    return {**counts, "specimens": len(rows), "unexpected": [r["name"] for r in rows if not r["as_expected"]],
            "colleague_p95_ms_idle": idle.get("p95_ms"), "colleague_p95_ms_worst": worst,
            "colleague_p95_worst_over_idle": round(worst / idle["p95_ms"], 2) if idle.get("p95_ms") else None,
            "colleague_p95_under_1s": all(p < 1000 for p in p95s),
            "worker_peak_rss_mb_max": max(rss, default=None)}


def _cpu() -> dict:
    from loupe.core.vlm.device import cpu_flags

    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    have = cpu_flags()
    return {"cores": os.cpu_count(), "flags": [f for f in wanted if f in have]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
