"""The detail policy per family: on the published processors' settings, and end to end on tiny models."""

from __future__ import annotations

import pytest
from PIL import Image
from transformers import Idefics3ImageProcessorPil, LlavaOnevisionImageProcessorPil, Qwen2VLImageProcessorPil

from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import FAMILIES
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.resolution import plan_resolution

PHOTO_512 = Image.new("RGB", (512, 512), (90, 20, 40))
PHOTO_1024 = Image.new("RGB", (1024, 768), (20, 90, 40))
SCAN_2048 = Image.new("RGB", (2048, 1536), (20, 40, 90))


def smolvlm_tiles(image: Image.Image, detail: str) -> int:
    """Tiles SmolVLM-256M-Instruct's processor settings produce (512-px tiles, longest edge 2,048)."""
    processor = Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
                                          do_image_splitting=True)
    plan = plan_resolution("smolvlm", processor, [image], detail)
    return processor(images=[plan.images], return_tensors="pt", **plan.processor_kwargs)["pixel_values"].shape[1]


def qwen_tokens(image: Image.Image, detail: str) -> int:
    """Visual tokens with Qwen2-VL-2B-Instruct's settings (56² to 1,280 × 28² pixels, 2 × 2 merge)."""
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=1280 * 28 * 28, patch_size=14,
                                         merge_size=2, temporal_patch_size=2)
    plan = plan_resolution("qwen2vl", processor, [image], detail)
    grid = processor(images=plan.images, return_tensors="pt", **plan.processor_kwargs)["image_grid_thw"]
    return int(grid.prod()) // 4


def llava_crops(image: Image.Image, detail: str) -> int:
    """Crops with llava-onevision-qwen2-0.5b's settings (384-px crops, grids up to 6 × 6)."""
    pinpoints = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
    processor = LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384}, image_grid_pinpoints=pinpoints)
    plan = plan_resolution("llava-ov", processor, [image], detail)
    return processor(images=plan.images, return_tensors="pt", **plan.processor_kwargs)["pixel_values"].shape[1]


def test_smolvlm_standard_never_upscales_a_photo_into_17_tiles():
    assert smolvlm_tiles(PHOTO_512, "high") == 17  # the checkpoint's default: 2,048 px, 4 × 4 + global
    assert smolvlm_tiles(PHOTO_512, "standard") == 1
    assert smolvlm_tiles(PHOTO_1024, "high") == 13
    assert smolvlm_tiles(PHOTO_1024, "standard") == 5  # 2 × 2 at its own size + global
    assert smolvlm_tiles(SCAN_2048, "standard") == smolvlm_tiles(SCAN_2048, "high") == 13  # capped at 2,048
    assert {smolvlm_tiles(img, "low") for img in (PHOTO_512, PHOTO_1024, SCAN_2048)} == {1}


def test_qwen2vl_standard_caps_tokens_and_low_is_a_global_view():
    high, standard, low = (qwen_tokens(SCAN_2048, d) for d in ("high", "standard", "low"))
    assert 1024 < high <= 1280 and 900 < standard <= 1024 and 200 < low <= 256
    assert qwen_tokens(PHOTO_512, "standard") == qwen_tokens(PHOTO_512, "high")  # small images stay native


def test_llava_onevision_standard_keeps_at_most_a_2x2_grid():
    assert llava_crops(SCAN_2048, "high") > 10
    assert llava_crops(SCAN_2048, "standard") <= 5  # 2 × 2 crops + the base image
    assert llava_crops(SCAN_2048, "low") == 2  # one crop + the base image
    assert llava_crops(PHOTO_512, "standard") == llava_crops(PHOTO_512, "high")


def test_unknown_detail_is_refused():
    with pytest.raises(ValueError, match="unknown detail level"):
        plan_resolution("smolvlm", None, [PHOTO_512], "ultra")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_detail_reaches_the_model_and_the_run_record(tiny_model_dir, family):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), dtype="fp32")
    image = Image.new("RGB", (300, 200), (200, 120, 40))
    tokens = {}
    for detail in ("low", "standard", "high"):
        run = vlm.chat([Message("user", "What is shown?", [image])],
                       GenerationOptions(max_new_tokens=3, detail=detail)).run
        assert run.extra["detail"] == detail and ("tiles" in run.extra or "patch_grids" in run.extra)
        assert run.output_tokens > 0
        inputs = vlm.prepare([Message("user", "What is shown?", [image])], detail)
        assert run.visual_tokens == int((inputs["input_ids"] == vlm.image_token_id).sum())
        tokens[detail] = run.visual_tokens
    assert tokens["low"] <= tokens["standard"] <= tokens["high"]
    if family != "qwen2vl":  # the tiny Qwen processor's pixel cap is below the low budget: all equal
        assert tokens["low"] < tokens["high"]
