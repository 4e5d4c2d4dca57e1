"""Visual-token pruning on the tiny models of all three families: generation runs, masks keep layout
and order, positions are the model's own, 100% keeps the logits exactly, and a follow-up reuses a
pruned first turn as a fresh run would answer it."""

from __future__ import annotations

import io
import math

import pytest
import torch
from PIL import Image

from loupe.core.tokens.prune import Budget, UnitScores, full_positions, keep_mask, prune
from loupe.core.tokens.pruning import Pruning, pruning_setting
from loupe.core.tokens.scorers import AttentionScorer, FixedScorer, RedundancyScorer, score_units
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import language_model
from loupe.core.vlm.hf import HFVLM

FAMILIES = ["smolvlm", "qwen2vl", "llava-ov"]
OPTIONS = GenerationOptions(max_new_tokens=6, min_new_tokens=6, detail="standard")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.effect_noise((96, 96), 45).convert("RGB")


def _vlm(tiny_model_dir, family: str) -> HFVLM:
    return HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="plain")


def _encoded(vlm: HFVLM, image: Image.Image) -> tuple[dict, dict]:
    inputs = vlm.prepare([Message("user", "Describe the picture.", [image])], OPTIONS.detail)
    gen_inputs, _ = vlm._encode_once(inputs)
    return inputs, gen_inputs


