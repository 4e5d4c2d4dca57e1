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
MESSAGES = [Message("user", "What is shown?", [Image.new("RGB", (120, 90), (40, 160, 90))])]


def _answer(vlm: HFVLM, messages=MESSAGES) -> tuple[str, dict]:  # noqa: ANN001
    chunks = list(vlm.stream(messages, OPTIONS))
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
    assert extra["cached_features"] is False and len(encoder_calls) == 1
    again, extra = _answer(vlm)  # the same image again (another user, a regenerated answer)
    assert extra["cached_features"] is True and len(encoder_calls) == 1  # the encoder did not run again
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
