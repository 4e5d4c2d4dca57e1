"""Which visual tokens matter: scorers, and the layout tokens no scorer may drop.

A scorer sees the encoder's output per unit (after the projector, as the language model would get it)
and returns a score per token. Layout tokens are found per family from the prompt and the features:

- smolvlm: a split image ends with its global view (the tile after ``<global-img>``): kept whole.
  An image sent as one tile is its own global view, and is pruned like any tile.
- llava-ov: row newlines (the model's ``image_newline`` vector, found by value) are kept; so is the
  base view when the image also has higher-resolution crops.
- qwen2vl: none inside the image (its start and end markers are text tokens, never pruned).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from .prune import UnitScores


class TokenScorer(Protocol):
    name: str
    needs_attention: bool  # wants the vision encoder's attention, read while it encodes (attention.py)

    def score(self, features: Sequence[torch.Tensor],
              attention: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """One score per token of each unit's features [n, width]; higher is kept first."""
        ...


class AttentionScorer:
    """The default: the attention each token's patches receive in the encoder's penultimate layer."""

    name = "attention"
    needs_attention = True

    def score(self, features: Sequence[torch.Tensor],
              attention: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        if attention is None:
            raise ValueError("the attention scorer needs the encoder's attention")
        for tokens, scores in zip(features, attention, strict=True):
            if tokens.shape[0] != scores.shape[0]:
                raise ValueError(f"{scores.shape[0]} attention scores for {tokens.shape[0]} tokens")
        return [s.float() for s in attention]


class RedundancyScorer:
    """The "diverse" policy: a token that nearly duplicates another (cosine similarity of projected
    features) is the first to go, so what survives covers the image rather than its largest uniform
    region."""

    name = "diverse"
    needs_attention = False

    def score(self, features: Sequence[torch.Tensor],
              attention: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        out = []
        for tokens in features:
            unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
            similarity = unit @ unit.T
            similarity.fill_diagonal_(-1.0)
            out.append(-similarity.max(dim=-1).values)  # least redundant first
        return out


class FixedScorer:
    """Scores given in advance (tests, planted salience)."""

    name = "fixed"
    needs_attention = False

    def __init__(self, scores: Sequence[torch.Tensor]) -> None:
        self.scores = list(scores)

    def score(self, features: Sequence[torch.Tensor],
              attention: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        return [s.clone() for s in self.scores]


def unit_features(family: str, pooled: Any, units: int) -> list[torch.Tensor]:
    """The encoder output per unit, [n, width] each."""
    if family == "smolvlm":
        (tokens,) = pooled
        return list(tokens.chunk(units)) if units > 1 else [tokens]
    return list(pooled)


def layout_masks(vlm, inputs: dict[str, Any], features: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # noqa: ANN001
    family = vlm.family.name
    masks = [torch.zeros(f.shape[0], dtype=torch.bool) for f in features]
    if family == "smolvlm":
        ids = inputs["input_ids"][0]
        global_id = vlm.processor.tokenizer.convert_tokens_to_ids("<global-img>")
        starts = [i for i in range(ids.numel()) if ids[i] == vlm.image_token_id
                  and (i == 0 or ids[i - 1] != vlm.image_token_id)]
        subtiles = 0
        for unit, start in enumerate(starts[:len(masks)]):
            if start > 0 and ids[start - 1] == global_id:
                if subtiles:  # the global view of a split image
                    masks[unit][:] = True
                subtiles = 0
            else:
                subtiles += 1
    elif family == "llava-ov":
        newline = vlm.model.model.image_newline.detach().to(features[0].dtype) if features else None
        config = vlm.model.config.vision_config
        base = (int(config.image_size) // int(config.patch_size)) ** 2
        for mask, tokens in zip(masks, features, strict=True):
            if newline is not None:
                mask |= (tokens == newline).all(dim=-1)
            if tokens.shape[0] > base + 1:  # crops follow: the base view is the thumbnail
                mask[:base] = True
    return masks


def score_units(vlm, inputs: dict[str, Any], pooled: Any, scorer: TokenScorer,  # noqa: ANN001
                attention: Sequence[torch.Tensor] | None = None) -> list[UnitScores]:
    from ..vlm.features import encoder_inputs
    from ..vlm.image_units import split_units

    units = len(split_units(vlm.family.name, encoder_inputs(vlm.model.model.get_image_features, inputs)))
    features = unit_features(vlm.family.name, pooled, units)
    layouts = layout_masks(vlm, inputs, features)
    return [UnitScores(s.cpu(), m) for s, m in zip(scorer.score(features, attention), layouts, strict=True)]
