"""``loupe bench load``: a department's morning, measured. Simulated users sign in through the login form,
upload a real file in each domain, ask questions (follow-ups in the same case) and review answers over
the Gradio API, while one more user only browses. Run against:

- ``one``: one ``loupe serve`` process answering with the in-process engine (the one-machine default);
- ``two``: two ``loupe serve`` processes behind docs/nginx-loupe.conf, answering through ``loupe
  serve-model`` (vLLM), on the same database.

Each run reports questions per minute, time to first token p50/p95 (first answer text seen by the
client), the browsing user's page-load p95, errors, and the database against what clients received:
answers received but not stored (lost) and questions or answers stored twice (duplicated). With
``--faults``, the ``two`` setup is run again while a job worker is SIGKILLed during an upload, one app
process is SIGKILLed, the database server is restarted (``--restart-database``) and the model server is
killed and restarted. Beside the load, the model itself: aggregate decode tokens/s of 8 concurrent
users, served vs in-process; single-user TTFT, served vs in-process; and each CPU engine's TTFT
against the one ``auto`` chose.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from gradio_client.utils import Status

from .bench_faults import kill_a_busy_worker, restart_database
from .nginx_site import free_port, running_nginx, site_config

DATA = Path(__file__).resolve().parents[1] / "data"
UPLOADS = {  # a real file per domain, from the repository's samples
    "general": DATA / "samples" / "rsicd_airport_17.jpg",
    "medical": DATA / "medical" / "dicom" / "CT_small.dcm",
    "documents": DATA / "documents" / "ocr_test.pdf",
    "remote_sensing": DATA / "remote_sensing" / "RGB.byte.tif",
}
QUESTIONS = ("What does the image show?", "Is anything unusual visible?", "Describe the upper left part.",
             "Summarise it in one sentence.")
START_TIMEOUT_S = 900
# A question still open this long after a fault is counted lost with it (its client would wait forever).
ABANDON_AFTER_FAULT_S = 180


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


# -- processes -------------------------------------------------------------------------------------
def _wait(url: str, process: subprocess.Popen, path: str = "/readyz", timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, process.args[:5]))} exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}{path} was not ready after {timeout_s:.0f} s")


def _start(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)


@dataclass
class Deployment:
    url: str  # what users open (nginx, or the one process)
    apps: list[subprocess.Popen]
    app_ports: list[int]
    model_server: subprocess.Popen | None = None
    restart_model_server: object = None  # a callable that starts it again (fault runs)


@contextmanager
def model_server(work: Path, env: dict[str, str], model: Path) -> Iterator[tuple[str, callable]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    holder: dict[str, subprocess.Popen] = {}

    def start() -> subprocess.Popen:
        holder["p"] = _start(["serve-model", "--model", str(model), "--port", str(port), "--eager"], env,
                             work / "vllm.log")
        _wait(url, holder["p"], "/v1/models")
        return holder["p"]

    start()
    try:
        yield url, start, holder
    finally:
        _kill(holder["p"])


@contextmanager
def deployment(kind: str, work: Path, env: dict[str, str], model: Path, nginx: str | None) -> Iterator[Deployment]:
    with ExitStack() as stack:
        app_env = dict(env)
        served_holder = None
        restart = None
        if kind == "two":
            server_url, restart, served_holder = stack.enter_context(model_server(work, env, model))
            app_env["LOUPE_MODEL_SERVER"] = server_url
        ports = [free_port() for _ in range(1 if kind == "one" else 2)]
        apps = [_start(["serve", "--port", str(port)], app_env | {"LOUPE_TRUSTED_PROXIES": "127.0.0.1"},
                       work / f"serve-{port}.log") for port in ports]
        stack.callback(lambda: [_kill(p) for p in apps])
        for port, process in zip(ports, apps, strict=True):
            _wait(f"http://127.0.0.1:{port}", process)
        url = f"http://127.0.0.1:{ports[0]}"
        if kind == "two":
            if nginx is None:
                raise RuntimeError("the two-process run needs nginx (--nginx PATH or nginx on PATH)")
            nginx_port = free_port()
            url = stack.enter_context(running_nginx(nginx, work / "nginx", site_config(nginx_port, ports), nginx_port))
        yield Deployment(url, apps, ports, served_holder["p"] if served_holder else None, restart)


# -- users -----------------------------------------------------------------------------------------
@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    asked: int = 0
    answered: list[str] = field(default_factory=list)  # questions whose answer the client saw complete
    failed_with_message: int = 0
    uploads_failed_with_message: int = 0  # tried again once, as a user would
    errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # what the failed questions' users were told
    ttft: list[float] = field(default_factory=list)
    page_loads: list[float] = field(default_factory=list)
    faults_at: list[float] = field(default_factory=list)  # time.monotonic() of each fault (fault runs)


def _signed_in(url: str, name: str) -> tuple[httpx.Client, object]:
    from gradio_client import Client

    browser = httpx.Client(base_url=url, timeout=120)
    response = browser.post("/login", data={"username": name, "password": f"{name}-password"})
    response.raise_for_status()
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    return browser, Client(url, headers={"Cookie": cookie}, verbose=False, download_files=False)


def _user(url: str, name: str, domain: str, questions: int, tally: Tally, stop: threading.Event) -> None:
    from gradio_client import handle_file

    try:
        _, client = _signed_in(url, name)
        for attempt in range(2):
            status = str(client.predict(handle_file(str(UPLOADS[domain])), f"{name} load case",
                                        api_name=f"/{domain}_create_case")[5])
            if status.startswith("Case "):  # "Case N created."
                break
            with tally.lock:
                tally.uploads_failed_with_message += 1
                tally.messages.append(f"{name}: upload: {status[:160]}")
            if attempt:
                raise RuntimeError(f"the upload failed twice: {status[:120]}")
        case_id = int(status.split()[1])
    except Exception as exc:  # noqa: BLE001 - a user who cannot start is one error of the run
        with tally.lock:
            tally.errors.append(f"{name}: start: {type(exc).__name__}: {str(exc)[:120]}")
        return
    for i in range(questions):
        if stop.is_set():
            return
        question = f"[{name} #{i}] {QUESTIONS[i % len(QUESTIONS)]}"
        with tally.lock:
            tally.asked += 1
        start = time.monotonic()
        first = None
        try:
            job = client.submit(case_id, question, "low", None, api_name=f"/{domain}_ask")
            while not _finished(job):
                outputs = job.outputs()
                if first is None and outputs and _answer_text(outputs[-1][0]):
                    first = time.monotonic() - start
                if any(start - 30 < at < time.monotonic() - ABANDON_AFTER_FAULT_S for at in tally.faults_at):
                    # gradio_client does not end a job whose process died or whose stream broke: the question
                    # is lost with it
                    job.cancel()
                    raise ConnectionError("no end to its answer after a fault")
                time.sleep(0.05)
            final = job.outputs()[-1] if job.outputs() else job.result()
            status = str(final[2])
            if status.startswith("⚠️"):
                with tally.lock:
                    tally.failed_with_message += 1
                    tally.messages.append(f"{name}: {status[:160]}")
                continue
            if not status.startswith("Answered"):  # the stream stopped before the answer's end (a killed process)
                raise ConnectionError(f"the answer stopped at {status[:60]!r}")
            with tally.lock:
                tally.answered.append(question)
                if first is not None:
                    tally.ttft.append(first)
            if i % 5 == 4:  # a review now and then, of the newest answer
                opened = client.predict(case_id, api_name=f"/{domain}_open_case")
                newest = opened[3]["choices"][-1][1]
                client.predict(newest, "accepted", "", False, case_id, api_name=f"/{domain}_review")
        except Exception as exc:  # noqa: BLE001 - counted: a dropped connection, a killed process
            with tally.lock:
                tally.errors.append(f"{name}: ask: {type(exc).__name__}: {str(exc)[:120]}")
            # the next question on a fresh page (nginx sends it to a live process), with the case opened on it
            # as a user would; a failure here counts as the next question's error
            with contextlib.suppress(Exception):
                _, client = _signed_in(url, name)
                client.predict(case_id, api_name=f"/{domain}_open_case")


def _finished(job: object) -> bool:
    """The end of a streamed job, read as gradio_client's own iterator reads it (its ``done()`` and ``status()``
    can report the end while the stream goes on; a client that stops listening then cancels the answer)."""
    communicator = job.communicator  # type: ignore[attr-defined]
    with communicator.lock:
        return communicator.job.latest_status.code == Status.FINISHED


def _answer_text(history: object) -> str:
    """The newest answer's text in a streamed chat update (Gradio 6: a string or a list of typed parts)."""
    if not isinstance(history, list) or not history or history[-1].get("role") != "assistant":
        return ""
    content = history[-1].get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _browser(url: str, name: str, tally: Tally, stop: threading.Event) -> None:
    browser, _ = _signed_in(url, name)
    while not stop.is_set():
        for path in ("/", "/config"):
            start = time.perf_counter()
            try:
                ok = browser.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            with tally.lock:
                tally.page_loads.append(time.perf_counter() - start)
                if not ok:
                    tally.errors.append(f"browse {path}")
        time.sleep(0.5)


