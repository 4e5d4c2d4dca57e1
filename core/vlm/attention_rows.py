"""Attention probabilities for some query rows, as SDPA computes them, for code that reads attention
(focus scoring, token pruning) without asking the whole model for eager attention."""

from __future__ import annotations

import torch


def attention_rows(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float,
                   rows: slice) -> torch.Tensor:
    """Softmax attention [batch, heads, len(rows), keys] of ``query[:, :, rows]`` over all keys; grouped-
    query attention's shared key heads are repeated; a 4-D additive mask is applied to the same rows."""
    groups = query.shape[1] // key.shape[1]
    keys = (key.repeat_interleave(groups, dim=1) if groups > 1 else key).float()
    logits = (query[:, :, rows].float() @ keys.transpose(-1, -2)) * scale
    if mask is not None and mask.dim() == 4:
        logits = logits + mask[:, :, rows, :keys.shape[-2]].float()
    return logits.softmax(dim=-1)
