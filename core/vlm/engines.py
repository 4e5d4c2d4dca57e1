"""How a loaded model executes. ``auto`` picks the fastest measured engine for the device.

- ``plain``: transformers as it comes, in the placement's dtype.
- ``int8`` (CPU): every linear layer (vision encoder, projector, language model, output head) runs in
  int8 with per-channel weight and per-token activation scales (int8.py). Measured on a 2-core CPU
  with native bf16: vision encoder 1.7x, decoding 1.5-2.2x faster than fp32, ahead of bf16, at a
  feature cosine of 0.9995 against fp32 (docs/performance.md).
- ``static`` (CUDA): a preallocated KV cache in length buckets. transformers compiles the decode
  step for such a cache on CUDA, which takes generation from launch-bound to GPU-bound. The same
  engine runs uncompiled on CPU, which is how the tests check it.
- ``auto``: ``static`` on CUDA; ``int8`` on CPU where torch's int8 matrix product runs, else
  ``plain``. A dtype forced by the user is honoured with ``plain``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers.generation.utils import GenerateDecoderOnlyOutput

from .int8 import int8_matmul_available

# transformers 5.25 renamed generate's cache argument and output field from `past_key_values` to
# `cache` (the old name is removed in 6.0); the locked 5.23 knows only the old one. Use whichever
# this install calls current.
CACHE_ARG = "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def generated_cache(output: object) -> object:
    """The KV cache ``generate(..., return_dict_in_generate=True)`` returned."""
    return getattr(output, CACHE_ARG)

log = logging.getLogger(__name__)

ENGINES = ("auto", "plain", "int8", "static")


@dataclass(frozen=True)
class EngineChoice:
    name: str  # plain | int8 | static
    reason: str  # why, in a line an admin can read


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
    missing = int8_unavailable_reason()
    if missing:
        log.warning("int8 engine unavailable (%s): running plain", missing)
        return EngineChoice("plain", f"automatic: {missing}")
    return EngineChoice("int8", "automatic on CPU: int8 measured fastest")


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
