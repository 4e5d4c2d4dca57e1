"""The served backend's parts that need no server: request building, adapter naming, the vLLM command."""

from __future__ import annotations

import json
import os
import time

from PIL import Image

from loupe.apps.serve_model import engine_binding, served_adapters, vllm_command
from loupe.core.vlm.base import Message
from loupe.core.vlm.remote import _events, openai_messages, served_adapter_name


def _adapter(folder, rank: int = 8):  # noqa: ANN001, ANN202
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "rank_pattern": {}}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def test_a_retrained_adapter_is_served_under_a_new_name(tmp_path):
    folder = _adapter(tmp_path / "a")
    first = served_adapter_name("cxr", folder)
    assert first.startswith("cxr-") and served_adapter_name("cxr", folder) == first  # stable while unchanged
    time.sleep(0.01)
    (folder / "adapter_model.safetensors").write_bytes(b"weights, trained again")
    os.utime(folder / "adapter_model.safetensors")
    assert served_adapter_name("cxr", folder) != first


def test_images_go_before_the_text_of_their_turn_as_lossless_data_urls():
    image = Image.new("RGB", (4, 3), (10, 20, 30))
    out = openai_messages([Message("system", "Be brief."), Message("user", "What?", [image]),
                           Message("assistant", "A square."), Message("user", "Colour?")])
    assert out[0] == {"role": "system", "content": "Be brief."}
    parts = out[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"] and parts[1]["text"] == "What?"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert out[2] == {"role": "assistant", "content": "A square."} and out[3]["content"] == "Colour?"


def test_server_sent_events_are_read_up_to_done():
    lines = ['data: {"choices": [{"delta": {"content": "a"}}]}', "", ": keep-alive",
             'data: {"choices": [], "usage": {"completion_tokens": 1}}', "data: [DONE]",
             'data: {"choices": [{"delta": {"content": "after"}}]}']
    assert list(_events(iter(lines))) == [{"choices": [{"delta": {"content": "a"}}]},
                                         {"choices": [], "usage": {"completion_tokens": 1}}]


def test_serve_model_registers_the_adapters_trained_on_the_served_model(store, tmp_path):
    model = str(tmp_path / "model")
    store.register_adapter("cxr", "medical", model, str(_adapter(tmp_path / "cxr", rank=24)), {})
    store.register_adapter("other", "documents", "some/other-model", str(_adapter(tmp_path / "other")), {})
    store.register_adapter("gone", "documents", model, str(tmp_path / "missing"), {})
    chosen, skipped = served_adapters(store, model)
    assert [a.name for a in chosen] == ["cxr"] and chosen[0].rank == 24
    assert any(s.startswith("other: trained on some/other-model") for s in skipped)
    assert any(s.startswith("gone: no adapter_config.json") for s in skipped)
    command = vllm_command(tmp_path / "python", model, "127.0.0.1", 8000, "float32", 4096, chosen, eager=True)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--max-lora-rank") + 1] == "32"  # the next rank vLLM accepts above 24
    assert command[command.index("--lora-modules") + 1] == f"{chosen[0].served}={chosen[0].path}"
    assert "--enforce-eager" in command and "--trust-request-mm-kwargs" in command


def test_the_engine_gets_every_core_of_a_small_machine_unless_the_operator_says_otherwise(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert engine_binding("auto") == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert engine_binding("vllm") == {}
    assert engine_binding("2-5")["VLLM_CPU_OMP_THREADS_BIND"] == "2-5"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert engine_binding("auto") == {}  # a large machine: vLLM's own choice
    assert engine_binding("all")["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, range(16)))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    assert engine_binding("all") == {}  # the operator's setting wins
