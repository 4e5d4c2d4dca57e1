"""Conversation reuse: keep each conversation's KV cache so a follow-up question only prefills its new text.

After an answer, the cache holds the prompt (images included) and the answer. The next turn's prompt
starts with the same tokens, so generation continues from the longest common prefix (the answer may
tokenise differently inside the template than it was generated, so the prefix is found, not assumed).
A cache is reused only for the same conversation, model, adapter, detail level and image contents, and
only when the shared prefix covers every image token: the images are then never encoded again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class CachedConversation:
    key: str  # model, adapter, detail and image digests: any change makes the cache useless
    token_ids: torch.Tensor  # 1-D: the tokens the cache holds, in order
    cache: Any  # a transformers Cache covering token_ids
    image_end: int  # index just past the last image token: a reusable prefix must reach it
    rope_deltas: torch.Tensor | None  # Qwen2-VL's M-RoPE offset for this conversation
    nbytes: int
    pruned: torch.Tensor | None = None  # bool over the first prompt: the tokens kept by visual-token pruning


def images_digest(images: Sequence[Image.Image]) -> str:
    digest = hashlib.sha256()
    for img in images:
        digest.update(f"{img.mode}{img.size}".encode())
        digest.update(img.tobytes())
    return digest.hexdigest()


def layouts_digest(layouts: Sequence[Sequence[tuple[str, tuple[int, int, int, int]]]]) -> str:
    """Names the OCR layouts that query embeddings were computed from (their placeholders all look alike)."""
    digest = hashlib.sha256()
    for layout in layouts:
        digest.update(repr([(text, tuple(box)) for text, box in layout]).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(a.numel(), b.numel())
    differs = (a[:n] != b[:n]).nonzero()
    return int(differs[0]) if differs.numel() else n


def cache_nbytes(cache: Any) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


class ConversationCaches:
    """KV caches of recent conversations, least recently used first out, within a byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, CachedConversation] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, conversation: str) -> CachedConversation | None:
        """Remove and return a conversation's cache (a generation extends it in place, then puts it back)."""
        with self._lock:
            return self._entries.pop(conversation, None)

    def put(self, conversation: str, entry: CachedConversation) -> None:
        if entry.nbytes > self.budget_bytes:
            log.info("conversation cache of %.0f MiB exceeds the %.0f MiB budget: not kept",
                     entry.nbytes / 2**20, self.budget_bytes / 2**20)
            return
        with self._lock:
            self._entries[conversation] = entry
            while sum(e.nbytes for e in self._entries.values()) > self.budget_bytes:
                evicted, old = self._entries.popitem(last=False)
                log.info("evicted the conversation cache of %s (%.0f MiB)", evicted, old.nbytes / 2**20)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