def _ledger(db_url: str, tally: Tally) -> dict:
    """The database against what the clients received."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT case_id, role, content, model_run_id FROM messages "
                                 "ORDER BY case_id, id")).all()
    engine.dispose()
    questions: dict[str, int] = {}
    answers_after: dict[str, int] = {}
    last_question = None
    last_case = None
    for case_id, role, content, _ in rows:
        if case_id != last_case:
            last_case, last_question = case_id, None
        if role == "user":
            questions[content] = questions.get(content, 0) + 1
            last_question = content
        elif last_question is not None:
            answers_after[last_question] = answers_after.get(last_question, 0) + 1
    received = set(tally.answered)
    return {"answers_received": len(received),
            "answer_rows": sum(answers_after.values()),
            "lost_writes": sum(1 for q in received if answers_after.get(q, 0) == 0),
            "questions_stored_without_answer": sum(1 for q in questions if answers_after.get(q, 0) == 0),
            # half-written: an answer row without its run record (answers are stored whole, in one transaction)
            "answers_without_run_record": sum(1 for _, role, _, run in rows if role == "assistant" and run is None),
            "duplicated_writes": sum(n - 1 for n in questions.values() if n > 1)
            + sum(n - 1 for n in answers_after.values() if n > 1)}


def run_load(dep: Deployment, users: int, questions: int, db_url: str, faults: bool = False,
             restart_db: str | None = None) -> dict:
    tally = Tally()
    stop = threading.Event()
    domains = list(UPLOADS)
    events: list[str] = []
    browse = threading.Thread(target=_browser, args=(dep.url, "browser", tally, stop), daemon=True)
    browse.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        futures = [pool.submit(_user, dep.url, f"user{u}", domains[u % len(domains)], questions, tally, stop)
                   for u in range(users)]
        if faults:
            total = users * questions
            survivor = dep.apps[-1]  # its worker is killed now; the other app process later
            worker = kill_a_busy_worker(survivor.pid)
            events.append(f"SIGKILL job worker {worker} of app process :{dep.app_ports[-1]} during an upload"
                          if worker else "no job worker was busy within 120 s: none killed")
            _when(tally, total // 3)
            _kill(dep.apps[0])
            tally.faults_at.append(time.monotonic())
            events.append(f"SIGKILL app process :{dep.app_ports[0]} after {tally.asked} questions")
            if restart_db:
                _when(tally, total // 2)
                tally.faults_at.append(time.monotonic())
                took = restart_database(restart_db)
                events.append(f"database server restarted in {took:.1f} s after {tally.asked} questions")
            if dep.model_server is not None:
                _when(tally, 2 * total // 3)
                _kill(dep.model_server)
                events.append(f"SIGKILL model server after {tally.asked} questions")
                time.sleep(5)
                dep.restart_model_server()
                events.append(f"model server back after {tally.asked} questions")
        for future in futures:
            future.result()
    wall = time.perf_counter() - start
    stop.set()
    browse.join(10)
    ledger = _ledger(db_url, tally)
    return {"users": users, "questions_per_user": questions, "asked": tally.asked,
            "answered": len(tally.answered), "failed_with_message": tally.failed_with_message,
            "uploads_failed_with_message": tally.uploads_failed_with_message,
            "errors": len(tally.errors), "error_samples": tally.errors[:5],
            "message_samples": tally.messages[:5], "wall_s": round(wall, 1),
            "questions_per_min": round(60 * len(tally.answered) / wall, 2),
            "ttft_p50_s": _pct(tally.ttft, 0.5), "ttft_p95_s": _pct(tally.ttft, 0.95),
            "browse_p95_s": _pct(tally.page_loads, 0.95), "page_loads": len(tally.page_loads),
            "fault_events": events, **ledger}


def _when(tally: Tally, asked: int, timeout_s: float = 3600) -> None:
    deadline = time.monotonic() + timeout_s
    while tally.asked < asked and time.monotonic() < deadline:
        time.sleep(0.2)


def _prepare_home(home: Path, db_url: str | None, users: int) -> tuple[dict[str, str], str]:
    import shutil

    from loupe.core.cases.assets import AssetStore
    from loupe.core.cases.db import open_database
    from loupe.core.cases.store import CaseStore

    shutil.rmtree(home, ignore_errors=True)  # a fresh department for each run
    home.mkdir(parents=True)
    url = db_url or f"sqlite:///{home / 'loupe.db'}"
    store = CaseStore(open_database(url), AssetStore(home / "assets"))
    for name in [*(f"user{u}" for u in range(users)), "browser"]:
        store.add_user(name, f"{name}-password", "user")
    env = {**os.environ, "LOUPE_HOME": str(home)}
    env.pop("LOUPE_MODEL_SERVER", None)
    if db_url:
        env["LOUPE_DATABASE_URL"] = db_url
    else:
        env.pop("LOUPE_DATABASE_URL", None)
    return env, url


# -- the model alone ---------------------------------------------------------------------------------
def model_figures(model: Path, server_url: str | None, concurrent: int = 8, new_tokens: int = 32) -> dict:
    """Aggregate decode tokens/s of ``concurrent`` users and single-user TTFT: served vs in-process."""
    from PIL import Image

    from loupe.core.vlm.base import GenerationOptions, Message
    from loupe.core.vlm.hf import HFVLM

    options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens, detail="low")
    prompts = [[Message("user", f"Report {i}: the lungs are clear. Is there an error in this report?")]
               for i in range(concurrent)]

    def aggregate(vlm: object) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            runs = list(pool.map(lambda m: vlm.chat(m, options).run, prompts))
        return sum(r.output_tokens for r in runs) / (time.perf_counter() - start)

    def ttft(vlm: object, seed: int) -> float:
        image = Image.effect_noise((512, 512), 40 + seed).convert("RGB")  # new pixels: nothing cached
        return vlm.chat([Message("user", "Describe this image.", [image])], options).run.time_to_first_token_s

    local = HFVLM.from_pretrained(model)
    aggregate(local)  # warm-up
    figures = {"in_process_engine": local.engine.name, "in_process_decode_tok_s": round(aggregate(local), 2),
               "in_process_ttft_s": round(min(ttft(local, s) for s in range(2)), 3)}
    del local
    if server_url:
        from loupe.core.vlm.remote import RemoteVLM

        served = RemoteVLM.connect(model, server_url)
        aggregate(served)
        figures |= {"served_decode_tok_s": round(aggregate(served), 2),
                    "served_ttft_s": round(min(ttft(served, 10 + s) for s in range(2)), 3)}
    return figures


def engine_figures(model: Path) -> dict:
    """TTFT of each CPU engine on the app's path (512-px image, standard detail), and the one auto chose."""
    from PIL import Image

    from loupe.core.vlm.base import GenerationOptions, Message
    from loupe.core.vlm.device import cpu_has_native_bf16
    from loupe.core.vlm.engine_choice import MAX_SLOWDOWN, matmul_slowdown
    from loupe.core.vlm.hf import HFVLM

    options = GenerationOptions(max_new_tokens=8, detail="standard")
    candidates = {"int8": dict(engine="int8"), "fp32": dict(engine="plain", dtype="fp32")}
    if cpu_has_native_bf16():
        candidates["bf16"] = dict(engine="plain", dtype="bf16")
    ttfts: dict[str, float] = {}
    not_timed: dict[str, str] = {}
    for name, kwargs in candidates.items():
        ratio = matmul_slowdown(name) if name != "fp32" else 1.0
        if ratio >= MAX_SLOWDOWN:  # minutes per answer here: it cannot be the best
            not_timed[name] = f"matrix products {ratio:.1f}x slower than fp32"
            continue
        vlm = HFVLM.from_pretrained(model, **kwargs)
        runs = [vlm.chat([Message("user", "Describe this image.", [Image.effect_noise((512, 512), 30 + s)
                                                                     .convert("RGB")])], options).run
                for s in range(3)]
        ttfts[name] = round(min(r.time_to_first_token_s for r in runs[1:]), 3)
        del vlm
    auto = HFVLM.from_pretrained(model)  # measures (or reads its measurement) and picks
    chosen = "bf16" if auto.placement.dtype_name == "bfloat16" else "int8" if auto.engine.name == "int8" else "fp32"
    return {"engine_ttft_s": ttfts, "not_timed": not_timed, "auto_chose": chosen, "auto_reason": auto.engine.reason,
            "auto_engine_ttft_ratio_to_best": round(ttfts[chosen] / min(ttfts.values()), 3)}


