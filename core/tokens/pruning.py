"""The pruning setting a loaded VLM carries: a budget and a scorer, applied after every encode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .prune import Budget, Pruned, keep_mask, prune
from .scorers import AttentionScorer, RedundancyScorer, TokenScorer, score_units


@dataclass
class Pruning:
    budget: Budget
    scorer: TokenScorer
    diverse_share: float = 0.0  # > 0: that share of the kept tokens chosen by least redundancy instead

    @property
    def label(self) -> str:
        name = f"{self.scorer.name}+diverse" if self.diverse_share else self.scorer.name
        return f"{name} {self.budget.label}"

    def apply(self, vlm, inputs: dict[str, Any], gen_inputs: dict[str, Any]) -> Pruned:  # noqa: ANN001
        """``gen_inputs`` (with encoder outputs) cut to the kept visual tokens; ``inputs``: the processor's."""
        pooled = gen_inputs["mm_encoder_outputs"]["image"].pooler_output
        attention = vlm.last_unit_attention if self.scorer.needs_attention else None
        units = score_units(vlm, inputs, pooled, self.scorer, attention)
        second = score_units(vlm, inputs, pooled, RedundancyScorer()) if self.diverse_share else None
        masks = keep_mask(units, self.budget, second, self.diverse_share)
        return prune(vlm.model, vlm.family.name, gen_inputs, vlm.image_token_id, masks)


def pruning_setting(keep: float | int | None, policy: str = "attention") -> Pruning | None:
    """From a setting: None or 1 = off; a share in (0, 1), or a token count per unit (above 1)."""
    if keep is None or keep == 1:
        return None
    budget = Budget(keep_count=int(keep)) if keep > 1 else Budget(keep_ratio=float(keep))
    policies = {"attention": (AttentionScorer, 0.0), "diverse": (RedundancyScorer, 0.0),
                "important+diverse": (AttentionScorer, 0.5)}
    if policy not in policies:
        raise ValueError(f"unknown pruning policy {policy!r}; choose one of {', '.join(policies)}")
    scorer, diverse_share = policies[policy]
    return Pruning(budget, scorer(), diverse_share)
