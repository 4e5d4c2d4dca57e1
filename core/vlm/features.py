"""Encode once: vision features kept per (model weights, dtype, exact encoder inputs), reused by any request.

The encoder is most of the time to first token on a CPU. Its output depends only on the pixels the
processor produced (tiles, grids, sizes) and on the weights, so a second user opening the same case, a
regenerated answer or a new conversation about the same image reuses it. Features go to ``generate``
through the models' own ``mm_encoder_outputs`` input (transformers' pre-encoded multimodal path).
Memory is bounded; the least recently used features go first.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def weights_fingerprint(model_id: str, encoder: nn.Module, dtype: torch.dtype) -> str:
    """Changes when the vision weights do: the model id, dtype and a sample of the encoder's parameters."""
    digest = hashlib.sha256(f"{model_id}|{dtype}".encode())
    params = list(encoder.parameters())
    for param in (params[0], params[-1]) if params else ():
        digest.update(param.detach().float().cpu().flatten()[:65536].numpy().tobytes())
    return digest.hexdigest()


def encoder_inputs(get_image_features: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """The processor outputs the family's ``get_image_features`` takes (as ``generate`` itself selects them)."""
    names = inspect.signature(get_image_features).parameters
    return {k: v for k, v in inputs.items() if k in names and k != "kwargs"}


def features_key(fingerprint: str, tensors: dict[str, Any]) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for name in sorted(tensors):
        value = tensors[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 0


class FeatureCache:
    """Encoder outputs (the pooled features the language model receives) within a byte budget, LRU."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: Any) -> None:
        size = _nbytes(value)
        if size > self.budget_bytes:
            return
        with self._lock:
            self._entries[key] = value
            while sum(_nbytes(v) for v in self._entries.values()) > self.budget_bytes:
                self._entries.popitem(last=False)
                log.info("vision feature cache full (%.0f MiB): dropped the oldest entry", self.budget_bytes / 2**20)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
