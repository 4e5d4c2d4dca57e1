"""Recommended checkpoints, by short name. Any hub id or local path works too."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Checkpoint:
    name: str
    repo_id: str
    family: str
    note: str


RECOMMENDED: tuple[Checkpoint, ...] = (
    Checkpoint("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "smolvlm", "default; CPU-friendly"),
    Checkpoint("smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", "smolvlm", "better answers, 2x cost"),
    Checkpoint("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2vl", "strong OCR and documents; GPU advised"),
    Checkpoint("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2vl", "strong grounding; GPU advised"),
    Checkpoint("llava-ov-0.5b", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-ov", "small LLaVA-OneVision"),
)
DEFAULT = RECOMMENDED[0]


def resolve(name_or_path: str) -> str:
    """Map a short name to its hub id; anything else (hub id, local path) passes through."""
    for ckpt in RECOMMENDED:
        if name_or_path == ckpt.name:
            return ckpt.repo_id
    return name_or_path