# -- the whole bench -----------------------------------------------------------------------------------
def run(workdir: Path | None, users: int, questions: int, database_url: str | None, faults: bool,
        nginx: str | None, parts: Sequence[str], answer_tokens: int = 32, restart_db: str | None = None) -> dict:
    from loupe.core.vlm.device import cpu_flags
    from loupe.core.vlm.tiny import make_tiny

    work = Path(workdir or tempfile.mkdtemp(prefix="loupe-bench-load-"))
    model = work / "smolvlm-256m-random"
    if not (model / "config.json").is_file():
        make_tiny("smolvlm", model, size="real")
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "flags": flags,
                                "cores": os.cpu_count()}, "model": "SmolVLM-256M size, random weights",
                    "answer_tokens": answer_tokens,
                    "database": "postgresql" if database_url and database_url.startswith("postgres") else "sqlite"}
    runs: dict[str, dict] = {}
    for kind in ("one", "two") + (("two-faults",) if faults else ()):
        if kind.split("-")[0] not in parts and kind not in parts:
            continue
        home = work / f"home-{kind}"
        db_url = None
        if database_url:
            db_url = _fresh_database(database_url, kind)
        env, url = _prepare_home(home, db_url, users + 1)
        env["LOUPE_MODEL"] = str(model)
        env["LOUPE_MAX_ANSWER_TOKENS"] = str(answer_tokens)
        with deployment(kind.split("-")[0], home, env, model, nginx) as dep:
            runs[kind] = run_load(dep, users, questions, url, faults=kind.endswith("faults"), restart_db=restart_db)
        print(json.dumps({kind: runs[kind]}), file=sys.stderr, flush=True)  # progress: each run as it ends
    result["runs"] = runs
    if "model" in parts:
        with model_server(work, {**os.environ, "LOUPE_HOME": str(work / "home-model")}, model) as (server, _, _):
            result["model_figures"] = model_figures(model, server)
        print(json.dumps({"model_figures": result["model_figures"]}), file=sys.stderr, flush=True)
    if "engines" in parts:
        result["engines"] = engine_figures(model)
    result["summary"] = _summary(result)
    return result


