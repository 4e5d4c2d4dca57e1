"""Token importance from the vision encoder's own attention, read while it encodes (FasterVLM's idea;
none of the supported encoders has a [CLS] token, so a patch's score is the mean attention it receives
from all patches in the penultimate layer, heads averaged).

Attention weights are read through transformers' attention registry: ``loupe_vision_capture`` computes
attention as SDPA does and, for the one layer armed by a hook, also the attention each key receives.
The vision config uses it only while an encode that wants scores runs. Patch scores are then summed
into the language model's tokens the way each family merges patches: SmolVLM's pixel shuffle (s × s
patches per token), Qwen2-VL's 2 × 2 merge (consecutive patches), LLaVA-OneVision's own packing of
crops (run on the scores, so unpadding and row newlines line up).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..vlm.attention_rows import attention_rows

VISION_CAPTURE = "loupe_vision_capture"
QUERY_CHUNK = 256  # queries per softmax block: bounds the memory of one layer's attention matrix
_state = threading.local()


def _received(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """[batch, keys]: attention each key receives, averaged over heads and queries."""
    total = torch.zeros(query.shape[0], key.shape[-2], device=query.device)
    for start in range(0, query.shape[2], QUERY_CHUNK):
        total += attention_rows(query, key, mask, scale, slice(start, start + QUERY_CHUNK)).sum(dim=(1, 2))
    return total / (query.shape[1] * query.shape[2])


def _capture(module, query, key, value, attention_mask, scaling=None, **kwargs):  # noqa: ANN001, ANN201
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if getattr(_state, "armed", False):
        scale = scaling if scaling is not None else 1 / math.sqrt(query.shape[-1])
        _state.rows.append(_received(query, key, attention_mask, scale).cpu())
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


def vision_layers(encoder: nn.Module) -> nn.ModuleList:
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "blocks"):
            return module
    raise ValueError(f"no layer list found in {type(encoder).__name__}")


@contextmanager
def received_attention(encoder: nn.Module, layer: int = -2) -> Iterator[list[torch.Tensor]]:
    """While inside, every encode records the attention received by each patch in ``layer`` (one
    tensor [batch, patches] per attention call, in call order)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VISION_CAPTURE, _capture)
    config = encoder.config
    previous = config._attn_implementation  # noqa: SLF001
    target = vision_layers(encoder)[layer]
    rows: list[torch.Tensor] = []
    _state.rows, _state.armed = rows, False
    arm = target.register_forward_pre_hook(lambda *_: setattr(_state, "armed", True))
    disarm = target.register_forward_hook(lambda *_: setattr(_state, "armed", False))
    config._attn_implementation = VISION_CAPTURE  # noqa: SLF001
    try:
        yield rows
    finally:
        config._attn_implementation = previous  # noqa: SLF001
        arm.remove()
        disarm.remove()
        _state.armed = False


def token_scores(vlm, units: Sequence[dict[str, Any]], rows: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # noqa: ANN001
    """Per unit, one score per language-model token, from the patch scores of the encode of ``units``."""
    family = vlm.family.name
    patches = torch.cat([r.reshape(-1, r.shape[-1]) if family != "qwen2vl" else r.reshape(1, -1) for r in rows])
    if family == "smolvlm":  # one row per tile; pixel shuffle groups s x s patches into a token
        scale = int(vlm.model.config.scale_factor)
        side = math.isqrt(patches.shape[-1])
        grid = side // scale
        return [row.view(grid, scale, grid, scale).sum(dim=(1, 3)).flatten() for row in patches]
    if family == "qwen2vl":  # one row per image; consecutive merge^2 patches make a token
        merge = int(vlm.model.config.vision_config.spatial_merge_size) ** 2
        return [row.view(-1, merge).sum(dim=1) for row in patches]
    return _llava_tokens(vlm, units, patches)


def _llava_tokens(vlm, units: Sequence[dict[str, Any]], patches: torch.Tensor) -> list[torch.Tensor]:  # noqa: ANN001
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    config = vlm.model.config
    if getattr(config, "vision_feature_select_strategy", "full") == "default":
        patches = patches[:, 1:]
    out, start = [], 0
    for unit in units:
        alone = int(unit.get("batch_num_images", torch.tensor([1]))[0]) == 1
        size = unit["image_sizes"][0]
        crops = image_size_to_num_patches(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                                          patch_size=config.vision_config.image_size) if alone else 1
        scores = patches[start:start + crops].unsqueeze(-1)  # [crops, patches, 1]: packed like features
        start += crops
        packed, _ = vlm.model.model.pack_image_features(
            [scores], unit["image_sizes"], image_newline=torch.zeros(1, dtype=scores.dtype),
            vision_aspect_ratio=config.vision_aspect_ratio)
        out.append(packed[0].squeeze(-1))
    return out
