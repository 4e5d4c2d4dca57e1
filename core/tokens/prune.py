"""Dropping visual tokens after the vision encoder, before the language model (training-free pruning).

The encoder's output (cached unpruned: pruning is cheap, encoding is not) is cut per unit (a tile, a
crop set or an image, as ``image_units`` defines them) to the best-scored tokens, chosen with a boolean
mask so the survivors stay in raster order. Layout tokens (LLaVA's row newlines, SmolVLM's global
view) are never dropped. The prompt shrinks by the dropped image placeholders, and every kept token
keeps the position it had in the full prompt: explicit ``position_ids`` (Qwen2-VL's 3-D M-RoPE
positions computed on the full prompt), which ``generate`` then extends by one per new token, so
decoding continues from the full prompt's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Budget:
    """How many of a unit's prunable tokens to keep: a share (0-1] or an absolute count."""

    keep_ratio: float | None = None
    keep_count: int | None = None

    def __post_init__(self) -> None:
        if (self.keep_ratio is None) == (self.keep_count is None):
            raise ValueError("give a keep ratio or a keep count, not both")
        if self.keep_ratio is not None and not 0 < self.keep_ratio <= 1:
            raise ValueError("the keep ratio is a share in (0, 1]")
        if self.keep_count is not None and self.keep_count < 1:
            raise ValueError("keep at least one token")

    def keep(self, prunable: int) -> int:
        if self.keep_count is not None:
            return min(prunable, self.keep_count)
        return min(prunable, max(1, math.ceil(prunable * self.keep_ratio)))

    @property
    def label(self) -> str:
        return f"{self.keep_ratio:.0%}" if self.keep_ratio is not None else f"{self.keep_count} per unit"


@dataclass
class UnitScores:
    """One unit's token scores (higher = keep) and the tokens that are always kept."""

    scores: torch.Tensor  # [n]
    layout: torch.Tensor  # [n] bool


def keep_mask(units: Sequence[UnitScores], budget: Budget,
              second: Sequence[UnitScores] | None = None, second_share: float = 0.5) -> list[torch.Tensor]:
    """Per unit, a bool mask of the tokens kept: every layout token plus the top-scored others. With
    ``second`` scores, ``second_share`` of the kept tokens is chosen by them among what the first left
    (the "important + diverse" policy: half by attention, half by least redundancy)."""
    masks = []
    for n, unit in enumerate(units):
        kept = unit.layout.clone()
        prunable = (~unit.layout).nonzero().flatten()
        if prunable.numel():
            count = budget.keep(prunable.numel())
            by_second = int(count * second_share) if second is not None else 0
            best = unit.scores[prunable].float().topk(count - by_second).indices
            kept[prunable[best]] = True
            if by_second:
                rest = (~kept).nonzero().flatten()
                kept[rest[second[n].scores[rest].float().topk(min(by_second, rest.numel())).indices]] = True
        masks.append(kept)
    return masks


@dataclass
class Pruned:
    inputs: dict[str, Any]  # generation inputs: fewer image tokens, original positions
    kept: torch.Tensor  # [L] bool over the full prompt
    positions: torch.Tensor  # the full prompt's position ids ([1, L], or [3, 1, L] for M-RoPE)
    visual_before: int
    visual_after: int


def full_positions(model, family: str, inputs: dict[str, Any]) -> torch.Tensor:  # noqa: ANN001
    """Position ids of the unpruned prompt, as the model itself would compute them."""
    ids = inputs["input_ids"]
    if family == "qwen2vl":
        positions, _ = model.model.get_rope_index(
            ids, mm_token_type_ids=inputs.get("mm_token_type_ids"), image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=inputs.get("attention_mask"))
        return positions
    return torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0)


def _cut_features(family: str, pooled: Any, masks: Sequence[torch.Tensor]) -> Any:
    """The encoder output in its family's format with only the kept tokens of each unit."""
    if family == "smolvlm":
        (tokens,) = pooled
        return [tokens[torch.cat(list(masks)).to(tokens.device)]]
    parts = [part[mask.to(part.device)] for part, mask in zip(pooled, masks, strict=True)]
    return tuple(parts) if isinstance(pooled, tuple) else parts


def prune(model, family: str, inputs: dict[str, Any], image_token_id: int,  # noqa: ANN001
          masks: Sequence[torch.Tensor]) -> Pruned:
    """Apply per-unit keep ``masks`` to generation inputs that carry ``mm_encoder_outputs``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    ids = inputs["input_ids"]
    is_image = ids[0] == image_token_id
    image_kept = torch.cat(list(masks)).to(ids.device)
    if int(is_image.sum()) != image_kept.numel():
        raise ValueError(f"{int(is_image.sum())} image tokens in the prompt, {image_kept.numel()} scored")
    kept = torch.ones_like(is_image)
    kept[is_image] = image_kept
    positions = full_positions(model, family, inputs)
    out = dict(inputs)
    out["input_ids"] = ids[:, kept]
    for name in ("attention_mask", "mm_token_type_ids"):
        if name in inputs and inputs[name] is not None:
            out[name] = inputs[name][:, kept]
    out["position_ids"] = positions[..., kept]
    pooled = inputs["mm_encoder_outputs"]["image"].pooler_output
    out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=_cut_features(family, pooled,
                                                                                                masks))}
    return Pruned(out, kept, positions, int(is_image.sum()), int(image_kept.sum()))
