"""A learning check any machine can run in a minute: sixteen coloured squares, each with a code word.

A base model cannot know which word goes with which square; a LoRA adapter that learns them proves the
whole training path (encoding, masking, gradients through the adapter, saving) on the device it ran on.
The settings were calibrated on a tiny SmolVLM with widened initial weights (``LEARNING_INIT_STD``):
after 40 epochs the greedy answers match at least 90% and the loss falls more than tenfold.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .train import TrainConfig

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa")
# at transformers' default 0.02 a random tiny LM barely lets the prompt change its output
LEARNING_INIT_STD = 0.2


def learning_config(epochs: int = 40) -> TrainConfig:
    return TrainConfig(learning_rate=3e-3, epochs=epochs, accumulate=4, eval_every=40, checkpoint_every=1000,
                       patience=100)


def write_code_words(root: Path) -> Path:
    """Write the sixteen images and their ``train.jsonl`` under ``root``; returns the JSONL's path."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, word in enumerate(WORDS):
        Image.new("RGB", (64, 64), (i * 15, 255 - i * 15, (i * 40) % 255)).save(root / f"item{i}.png")
        lines.append(json.dumps({"images": [f"item{i}.png"], "messages": [
            {"role": "user", "content": f"<image>Which code is item {i}?"},
            {"role": "assistant", "content": word}]}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"
