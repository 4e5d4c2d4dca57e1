"""Per-family differences between the supported VLM architectures, in one table."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    name: str  # Loupe's short name, used on the CLI
    model_types: tuple[str, ...]  # values of config.model_type
    vision_attr: str  # vision encoder under model.model
    text_attr: str  # language model under model.model
    uses_mrope: bool = False  # Qwen-VL: 3-D rotary positions; pruning must keep position ids


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("smolvlm", ("idefics3", "smolvlm"), "vision_model", "text_model"),
        Family("qwen2vl", ("qwen2_vl", "qwen2_5_vl"), "visual", "language_model", uses_mrope=True),
        Family("llava-ov", ("llava_onevision", "llava"), "vision_tower", "language_model"),
    )
}


class UnsupportedModel(ValueError):
    pass


def family_of(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise UnsupportedModel(f"model type {model_type!r} is not supported (known: {known})")


def vision_encoder(model: nn.Module, family: Family) -> nn.Module:
    return getattr(model.model, family.vision_attr)


def language_model(model: nn.Module, family: Family) -> nn.Module:
    return getattr(model.model, family.text_attr)



def processor_class(family: Family) -> type:
    """The processor class to load for ``family`` (image-only variants, see processors.py)."""
    from transformers import AutoProcessor

    from . import processors

    return {"qwen2vl": processors.Qwen2VLProcessor, "llava-ov": processors.LlavaOnevisionProcessor}.get(
        family.name, AutoProcessor)
