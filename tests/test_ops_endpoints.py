"""Operations endpoints of the real app: /healthz, /readyz, Prometheus /metrics (loopback or a token) and JSON
logs. After a login, a DICOM upload and a question, the metrics count them by route template, and no label
or log line names the user, the case, the patient or the uploaded file."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from click.testing import CliRunner
from gradio_client import handle_file
from helpers import free_port
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient
from webapp import serve

from loupe.apps import logformat
from loupe.apps.cli import cli
from loupe.apps.service import LoupeService, configured_domains
from loupe.apps.web.server import create_app
from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import make_engine
from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.slot import ModelSlot

DICOM = Path(__file__).parents[1] / "data" / "medical" / "dicom" / "DX_chest_MONOCHROME1.dcm"
PATIENT = "ZEBRAFINCH^QUENTINA"
FILE_NAME = "quentina-zebrafinch-chest.dcm"
USER = "ottoline.radiology"
IDENTIFYING = (USER, "ZEBRAFINCH", "QUENTINA", "quentina-zebrafinch", FILE_NAME)
TOKEN = "metrics-token-for-the-test-0123456789"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """One user logs in (after one wrong password), uploads a named patient's DICOM, asks, opens the image;
    every log line of it in JSON."""
    tmp = tmp_path_factory.mktemp("ops")
    log_path = tmp / "loupe.log"
    with log_path.open("w") as log_file:
        logformat.configure("json", logging.INFO, stream=log_file)
        try:
            with serve(tmp / "home", tiny_model_dir("smolvlm"), {USER: "user"}) as served:
                yield _use(served, tmp) | {"log": log_path}
        finally:
            logformat.reset()


def _use(served, tmp: Path) -> dict:
    assert served.http().post("/login", data={"username": USER, "password": "wrong"}).status_code == 401
    user = served.client(USER)
    dataset = pydicom.dcmread(DICOM)
    dataset.PatientName = PATIENT
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    upload = tmp / FILE_NAME
    upload.write_bytes(buffer.getvalue())
    created = user.predict(handle_file(str(upload)), "chest", api_name="/medical_create_case")
    case_id = int(created[5].split()[1])
    user.submit(case_id, "Is there an effusion?", api_name="/medical_ask").result()
    case = served.service.store.open_case(served.service.user(USER), case_id)
    assert served.http(USER).get(f"/case-assets/{case.assets[0].id}").status_code == 200
    metrics = httpx.get(served.url + "metrics", timeout=30)  # from loopback: no token needed
    assert metrics.status_code == 200, metrics.text
    return {"served": served, "case_id": case_id, "asset_id": case.assets[0].id, "metrics": metrics.text}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_and_readyz_answer_without_a_login(world):
    anonymous = world["served"].http()
    health = anonymous.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_metrics_count_the_login_upload_question_and_jobs(world):
    samples = _samples(world["metrics"])
    requests = "loupe_http_requests_total"
    assert _value(samples, requests, method="POST", route="/gradio_api/upload", status="2xx") >= 1
    assert _value(samples, requests, method="GET", route="/case-assets/{asset_id}", status="2xx") == 1
    assert _value(samples, requests, method="POST", route="/login", status="4xx") == 1
    assert _value(samples, "loupe_http_request_duration_seconds_count", route="/gradio_api/upload") >= 1
    assert _value(samples, "loupe_logins_total", result="success") >= 1
    assert _value(samples, "loupe_logins_total", result="failure") == 1
    assert _value(samples, "loupe_jobs_finished_total", outcome="ok") >= 2  # the upload's ingest, the context
    assert ("loupe_jobs_running", ()) in samples and ("loupe_jobs_queued", ()) in samples
    assert _value(samples, "loupe_answers_total") == 1
    assert _value(samples, "loupe_answer_time_to_first_token_seconds_count") == 1
    assert _value(samples, "loupe_answer_time_to_first_token_seconds_sum") > 0
    assert _value(samples, "loupe_answer_decode_tokens_per_second_count") == 1
    assert _value(samples, "loupe_answer_tokens_generated_total") > 1
    assert _value(samples, "loupe_conversation_cache_answers_total", result="miss") == 1
    assert _value(samples, "loupe_feature_cache_lookups_total", result="miss") >= 1
    assert _value(samples, "loupe_model_ready") == 1 and _value(samples, "loupe_model_demo") == 1


def test_no_label_names_a_user_case_patient_or_file(world):
    text = world["metrics"]
    assert not [word for word in IDENTIFYING if word.lower() in text.lower()]
    routes = {s.labels["route"] for family in text_string_to_metric_families(text) for s in family.samples
              if "route" in s.labels}
    assert "/case-assets/{asset_id}" in routes
    raw = [r for r in routes if re.search(rf"/({world['case_id']}|{world['asset_id']})(/|$)", r)]
    assert not raw and all(r == "unmatched" or r.startswith("/") for r in routes)


def test_json_logs_carry_request_ids_and_nothing_identifying(world):
    served = world["served"]
    rid = served.http().get("/healthz").headers["x-request-id"]
    deadline = time.monotonic() + 20  # the request's line is written once its response has gone out
    while rid not in world["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = world["log"].read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any(e.get("route") == "/gradio_api/upload" and e.get("request_id") for e in entries)
    assert any(e.get("request_id") == rid and e.get("route") == "/healthz" for e in entries)
    text = "\n".join(lines).lower()
    assert not [word for word in IDENTIFYING if word.lower() in text]
    server = [e for e in entries if not e["logger"].startswith(("httpx", "httpcore"))]  # not the test's client
    assert not [e for e in server if f"/case-assets/{world['asset_id']}" in json.dumps(e)]


def _app(tmp_path: Path, slot: ModelSlot | None = None, database_url: str | None = None) -> TestClient:
    settings = Settings(home=tmp_path / "home", database_url=None, model="unused")
    settings.ensure_dirs()
    engine = make_engine(database_url) if database_url else None
    if engine is None:
        service = LoupeService.open(settings, slot)
    else:  # a database that does not answer: nothing can be migrated, the app still serves
        store = CaseStore(sessionmaker(engine), AssetStore(settings.assets_dir))
        service = LoupeService(settings, store, configured_domains(settings), slot or ModelSlot())
    app, _ = create_app(service)
    return app


def test_readyz_waits_for_the_model_and_the_database(tmp_path, tiny_model_dir):
    release = threading.Event()

    def slow_loader(path: Path, **kwargs: object) -> HFVLM:
        release.wait()
        return HFVLM.from_pretrained(path, dtype="fp32")

    slot = ModelSlot(slow_loader)
    slot.load(tiny_model_dir("smolvlm"), background=True)
    with TestClient(_app(tmp_path / "a", slot), client=("127.0.0.1", 4000)) as client:
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["not_ready"] == {"model": "loading"}
        assert client.get("/healthz").status_code == 200  # alive all the same
        release.set()
        deadline = time.monotonic() + 60
        while slot.status.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json() == {"status": "ready"}
    refusing = f"postgresql+psycopg://loupe@127.0.0.1:{free_port()}/loupe"  # nothing listens there
    with TestClient(_app(tmp_path / "b", slot, refusing), client=("127.0.0.1", 4000)) as client:
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json()["not_ready"] == {"database": "unreachable"}
        assert "127.0.0.1" not in down.text and "postgresql" not in down.text
        assert client.get("/healthz").status_code == 200


def test_requests_while_the_database_is_down_get_503_without_the_drivers_text(tmp_path, caplog):
    refusing = f"postgresql+psycopg://loupe@127.0.0.1:{free_port()}/loupe"  # a restart: nothing listens there
    with TestClient(_app(tmp_path, None, refusing), client=("127.0.0.1", 4000)) as client:
        signed_in = client.get("/", cookies={"loupe_session": "a-session-the-database-must-confirm"})
        login = client.post("/login", data={"username": USER, "password": "whatever-it-is"})
    for response in (signed_in, login):
        assert response.status_code == 503 and "unavailable" in response.json()["detail"]
        assert "postgresql" not in response.text and "127.0.0.1" not in response.text
        assert response.headers["cache-control"] == "no-store"
    assert "database unavailable: request answered 503" in caplog.text and "Traceback" not in caplog.text


def test_metrics_answer_loopback_clients_or_the_token_holder_only(tmp_path, monkeypatch):
    plain = _app(tmp_path / "a")
    with TestClient(plain, client=("127.0.0.1", 4000)) as local:
        assert local.get("/metrics").status_code == 200
        relayed = local.get("/metrics", headers={"x-forwarded-for": "203.0.113.7"})  # a proxy on this host
        assert relayed.status_code == 404
    with TestClient(plain, client=("203.0.113.7", 4000)) as remote:
        assert remote.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 404  # no token set
    monkeypatch.setenv("LOUPE_METRICS_TOKEN", TOKEN)
    with TestClient(_app(tmp_path / "b"), client=("203.0.113.7", 4000)) as remote:
        assert remote.get("/metrics").status_code == 404
        assert remote.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 404
        scraped = remote.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert "loupe_http_requests_total" in scraped.text


def test_log_format_is_checked_and_offered(tmp_path):
    runner = CliRunner()
    env = {"LOUPE_HOME": str(tmp_path / "home"), "LOUPE_LOG_FORMAT": "xml"}
    refused = runner.invoke(cli, ["users", "list"], env=env)
    assert refused.exit_code == 1 and "LOUPE_LOG_FORMAT" in refused.output
    assert "--log-format [text|json]" in runner.invoke(cli, ["serve", "--help"]).output
    logformat.reset()
