"""``auto`` on CPU: the engine measured fastest to the first token at equal quality, cached per machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from loupe.core.vlm import engine_choice
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.engine_choice import (
    EngineCache,
    EngineReport,
    Measurement,
    machine_key,
    measure,
    pick,
)
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.int8 import Int8Linear
from loupe.core.vlm.slot import ModelSlot

ANSWER = GenerationOptions(max_new_tokens=3, min_new_tokens=3, detail="low")


def _fake(costs: dict[str, float], logits: dict[str, torch.Tensor] | None = None):
    """A forward pass that takes ``costs[candidate]`` seconds on a fake clock and returns fixed logits."""
    now = [0.0]
    reference = torch.linspace(-3, 3, 50)

    def forward(candidate: str, model: nn.Module, inputs: dict) -> torch.Tensor:
        now[0] += costs[candidate]
        return (logits or {}).get(candidate, reference)

    return forward, lambda: now[0]


def _small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


def test_the_rule_is_the_lowest_time_among_eligible_candidates():
    results = [Measurement("int8", 0.81, 0.9995), Measurement("fp32", 1.0, 1.0), Measurement("bf16", 0.45, 0.998)]
    assert pick(results) == "bf16"
    assert pick([*results[:2], Measurement("bf16", 0.45, 0.95)]) == "int8"  # bf16's logits differ: not eligible
    assert pick([Measurement("int8", 0.5, 0.999), Measurement("fp32", 0.4, 1.0)]) == "fp32"
    assert pick([Measurement("int8", note="failed"), Measurement("bf16", 0.1, 0.5)]) == "fp32"  # nothing eligible


def test_measuring_times_each_candidate_and_picks_the_fastest():
    forward, clock = _fake({"int8": 0.8, "fp32": 1.0, "bf16": 0.45})
    results = measure(_small_model(), {}, ["int8", "fp32", "bf16"], forward=forward, clock=clock, slowdown=None)
    assert [(m.candidate, m.ttft_s, m.cosine) for m in results] == [
        ("int8", 0.8, 1.0), ("fp32", 1.0, 1.0), ("bf16", 0.45, 1.0)]
    assert pick(results) == "bf16"


def test_a_candidate_whose_logits_differ_is_not_eligible_however_fast():
    broken = {"int8": torch.linspace(3, -3, 50)}  # the reversed logits: cosine -1
    forward, clock = _fake({"int8": 0.1, "fp32": 1.0, "bf16": 0.6}, broken)
    results = {m.candidate: m for m in measure(_small_model(), {}, ["int8", "fp32", "bf16"], forward, clock,
                                               slowdown=None)}
    assert not results["int8"].eligible and "logits differ" in results["int8"].note
    assert results["bf16"].eligible and pick(list(results.values())) == "bf16"


def test_a_candidate_whose_matrix_products_are_much_slower_is_not_timed():
    timed = []

    def forward(candidate: str, m: nn.Module, inputs: dict) -> torch.Tensor:
        timed.append(candidate)
        return torch.ones(4)

    slowdowns = {"int8": 30.4, "bf16": 1.2}  # int8 without VNNI, as measured on an AVX2-only EPYC
    results = {m.candidate: m for m in measure(_small_model(), {}, ["int8", "fp32", "bf16"], forward=forward,
                                               slowdown=slowdowns.__getitem__)}
    assert "int8" not in timed and {"fp32", "bf16"} <= set(timed)
    assert results["int8"].ttft_s is None and "30.4x slower" in results["int8"].note
    assert not results["int8"].eligible and results["bf16"].ttft_s is not None


def test_candidates_are_applied_while_timed_and_undone_after():
    model = _small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = {}

    def forward(candidate: str, m: nn.Module, inputs: dict) -> torch.Tensor:
        seen[candidate] = (type(m[0]).__name__, m[2].weight_t.dtype if candidate == "int8" else m[2].weight.dtype)
        return torch.ones(4)

    measure(model, {}, ["int8", "fp32", "bf16"], forward=forward, slowdown=None)
    assert seen == {"fp32": ("Linear", torch.float32), "int8": ("Int8Linear", torch.int8),
                    "bf16": ("Linear", torch.bfloat16)}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the fp32 model, unchanged


def _report(key: dict) -> EngineReport:
    return EngineReport("int8", (Measurement("int8", 0.5, 0.999), Measurement("fp32", 0.9, 1.0)), "now", key=key)


def test_the_cache_is_keyed_by_cpu_flags_and_a_corrupt_file_is_rewritten(tmp_path):
    cache = EngineCache(tmp_path / "engines.json")
    avx2 = machine_key("m", "files:1", flags={"avx2"}, cpu="Some CPU")
    amx = machine_key("m", "files:1", flags={"avx2", "amx_bf16"}, cpu="Some CPU")
    cache.put(_report(avx2))
    assert cache.get(avx2).chosen == "int8" and cache.get(avx2).cached
    assert cache.get(amx) is None  # another machine (or a changed CPU) measures again
    assert cache.get(machine_key("m", "files:2", flags={"avx2"}, cpu="Some CPU")) is None  # changed checkpoint
    cache.path.write_text('{"version": 1, "entries": {"x": ')  # cut short
    assert cache.get(avx2) is None
    cache.put(_report(amx))
    entries = json.loads(cache.path.read_text())["entries"]
    assert [e["key"] for e in entries.values()] == [amx] and cache.path.stat().st_mode & 0o077 == 0


def test_the_real_measurement_on_a_tiny_model_is_cached_and_read_back(tiny_model_dir, tmp_path, monkeypatch):
    path = tmp_path / "cache" / "engines.json"
    slot = ModelSlot(device="cpu", engine_cache=path)
    slot.load(tiny_model_dir("smolvlm"))
    vlm, status = slot.get(), slot.status
    report = vlm.engine.report
    assert report is not None and not report.cached
    assert status.engine == vlm.engine.name and status.engine_reason.startswith("auto: ")
    measured = {m.candidate: m for m in report.results}
    assert measured["fp32"].cosine == 1.0 and measured[report.chosen].eligible
    assert all(m.ttft_s == min(x.ttft_s for x in report.results if x.eligible)
               for m in report.results if m.candidate == report.chosen)
    entry, = json.loads(path.read_text())["entries"].values()
    assert entry["chosen"] == report.chosen and entry["key"]["model"] == str(tiny_model_dir("smolvlm"))
    assert {"torch", "cpu", "flags_hash", "model_hash", "threads"} <= set(entry["key"])
    assert {r["candidate"] for r in entry["results"]} == {"int8", "fp32", "bf16"}
    # The engine that runs is the one chosen, and the run record says why.
    int8 = any(isinstance(m, Int8Linear) for m in vlm.model.modules())
    assert int8 == (report.chosen == "int8") and vlm.placement.dtype == report.dtype
    run = vlm.chat([Message("user", "What?", [Image.new("RGB", (64, 64), "red")])], ANSWER).run
    assert run.extra["engine"] == report.engine and run.extra["engine_reason"] == report.reason

    def no_measuring(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("measured again although the cache holds this machine and model")

    monkeypatch.setattr(engine_choice, "measure_engines", no_measuring)
    again = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", engine_cache=path)
    assert again.engine.report.cached and again.engine.report.chosen == report.chosen
    assert "cached" in again.engine.reason


def test_bf16_measured_fastest_runs_the_model_in_bf16(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_choice, "cpu_flags", lambda: {"avx2", "avx512_bf16", "amx_bf16"})
    timed = [Measurement("int8", 0.8, 0.9995), Measurement("fp32", 1.0, 1.0), Measurement("bf16", 0.45, 0.998)]
    monkeypatch.setattr(engine_choice, "measure", lambda *args, **kwargs: list(timed))
    vlm = HFVLM.from_pretrained(tiny_model_dir("qwen2vl"), device="cpu", engine_cache=tmp_path / "e.json")
    assert (vlm.engine.name, vlm.placement.dtype) == ("plain", torch.bfloat16)
    assert vlm.engine.reason == "auto: bf16 measured fastest on this CPU (int8 0.80 s, fp32 1.00 s, bf16 0.45 s)"
    assert next(vlm.model.parameters()).dtype == torch.bfloat16
    assert vlm.chat([Message("user", "Hi?", [Image.new("RGB", (48, 48), "blue")])], ANSWER).run.output_tokens == 3


def test_an_explicit_engine_or_dtype_is_not_measured(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_choice, "measure_engines", lambda *a, **k: pytest.fail("measured"))
    path = tmp_path / "e.json"
    assert HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", engine="int8",
                                 engine_cache=path).engine.name == "int8"
    assert HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", dtype="fp32",
                                 engine_cache=path).engine.name == "plain"
    assert not path.exists()


def test_models_engines_prints_the_table_then_reads_the_cache(tiny_model_dir, tmp_path):
    from loupe.apps.cli import cli

    env = {"LOUPE_HOME": str(tmp_path / "home"), "LOUPE_DEVICE": "cpu", "LOUPE_ENGINE_CACHE": None}
    runner = CliRunner()
    model = str(tiny_model_dir("llava-ov"))
    first = runner.invoke(cli, ["models", "engines", model, "--remeasure"], env=env)
    assert first.exit_code == 0, first.output
    for part in ("flags: avx2", "avx512_vnni", "amx_bf16", "avx512_bf16", "engine", "TTFT", "cosine",
                 "eligible", "chosen", "int8", "fp32", "bf16", "auto runs:"):
        assert part in first.output
    assert "from the cache" not in first.output
    assert (Path(env["LOUPE_HOME"]) / "cache" / "engines.json").is_file()
    second = runner.invoke(cli, ["models", "engines", model], env=env)
    assert second.exit_code == 0 and "from the cache" in second.output, second.output
