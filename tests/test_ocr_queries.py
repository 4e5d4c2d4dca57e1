"""OCR query tokens: injection at the placeholders only, frozen-VLM training, files, and a real learning test."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from loupe.core.errors import ModelUnavailable
from loupe.core.ocr.queries import OCRQueryEncoder, layout_batch, placeholder_id
from loupe.core.ocr.query_training import QueryExample, fit_queries
from loupe.core.vlm import worker
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import FAMILIES
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.tiny import make_tiny

PAGE = Image.new("RGB", (96, 128), (250, 250, 245))
LAYOUT = [("INVOICE 2041", (80, 40, 420, 90)), ("total 7", (600, 820, 900, 870)), ("date 3", (600, 100, 880, 140))]
GREEDY = GenerationOptions(max_new_tokens=3)


def _first_layer_input(vlm: HFVLM, inputs: dict) -> torch.Tensor:
    """The hidden states entering the first decoder layer: text embeddings with image features merged."""
    seen: list[torch.Tensor] = []
    layer = vlm.model.model.language_model.layers[0] if hasattr(vlm.model.model, "language_model") \
        else vlm.model.model.text_model.layers[0]
    handle = layer.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        (args[0] if args else kwargs["hidden_states"]).detach().clone()), with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm.model(**inputs)
    finally:
        handle.remove()
    return seen[0][0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_injection_changes_the_language_model_input_only_at_the_placeholders(tiny_model_dir, family):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="plain")
    module = OCRQueryEncoder.for_model(vlm.model, queries=6, width=32, layers=1, heads=2)
    vlm.attach_queries(module)
    message = Message("user", "What is the total?", [PAGE], LAYOUT)
    inputs = vlm.prepare([message], "low")
    ids = inputs["input_ids"][0]
    at_placeholders = ids == placeholder_id(vlm.processor.tokenizer)
    assert int(at_placeholders.sum()) == 6
    assert int((ids == vlm.image_token_id).sum()) > 0  # the page image is in the same prompt

    def hidden_with(queries: torch.Tensor) -> torch.Tensor:
        vlm._injector.pending = queries
        try:
            return worker.call(_first_layer_input, vlm, inputs)
        finally:
            vlm._injector.pending = None

    width = module.config.llm_width
    a = hidden_with(torch.randn(6, width))
    b = hidden_with(torch.randn(6, width))
    differs = (a != b).any(dim=-1)
    assert torch.equal(differs, at_placeholders)  # everything else, image features included, is untouched
    queries = torch.randn(6, width)
    assert torch.allclose(hidden_with(queries)[at_placeholders], queries)


def test_a_prompt_with_placeholders_but_no_queries_is_refused(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", dtype="fp32", engine="plain")
    vlm.attach_queries(OCRQueryEncoder.for_model(vlm.model, queries=4, width=32, layers=1, heads=2))
    inputs = vlm.prepare([Message("user", "Total?", layout=LAYOUT)], "low")
    with pytest.raises(RuntimeError, match="no query embeddings"):
        worker.call(vlm.model, **inputs)


def test_answers_with_queries_record_them_and_follow_ups_reuse_the_cache(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("qwen2vl"), device="cpu", dtype="fp32", engine="plain")
    vlm.attach_queries(OCRQueryEncoder.for_model(vlm.model, queries=4, width=32, layers=1, heads=2))
    first = [Message("user", "What is the total?", [PAGE], LAYOUT)]
    chunks = list(vlm.stream(first, GREEDY, conversation="c"))
    answer, run = "".join(c.text for c in chunks), chunks[-1].run
    assert run.extra["ocr_query_tokens"] == 4
    follow_up = [*first, Message("assistant", answer), Message("user", "And the date?")]
    reused = list(vlm.stream(follow_up, GREEDY, conversation="c"))
    fresh = list(vlm.stream(follow_up, GREEDY))
    assert reused[-1].run.extra["reused_tokens"] > 0
    assert "".join(c.text for c in reused) == "".join(c.text for c in fresh)
    # The same words on another page: the placeholders look alike, the cache must not be continued.
    moved = [Message("user", "What is the total?", [PAGE], [(t, (b[0], b[1] + 5, b[2], b[3] + 5)) for t, b in LAYOUT])]
    other = [*moved, Message("assistant", answer), Message("user", "And the date?")]
    list(vlm.stream(first, GREEDY, conversation="d"))
    assert list(vlm.stream(other, GREEDY, conversation="d"))[-1].run.extra["reused_tokens"] == 0


def test_training_changes_the_module_and_never_the_model(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("llava-ov"), device="cpu", dtype="fp32", engine="plain")
    module = OCRQueryEncoder.for_model(vlm.model, queries=4, width=32, layers=1, heads=2)
    vlm.attach_queries(module)
    model_before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    module_before = {k: v.clone() for k, v in module.state_dict().items()}
    examples = [QueryExample(LAYOUT, "What is the total?", "7", [PAGE]), QueryExample(LAYOUT, "Date?", "3")]
    losses = fit_queries(vlm, examples, steps=2, batch_size=2)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert all(torch.equal(v, model_before[k]) for k, v in vlm.model.state_dict().items())
    assert all(p.grad is None for p in vlm.model.parameters())  # no gradient was even computed for the VLM
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, module_before[k])]
    assert {"queries", "scale", "to_llm.2.weight", "word_in.weight", "x_embed.weight"} <= set(changed)


def test_training_refuses_the_int8_engine(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", engine="int8")
    vlm.attach_queries(OCRQueryEncoder.for_model(vlm.model, queries=4, width=32, layers=1, heads=2))
    with pytest.raises(ModelUnavailable, match="plain engine"):
        fit_queries(vlm, [QueryExample(LAYOUT, "Total?", "7")], steps=1)


def test_save_and_load_round_trip_and_a_module_for_another_model_is_refused(tiny_model_dir, tmp_path):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), device="cpu", dtype="fp32", engine="plain")
    module = OCRQueryEncoder.for_model(vlm.model, base_model="tiny-smolvlm", queries=4, width=32, layers=1, heads=2)
    module.eval()
    loaded = OCRQueryEncoder.load(module.save(tmp_path / "queries"))
    batch = layout_batch(vlm.processor.tokenizer, [(LAYOUT, "What is the total?")], 64)
    embed = vlm.model.get_input_embeddings()
    with torch.no_grad():
        assert torch.equal(module(batch, embed), loaded(batch, embed))
    assert loaded.config == module.config
    qwen = HFVLM.from_pretrained(tiny_model_dir("qwen2vl"), device="cpu", dtype="fp32", engine="plain")
    with pytest.raises(ModelUnavailable, match="built for tiny-smolvlm"):
        qwen.attach_queries(loaded)
    with pytest.raises(ModelUnavailable, match="cannot load the OCR query module"):
        OCRQueryEncoder.load(tmp_path / "missing")


KEYS_FILLER = ("receipt", "paid by card", "invoice", "address")


def _key_value_page(rng: random.Random) -> QueryExample:
    """A page with 'code N' among filler lines at random places; the question asks for the code."""
    value = str(rng.randrange(10))
    lines = [f"code {value}", *rng.sample(KEYS_FILLER, 2)]
    rng.shuffle(lines)
    layout = []
    for text in lines:
        x, y = rng.randrange(0, 600), rng.randrange(0, 900)
        layout.append((text, (x, y, x + 200, y + 40)))
    return QueryExample(layout, "What is the code?", value)


def _accuracy(vlm: HFVLM, examples: list[QueryExample]) -> float:
    right = 0
    for ex in examples:
        answer = vlm.chat([Message("user", ex.question, layout=ex.layout)], GREEDY).text
        right += answer.strip().startswith(ex.answer)
    return right / len(examples)


def test_a_short_training_run_makes_the_frozen_vlm_answer_from_the_queries(tmp_path):
    # Wider initial weights than the default tiny model: at 0.02 a random 2-layer transformer barely lets
    # earlier tokens move the last one, so nothing placed in the prompt could change its answer.
    vlm = HFVLM.from_pretrained(make_tiny("smolvlm", tmp_path / "tiny", init_std=0.2), device="cpu",
                                dtype="fp32", engine="plain")
    rng = random.Random(0)
    train = [_key_value_page(rng) for _ in range(2000)]
    held_out = [_key_value_page(random.Random(10_000 + i)) for i in range(40)]
    assert not {repr(ex) for ex in held_out} & {repr(ex) for ex in train}

    vlm.attach_queries(OCRQueryEncoder.for_model(vlm.model, queries=16, width=128, layers=2, heads=4))
    untrained = _accuracy(vlm, held_out)
    losses = fit_queries(vlm, train, steps=400, batch_size=16, lr=3e-3)  # 0.925 held-out (450 steps: 0.975)
    trained = _accuracy(vlm, held_out)
    vlm.attach_queries(None)  # the same questions without the page: the base model cannot know the code
    without = _accuracy(vlm, held_out)

    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50 / 4
    assert trained >= 0.85, (trained, losses[::50])
    assert untrained <= 0.25 and without <= 0.25, (untrained, without)