def _fresh_database(admin_url: str, kind: str) -> str:
    """A new database on the PostgreSQL server of ``admin_url`` for one run."""
    from sqlalchemy import create_engine, text

    name = f"loupe_bench_{kind.replace('-', '_')}_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _summary(result: dict) -> dict:
    runs = result.get("runs", {})
    one, two = runs.get("one"), runs.get("two")
    figures = result.get("model_figures", {})
    summary: dict = {}
    if one and two and one["questions_per_min"]:
        summary["two_process_speedup"] = round(two["questions_per_min"] / one["questions_per_min"], 2)
    if figures.get("served_decode_tok_s"):
        summary["served_concurrent_decode_speedup"] = round(
            figures["served_decode_tok_s"] / figures["in_process_decode_tok_s"], 2)
        summary["served_ttft_ratio"] = round(figures["served_ttft_s"] / figures["in_process_ttft_s"], 2)
    if "engines" in result:
        summary["auto_engine_ttft_ratio_to_best"] = result["engines"]["auto_engine_ttft_ratio_to_best"]
    loads = [r for r in runs.values() if r.get("browse_p95_s") is not None]
    if loads:
        summary["browse_p95_s"] = max(r["browse_p95_s"] for r in loads)
    summary["lost_writes"] = sum(r["lost_writes"] for r in runs.values())
    summary["duplicated_writes"] = sum(r["duplicated_writes"] for r in runs.values())
    summary["errors"] = sum(r["errors"] for k, r in runs.items() if not k.endswith("faults"))
    return summary
