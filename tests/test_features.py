"""Encode once: cached vision features give the same answer as encoding the pixels, and skip the encoder."""

from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image

from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import FAMILIES, vision_encoder
from loupe.core.vlm.features import weights_fingerprint
from loupe.core.vlm.hf import HFVLM

OPTIONS = GenerationOptions(max_new_tokens=10, min_new_tokens=10, detail="high")
ONE_TILE = GenerationOptions(max_new_tokens=4, detail="low")  # one cached unit per image
MESSAGES = [Message("user", "What is shown?", [Image.new("RGB", (120, 90), (40, 160, 90))])]


def _answer(vlm: HFVLM, messages=MESSAGES, options: GenerationOptions = OPTIONS) -> tuple[str, dict]:  # noqa: ANN001
    chunks = list(vlm.stream(messages, options))
    return "".join(c.text for c in chunks), chunks[-1].run.extra


def _plain_generate(vlm: HFVLM) -> str:
    """transformers' own path: pixels into generate, the encoder run inside it."""
    inputs = vlm.prepare(MESSAGES, OPTIONS.detail)
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, **vlm._generation_kwargs(OPTIONS))
    return vlm.processor.batch_decode(out[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_features_answer_like_pixels_and_skip_the_encoder(tiny_model_dir, family):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), dtype="fp32")
    encoder_calls = []
    original = vlm.model.model.get_image_features

    @functools.wraps(original)  # keeps the signature the encoder inputs are chosen by
    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        encoder_calls.append(1)
        return original(*args, **kwargs)

    vlm.model.model.get_image_features = counting
    first, extra = _answer(vlm)
    calls = len(encoder_calls)  # one per ENCODE_BATCH tiles
    assert extra["cached_features"] is False and calls >= 1
    again, extra = _answer(vlm)  # the same image again (another user, a regenerated answer)
    assert extra["cached_features"] is True and len(encoder_calls) == calls  # the encoder did not run again
    vlm.model.model.get_image_features = original
    assert first == again == _plain_generate(vlm)


def test_other_pixels_or_other_weights_miss_the_cache(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), dtype="fp32")
    _answer(vlm)
    other = [Message("user", "What is shown?", [Image.new("RGB", (120, 90), (41, 160, 90))])]
    assert _answer(vlm, other)[1]["cached_features"] is False  # one channel value differs
    assert _answer(vlm, other)[1]["cached_features"] is True
    fingerprint = vlm._fingerprint
    with torch.no_grad():
        next(vlm.model.model.vision_model.parameters()).add_(0.01)  # new weights, same model id
    changed = weights_fingerprint(vlm.model_id, vision_encoder(vlm.model, vlm.family), vlm.placement.dtype)
    assert changed != fingerprint


def _disk_vlm(model_dir, cache_dir, **kwargs) -> HFVLM:  # noqa: ANN001
    return HFVLM.from_pretrained(model_dir, device="cpu", feature_cache_dir=cache_dir, feature_disk_mb=64, **kwargs)


def test_features_on_disk_survive_a_restart_and_stay_private(tiny_model_dir, tmp_path):
    cache_dir = tmp_path / "cache" / "features"
    first = _disk_vlm(tiny_model_dir("qwen2vl"), cache_dir, engine="int8")  # not auto: its pick is the machine's
    answer, extra = _answer(first)
    assert extra["cached_features"] is False
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt" and files[0].stat().st_mode & 0o077 == 0
    assert cache_dir.stat().st_mode & 0o077 == 0
    restarted = _disk_vlm(tiny_model_dir("qwen2vl"), cache_dir, engine="int8")
    calls = []
    original = restarted.model.model.get_image_features
    restarted.model.model.get_image_features = functools.wraps(original)(lambda *a, **k: calls.append(1))
    again, extra = _answer(restarted)
    assert extra["cached_features"] is True and not calls and restarted.features.disk_hits == 1
    assert again == answer
    other_engine = _disk_vlm(tiny_model_dir("qwen2vl"), cache_dir, engine="plain", dtype="fp32")
    assert _answer(other_engine)[1]["cached_features"] is False  # other numerics: never mixed


def test_disk_budget_drops_the_least_recently_read(tiny_model_dir, tmp_path):
    vlm = _disk_vlm(tiny_model_dir("smolvlm"), tmp_path)
    images = [Image.new("RGB", (120, 90), (i * 40, 10, 10)) for i in range(3)]
    for image in images:
        _answer(vlm, [Message("user", "What?", [image])], ONE_TILE)
    sizes = sorted(p.stat().st_size for p in tmp_path.iterdir())
    vlm.features.disk_budget_bytes = sizes[-1] + sizes[-2]  # room for two
    vlm.features.drop_memory()  # as after a restart
    _answer(vlm, [Message("user", "What?", [images[0]])], ONE_TILE)  # read from disk: now the most recent
    _answer(vlm, [Message("user", "What?", [Image.new("RGB", (120, 90), "white")])], ONE_TILE)  # a fourth: trims
    assert len(list(tmp_path.glob("*.pt"))) == 2
    vlm.features.drop_memory()
    assert _answer(vlm, [Message("user", "What?", [images[0]])], ONE_TILE)[1]["cached_features"] is True
    assert _answer(vlm, [Message("user", "What?", [images[1]])], ONE_TILE)[1]["cached_features"] is False


def test_a_damaged_cache_file_is_a_miss_and_is_replaced(tiny_model_dir, tmp_path):
    vlm = _disk_vlm(tiny_model_dir("smolvlm"), tmp_path)
    answer, _ = _answer(vlm)
    (only,) = tmp_path.glob("*.pt")
    only.write_bytes(b"not a tensor file")
    vlm.features.drop_memory()
    again, extra = _answer(vlm)
    assert extra["cached_features"] is False and again == answer
    assert only.stat().st_size > 100  # written again, whole
