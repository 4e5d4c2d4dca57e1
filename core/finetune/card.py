"""The adapter card: what an adapter is, what it was trained on and how, and how well it did."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .train import TrainConfig, TrainState


def base_revision(model) -> str:  # noqa: ANN001
    """The checkpoint's hub commit when it came from the hub; otherwise the local folder's name."""
    return getattr(model.config, "_commit_hash", None) or "local"


def write_card(out: Path, *, domain: str, base: str, revision: str, data_digest: str, examples: int,
               eval_examples: int, config: TrainConfig, state: TrainState, trainable: int, base_params: int) -> dict:
    adapter = out / "adapter"
    size = sum(p.stat().st_size for p in adapter.rglob("*.safetensors"))
    card = {"domain": domain, "base_model": base, "base_revision": revision,
            "data": {"sha256": data_digest, "examples": examples, "eval_examples": eval_examples},
            "hyperparameters": asdict(config), "trainable_parameters": trainable,
            "trainable_fraction": round(trainable / base_params, 6), "adapter_bytes": size,
            "steps": state.step, "epochs": state.epoch, "final_train_loss": state.losses[-1] if state.losses else None,
            "evaluations": state.evals, "best_eval_loss": state.best_eval_loss,
            "targets": "language model projections only (q, k, v, o, gate, up, down); no modules_to_save"}
    (out / "adapter_card.json").write_text(json.dumps(card, indent=2))
    return card


def read_card(adapter_path: str | Path) -> dict | None:
    """The card written beside an adapter folder (``out/adapter`` -> ``out/adapter_card.json``); None if gone."""
    try:
        return json.loads((Path(adapter_path).parent / "adapter_card.json").read_text())
    except (OSError, ValueError):
        return None
