"""Execution engines: the automatic choice, the int8 CPU engine, the static-cache (GPU) engine on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.engines import cache_bucket, choose_engine
from loupe.core.vlm.families import FAMILIES
from loupe.core.vlm.features import encoder_inputs
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.int8 import Int8Linear, int8_matmul_available, quantize_linears

SAMPLES = sorted((Path(__file__).parents[1] / "data" / "samples").glob("*.jpg"))
OPTIONS = GenerationOptions(max_new_tokens=10, min_new_tokens=10, detail="standard")


def _answer(vlm: HFVLM, image: Image.Image, options: GenerationOptions = OPTIONS) -> tuple[str, dict]:
    chunks = list(vlm.stream([Message("user", "What is shown?", [image])], options))
    return "".join(c.text for c in chunks), chunks[-1].run.extra


def test_automatic_choice_per_device():
    assert choose_engine(None, "cuda").name == "static"
    assert choose_engine("auto", "cuda:1").name == "static"
    assert choose_engine(None, "cpu").name == "auto"  # measured when the model loads (test_engine_choice.py)
    assert choose_engine(None, "cpu", dtype_forced=True).name == "plain"  # an explicit dtype is honoured
    assert choose_engine("plain", "cuda").name == "plain"
    assert choose_engine("static", "cpu").name == "static"  # runs uncompiled: how these tests check it


@pytest.mark.parametrize(("engine", "device", "forced", "message"), [
    ("int8", "cuda", False, "CPU only"),
    ("int8", "cpu", True, "leave the dtype automatic"),
    ("turbo", "cpu", False, "unknown engine"),
])
def test_impossible_engines_are_clear_errors(engine, device, forced, message):
    with pytest.raises(ValueError, match=message):
        choose_engine(engine, device, dtype_forced=forced)


def test_without_the_int8_product_cpu_falls_back_to_plain_and_still_answers(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.delattr(torch, "_int_mm")  # as if a later torch dropped it
    assert not int8_matmul_available()
    with pytest.raises(ValueError, match="cannot run"):
        choose_engine("int8", "cpu")
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", engine_cache=tmp_path / "engines.json")
    int8, = (m for m in vlm.engine.report.results if m.candidate == "int8")
    assert int8.ttft_s is None and "int8 matrix product" in int8.note  # not a candidate here
    text, extra = _answer(vlm, Image.new("RGB", (64, 64), "red"))
    assert extra["engine"] == "plain" and text


def test_int8_linear_matches_linear_and_each_row_is_independent_of_the_batch():
    torch.manual_seed(0)
    linear = nn.Linear(72, 40)
    quantized = Int8Linear(linear)
    x = torch.randn(3, 5, 72)
    with torch.inference_mode():
        exact, approx = linear(x), quantized(x)
        alone = torch.stack([torch.stack([quantized(x[i, j]) for j in range(5)]) for i in range(3)])
    assert approx.shape == exact.shape and approx.dtype == x.dtype
    assert float((approx - exact).norm() / exact.norm()) < 0.02
    assert torch.equal(approx, alone)  # the same bits whatever else is in the product


def test_int8_engine_swaps_every_linear_layer(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("qwen2vl"), device="cpu", engine="int8")
    assert vlm.engine.name == "int8" and vlm.placement.dtype == torch.float32
    assert not any(type(m) is nn.Linear for m in vlm.model.modules())
    assert any(isinstance(m, Int8Linear) for m in vlm.model.model.visual.modules())
    assert isinstance(vlm.model.lm_head, Int8Linear)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_int8_features_agree_with_fp32_on_real_images(tiny_model_dir, family):
    assert SAMPLES, "data/samples holds the real test images"
    plain = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32")
    fast = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", engine="int8")
    for path in SAMPLES:
        messages = [Message("user", "Read it.", [Image.open(path).convert("RGB")])]
        inputs = plain.prepare(messages, "standard")
        features = []
        for vlm in (plain, fast):
            get = vlm.model.model.get_image_features
            with torch.inference_mode():
                pooled = get(**encoder_inputs(get, inputs), return_dict=True).pooler_output
            features.append(torch.cat([p.flatten() for p in pooled]) if isinstance(pooled, list | tuple)
                            else pooled.flatten())
        assert float(nn.functional.cosine_similarity(*features, dim=0)) >= 0.99, path.name


def test_int8_and_plain_features_never_share_the_cache(tiny_model_dir):
    plain = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", dtype="fp32")
    fast = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", engine="int8")
    assert plain._fingerprint != fast._fingerprint


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_static_engine_answers_exactly_as_plain(tiny_model_dir, family):
    image = Image.new("RGB", (96, 80), (10, 120, 200))
    plain = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="plain")
    static = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="static")
    expected, _ = _answer(plain, image)
    got, extra = _answer(static, image)
    assert extra["engine"] == "static" and got == expected


def test_a_follow_up_longer_than_the_static_cache_starts_over(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", dtype="fp32", engine="static")
    image = Image.new("RGB", (64, 64), "green")
    short = GenerationOptions(max_new_tokens=4, min_new_tokens=4, detail="low")
    first = [Message("user", "What?", [image])]
    answer = "".join(c.text for c in vlm.stream(first, short, conversation="c"))
    prompt = vlm.prepare(first, "low")["input_ids"].shape[-1]
    room = cache_bucket(prompt + 4) - prompt  # what is left in the first turn's static cache
    follow = [*first, Message("assistant", answer), Message("user", "Why?")]
    long = GenerationOptions(max_new_tokens=room + 8, min_new_tokens=1, detail="low")
    run = list(vlm.stream(follow, long, conversation="c"))[-1].run
    assert run.extra["reused_tokens"] == 0 and run.output_tokens >= 1


def test_cache_buckets_are_powers_of_two():
    assert [cache_bucket(n) for n in (1, 256, 257, 1000, 5000)] == [256, 256, 512, 1024, 8192]


def test_quantize_linears_counts_what_it_swapped():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
    assert quantize_linears(model) == 2
    assert not any(type(m) is nn.Linear for m in model.modules())