def test_budgets_and_masks_keep_layout_and_raster_order():
    assert Budget(keep_ratio=0.1).keep(64) == 7 and Budget(keep_count=5).keep(3) == 3
    with pytest.raises(ValueError):
        Budget(keep_ratio=0.5, keep_count=3)
    scores = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.0])
    layout = torch.tensor([False, False, False, False, False, True])
    (mask,) = keep_mask([UnitScores(scores, layout)], Budget(keep_count=2))
    assert mask.nonzero().flatten().tolist() == [1, 3, 5]  # the two best, in place, and the layout token


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_generation_runs_and_counts_tokens(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    full = vlm.chat([Message("user", "Describe the picture.", [image])], OPTIONS).run
    vlm.pruning = pruning_setting(0.25)
    pruned = vlm.chat([Message("user", "Describe the picture.", [image])], OPTIONS).run
    assert pruned.extra["visual_tokens_unpruned"] == full.visual_tokens
    assert 0 < pruned.visual_tokens < full.visual_tokens and pruned.output_tokens == 6
    assert pruned.prompt_tokens == full.prompt_tokens  # the record counts the prompt as written


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_tokens_are_sorted_and_include_every_layout_token(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    inputs, gen_inputs = _encoded(vlm, image)
    pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
    units = score_units(vlm, inputs, pooled, RedundancyScorer())
    masks = keep_mask(units, Budget(keep_ratio=0.1))
    for unit, mask in zip(units, masks, strict=True):
        assert mask[unit.layout].all()
    result = prune(vlm.model, family, gen_inputs, vlm.image_token_id, masks)
    kept = result.kept.nonzero().flatten()
    assert torch.equal(kept, kept.sort().values)
    assert (inputs["input_ids"][0] != vlm.image_token_id)[~result.kept].sum() == 0  # only image tokens dropped
    if family == "smolvlm":  # a split image: its global view is layout, kept whole
        assert units[-1].layout.all() and not units[0].layout.any()
    if family == "llava-ov":  # the row newlines are found and kept
        assert any(unit.layout.any() for unit in units)


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_are_the_ones_the_model_gives_the_full_prompt(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    inputs, gen_inputs = _encoded(vlm, image)
    seen = []
    hook = language_model(vlm.model, vlm.family).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("position_ids")), with_kwargs=True)
    try:
        with torch.inference_mode():
            vlm.model(**gen_inputs, use_cache=False)  # unpruned: the model computes its own positions
    finally:
        hook.remove()
    own = seen[0] if seen[0] is not None else torch.arange(inputs["input_ids"].shape[-1]).unsqueeze(0)
    pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
    masks = keep_mask(score_units(vlm, inputs, pooled, RedundancyScorer()), Budget(keep_ratio=0.25))
    result = prune(vlm.model, family, gen_inputs, vlm.image_token_id, masks)
    assert torch.equal(result.inputs["position_ids"], own[..., result.kept].to(result.inputs["position_ids"].dtype))
    assert torch.equal(full_positions(vlm.model, family, inputs), own.to(torch.long))


@pytest.mark.parametrize("family", FAMILIES)
def test_keeping_everything_reproduces_the_unpruned_logits_exactly(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    inputs, gen_inputs = _encoded(vlm, image)
    pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
    masks = keep_mask(score_units(vlm, inputs, pooled, RedundancyScorer()), Budget(keep_ratio=1.0))
    result = prune(vlm.model, family, gen_inputs, vlm.image_token_id, masks)
    with torch.inference_mode():
        plain = vlm.model(**gen_inputs, use_cache=False).logits
        kept_all = vlm.model(**result.inputs, use_cache=False).logits
    assert result.visual_after == result.visual_before and torch.equal(plain, kept_all)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_follow_up_reuses_the_pruned_first_turn(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    vlm.pruning = Pruning(Budget(keep_ratio=0.25), RedundancyScorer())
    first = [Message("user", "Describe the picture.", [image])]
    answer = vlm.chat(first, OPTIONS).text
    list(vlm.stream(first, OPTIONS, conversation="case"))
    follow_up = [*first, Message("assistant", answer), Message("user", "And the colours?")]
    chunks = list(vlm.stream(follow_up, OPTIONS, conversation="case"))
    reused = chunks[-1].run.extra["reused_tokens"]
    fresh = vlm.chat(follow_up, OPTIONS)  # no conversation: everything prefilled again, pruned alike
    assert reused > 0 and "".join(c.text for c in chunks) == fresh.text


def test_planted_scores_decide_what_stays(tiny_model_dir, image):
    vlm = _vlm(tiny_model_dir, "qwen2vl")
    inputs, gen_inputs = _encoded(vlm, image)
    pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
    count = pooled[0].shape[0]
    planted = torch.zeros(count)
    planted[[2, count - 1]] = 1.0  # the salient tokens
    units = score_units(vlm, inputs, pooled, FixedScorer([planted]))
    (mask,) = keep_mask(units, Budget(keep_count=2))
    assert mask.nonzero().flatten().tolist() == [2, count - 1]


def test_the_app_records_tokens_before_and_after_pruning(tmp_path, tiny_model_dir, image):

    from loupe.apps.service import LoupeService
    from loupe.apps.web.render import run_footnote
    from loupe.core.config import Settings

    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    user = service.store.add_user("ana", "ana-password-12", "user")
    photo = io.BytesIO()
    image.save(photo, "PNG")
    case_id = service.create_case(user, "general", io.BytesIO(photo.getvalue()), "noise")
    options = GenerationOptions(max_new_tokens=4, detail="standard", visual_keep=0.25)
    final = list(service.ask(user, case_id, "What is shown?", options))[-1]
    assert final.run.extra["pruning"] == "attention 25%"
    assert final.run.visual_tokens < final.run.extra["visual_tokens_unpruned"]
    run = service.store.open_case(user, case_id).messages[-1].model_run
    assert f"{final.run.visual_tokens:,} of {final.run.extra['visual_tokens_unpruned']:,} visual tokens kept" in \
        run_footnote(run)


@pytest.mark.parametrize("family", FAMILIES)
def test_received_attention_is_read_as_eager_attention_gives_it(tiny_model_dir, image, family):
    from loupe.core.tokens.attention import received_attention, token_scores, vision_layers
    from loupe.core.vlm.families import vision_encoder
    from loupe.core.vlm.features import encoder_inputs
    from loupe.core.vlm.image_units import join_units, split_units

    vlm = _vlm(tiny_model_dir, family)
    inputs = vlm.prepare([Message("user", "Describe the picture.", [image])], OPTIONS.detail)
    get_features = vlm.model.model.get_image_features
    units = split_units(family, encoder_inputs(get_features, inputs))
    encoder = vision_encoder(vlm.model, vlm.family)
    with received_attention(encoder) as rows, torch.inference_mode():
        pooled = get_features(**join_units(family, units), return_dict=True).pooler_output
    # The same encode with each family's own eager attention, weights taken in the same layer.
    import sys

    from transformers import AttentionInterface

    target = vision_layers(encoder)[-2]
    attention_module = next(m for m in target.children() if "Attention" in type(m).__name__)
    eager = sys.modules[type(attention_module).__module__].eager_attention_forward
    weights, armed = [], [False]

    def probe(module, query, key, value, attention_mask, **kwargs):  # noqa: ANN001, ANN202
        out, attn = eager(module, query, key, value, attention_mask, **kwargs)
        if armed[0]:
            weights.append(attn)
        return out, attn

    AttentionInterface.register("loupe_test_eager", probe)
    hooks = [target.register_forward_pre_hook(lambda *_: armed.__setitem__(0, True)),
             target.register_forward_hook(lambda *_: armed.__setitem__(0, False))]
    previous, encoder.config._attn_implementation = encoder.config._attn_implementation, "loupe_test_eager"
    try:
        with torch.inference_mode():
            get_features(**join_units(family, units), return_dict=True)
    finally:
        encoder.config._attn_implementation = previous
        for hook in hooks:
            hook.remove()
    ours = torch.cat([r.reshape(-1) for r in rows])
    eager = torch.cat([w.float().mean(dim=(1, 2)).reshape(-1) for w in weights])
    assert torch.allclose(ours, eager, atol=1e-5)
    per_unit = token_scores(vlm, units, rows)  # summed into the language model's tokens, one per token
    from loupe.core.tokens.scorers import unit_features

    features = unit_features(family, pooled, len(units))
    assert [s.shape[0] for s in per_unit] == [f.shape[0] for f in features]


def test_attention_scores_are_cached_with_the_features(tiny_model_dir, image):
    vlm = _vlm(tiny_model_dir, "qwen2vl")
    inputs = vlm.prepare([Message("user", "Describe the picture.", [image])], OPTIONS.detail)
    vlm._encode_once(inputs)  # features only
    vlm._encode_once(inputs, with_attention=True)
    assert vlm.last_encoded_units == 1  # the scores were missing: encoded again, with them
    first = [s.clone() for s in vlm.last_unit_attention]
    vlm._encode_once(inputs, with_attention=True)
    assert vlm.last_encoded_units == 0 and all(torch.equal(a, b) for a, b in zip(first, vlm.last_unit_attention,
                                                                                  strict=True))


def test_patch_scores_land_in_the_token_smolvlm_shuffles_them_into(tiny_model_dir):
    from loupe.core.tokens.attention import token_scores

    vlm = _vlm(tiny_model_dir, "smolvlm")
    scale = int(vlm.model.config.scale_factor)
    side = int(vlm.model.config.vision_config.image_size) // int(vlm.model.config.vision_config.patch_size)
    hot = 2 * side + 3  # patch at row 2, column 3
    patches = torch.zeros(1, side * side)
    patches[0, hot] = 1.0
    (scores,) = token_scores(vlm, [{}], [patches])
    # the model's own shuffle, on features that carry each patch's index
    index = torch.arange(side * side, dtype=torch.float32).view(1, side * side, 1)
    shuffled = vlm.model.model.connector.pixel_shuffle(index, scale)[0]  # [tokens, scale^2]: patches per token
    owner = int((shuffled == hot).any(dim=-1).nonzero())
    assert int(scores.argmax()) == owner and scores.sum() == 1.0


def test_important_plus_diverse_takes_half_by_each_score():
    important = UnitScores(torch.tensor([9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0]), torch.zeros(8, dtype=torch.bool))
    diverse = UnitScores(torch.tensor([0.0, 0.0, 5.0, 1.0, 0.0, 0.0, 0.0, 6.0]), torch.zeros(8, dtype=torch.bool))
    (mask,) = keep_mask([important], Budget(keep_count=4), [diverse], 0.5)
    assert mask.nonzero().flatten().tolist() == [0, 1, 2, 7]  # 0, 1 by attention; then 7, 2 by diversity


@pytest.mark.parametrize("family", FAMILIES)
def test_the_important_plus_diverse_policy_generates(tiny_model_dir, image, family):
    vlm = _vlm(tiny_model_dir, family)
    vlm.pruning = pruning_setting(0.25, "important+diverse")
    run = vlm.chat([Message("user", "Describe the picture.", [image])], OPTIONS).run
    assert run.extra["pruning"] == "attention+diverse 25%" and run.visual_tokens < run.extra["visual_tokens_unpruned"]


def test_kept_tokens_cover_a_planted_salient_region(tiny_model_dir):
    """Random weights attend anywhere, so the salience is planted in the model: in the penultimate
    vision layer every query is the same vector v and each key is v scaled by how bright its patch
    is, so bright patches receive the attention. A white quarter on black must then be what is kept."""
    from loupe.core.tokens.attention import vision_layers
    from loupe.core.vlm.families import vision_encoder

    vlm = _vlm(tiny_model_dir, "smolvlm")
    encoder = vision_encoder(vlm.model, vlm.family)
    layer = vision_layers(encoder)[-2]
    attention = next(m for m in layer.children() if "Attention" in type(m).__name__)
    inputs_seen = []
    hook = attention.register_forward_pre_hook(lambda module, args, kwargs: inputs_seen.append(
        kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True)
    side = int(vlm.model.config.vision_config.image_size)
    low = GenerationOptions(max_new_tokens=2, detail="low")
    for colour in ("white", "black"):
        vlm.chat([Message("user", "x", [Image.new("RGB", (side, side), colour)])], low)
    hook.remove()
    brightness = (inputs_seen[0].mean(dim=1) - inputs_seen[1].mean(dim=1))[0]  # [width]: white minus black
    with torch.no_grad():
        v = torch.ones(attention.q_proj.out_features) * 3.0
        attention.q_proj.weight.zero_()
        attention.q_proj.bias.copy_(v)
        attention.k_proj.weight.copy_(torch.outer(v, brightness / brightness.norm() ** 2))
        attention.k_proj.bias.zero_()
    vlm.forget()
    for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):  # the white quarter in each corner in turn
        picture = Image.new("RGB", (side, side), "black")
        picture.paste(Image.new("RGB", (side // 2, side // 2), "white"), (col * side // 2, row * side // 2))
        inputs = vlm.prepare([Message("user", "Where is the white square?", [picture])], "low")
        gen_inputs, _ = vlm._encode_once(inputs, with_attention=True)
        pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
        units = score_units(vlm, inputs, pooled, AttentionScorer(), vlm.last_unit_attention)
        (mask,) = keep_mask(units, Budget(keep_ratio=0.25))
        grid = math.isqrt(mask.numel())
        kept = {(int(i) // grid, int(i) % grid) for i in mask.nonzero().flatten()}
        half = grid // 2
        assert kept == {(r, c) for r in range(row * half, (row + 1) * half)
                        for c in range(col * half, (col + 1) * half)}  # exactly the white quarter
