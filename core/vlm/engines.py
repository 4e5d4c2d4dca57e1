"""How a loaded model executes. ``auto`` picks the fastest engine for the machine.

- ``plain``: transformers as it comes, in the placement's dtype.
- ``int8`` (CPU): every linear layer (vision encoder, projector, language model, output head) runs in
  int8 with per-channel weight and per-token activation scales (int8.py). Measured on a 2-core CPU
  with native bf16: vision encoder 1.7x, decoding 1.5-2.2x faster than fp32, ahead of bf16, at a
  feature cosine of 0.9995 against fp32 (docs/performance.md).
- ``static`` (CUDA): a preallocated KV cache in length buckets. transformers compiles the decode
  step for such a cache on CUDA, which takes generation from launch-bound to GPU-bound. The same
  engine runs uncompiled on CPU, which is how the tests check it.
- ``auto``: ``static`` on CUDA (no measuring needed: the one engine that compiles decoding). On
  CPU the choice is measured once per machine and model (engine_choice.py): int8, plain fp32 or plain
  bf16, whichever is fastest to the first token at equal quality. ``choose_engine`` then answers
  ``auto`` and the loader measures (or reads the cached measurement). A dtype forced by the user is
  honoured with ``plain``; an engine named explicitly always runs as named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transformers.generation.utils import GenerateDecoderOnlyOutput

from .int8 import int8_matmul_available

if TYPE_CHECKING:
    from .engine_choice import EngineReport

# transformers 5.25 renamed generate's cache argument and output field from `past_key_values` to
# `cache` (the old name is removed in 6.0); the locked 5.23 knows only the old one. Use whichever
# this install calls current.
CACHE_ARG = "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def generated_cache(output: object) -> object:
    """The KV cache ``generate(..., return_dict_in_generate=True)`` returned."""
    return getattr(output, CACHE_ARG)

ENGINES = ("auto", "plain", "int8", "static")


@dataclass(frozen=True)
class EngineChoice:
    name: str  # plain | int8 | static; "auto" only before the loader has measured (CPU)
    reason: str  # why, in a line an admin can read
    report: EngineReport | None = field(default=None, compare=False)  # the measurement, where auto measured


def int8_unavailable_reason() -> str | None:
    """None when the int8 engine can run here, else why not."""
    return None if int8_matmul_available() else "this torch build has no CPU int8 matrix product (torch._int_mm)"


def choose_engine(requested: str | None, device: str, dtype_forced: bool = False) -> EngineChoice:
    """Resolve ``requested`` (None or "auto" for automatic) for ``device``; raises ValueError when impossible."""
    name = (requested or "auto").lower()
    if name not in ENGINES:
        raise ValueError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}")
    on_cuda = device.startswith("cuda")
    if name == "int8":
        if on_cuda:
            raise ValueError("the int8 engine runs on CPU only; on CUDA use auto or static")
        if dtype_forced:
            raise ValueError("the int8 engine computes in fp32 with int8 weights: leave the dtype automatic")
        missing = int8_unavailable_reason()
        if missing:
            raise ValueError(f"the int8 engine cannot run: {missing}")
        return EngineChoice("int8", "requested")
    if name != "auto":
        return EngineChoice(name, "requested")
    if on_cuda:
        return EngineChoice("static", "automatic on CUDA: compiled decoding over a static KV cache")
    if dtype_forced:
        return EngineChoice("plain", "automatic: the dtype was set explicitly")
    return EngineChoice("auto", "automatic on CPU: measured at load (int8, fp32, bf16)")


def cache_bucket(tokens: int, smallest: int = 256) -> int:
    """The static cache length for ``tokens``: the next power of two, so few lengths (and compiles) occur."""
    size = smallest
    while size < tokens:
        size *= 2
    return size


def rewind(cache: object, length: int) -> None:
    """Make a KV cache hold only its first ``length`` positions (a dynamic cache is cropped; a static
    one just moves its write position back: later positions are overwritten and masked until then)."""
    current = int(cache.get_seq_length())
    if length >= current:
        return
    layers = getattr(cache, "layers", [])
    if layers and all(hasattr(layer, "cumulative_length") for layer in layers):
        for layer in layers:
            layer.cumulative_length.fill_(length)
    else:
        cache.crop(length - current)
