"""How much of an image the model sees: a per-request ``detail`` level mapped onto each family's processor.

The checkpoints' own processors favour the most detail: SmolVLM upscales every image to 2,048 px and
encodes 17 tiles of 512 px, even for a 512-px photo. The encoder dominates time to first token on a CPU,
so the number of tiles is the first lever. Levels:

- ``low``: one global view (SmolVLM: no splitting; Qwen2-VL: about 256 visual tokens; LLaVA-OneVision:
  the image brought down to one crop).
- ``standard``: the image at its own resolution, never upscaled beyond the processor's tile rounding,
  with a cap (SmolVLM: the checkpoint's longest edge; Qwen2-VL: 1,024 visual tokens; LLaVA-OneVision:
  at most a 2 × 2 grid of crops).
- ``high``: the checkpoint's defaults (its maximum).

Everything is derived from the loaded processor's settings, so tiny test checkpoints scale the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

Detail = Literal["low", "standard", "high"]
DETAILS: tuple[Detail, ...] = ("low", "standard", "high")

QWEN_LOW_TOKENS = 256
QWEN_STANDARD_TOKENS = 1024
LLAVA_STANDARD_GRID = 2  # crops per side


@dataclass
class ResolutionPlan:
    """What to do to a request's images: processor kwargs, and images resized beforehand where needed."""

    detail: Detail
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list)


def plan_resolution(family: str, image_processor: Any, images: Sequence[Image.Image], detail: str) -> ResolutionPlan:
    if detail not in DETAILS:
        raise ValueError(f"unknown detail level {detail!r}; choose one of {', '.join(DETAILS)}")
    plan = ResolutionPlan(detail, images=list(images))  # type: ignore[arg-type]
    if detail == "high" or not images:
        return plan
    longest = max(max(img.size) for img in images)
    if family == "smolvlm":
        plan.processor_kwargs = _smolvlm(image_processor, longest, detail)
    elif family == "qwen2vl":
        plan.processor_kwargs = _qwen2vl(image_processor, max(w * h for w, h in (i.size for i in images)), detail)
    elif family == "llava-ov":
        side = int(image_processor.size["height"])
        limit = side if detail == "low" else side * LLAVA_STANDARD_GRID
        plan.images = [_shrink(img, limit) for img in images]
    return plan


def _smolvlm(image_processor: Any, longest: int, detail: str) -> dict[str, Any]:
    if detail == "low":
        return {"do_image_splitting": False}
    tile = int(image_processor.max_image_size["longest_edge"])
    cap = int(image_processor.size["longest_edge"])
    return {"size": {"longest_edge": min(cap, max(tile, longest))}}


def _qwen2vl(image_processor: Any, pixels: int, detail: str) -> dict[str, Any]:
    size = image_processor.size
    min_pixels, max_pixels = int(size["shortest_edge"]), int(size["longest_edge"])
    unit = (int(image_processor.patch_size) * int(image_processor.merge_size)) ** 2  # pixels per visual token
    budget = QWEN_LOW_TOKENS * unit if detail == "low" else min(pixels, QWEN_STANDARD_TOKENS * unit)
    budget = max(min_pixels, min(max_pixels, budget))
    return {"size": {"shortest_edge": min(min_pixels, budget), "longest_edge": budget}}


def _shrink(img: Image.Image, longest: int) -> Image.Image:
    """Downscale so the longer side is at most ``longest``; never upscale."""
    scale = longest / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, math.floor(img.width * scale)), max(1, math.floor(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


def geometry(family: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Tiles (or crops / patch grids) the processor produced, for the run record."""
    if family == "qwen2vl" and "image_grid_thw" in inputs:
        grids = [[int(x) for x in row] for row in inputs["image_grid_thw"].tolist()]
        return {"patch_grids": grids}
    if "pixel_values" in inputs and inputs["pixel_values"].dim() == 5:
        return {"tiles": int(inputs["pixel_values"].shape[1])}
    return {}
