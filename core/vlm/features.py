"""Encode once: vision features kept per (model weights, dtype, exact encoder inputs), reused by any request.

The encoder is most of the time to first token on a CPU. Its output depends only on the pixels the
processor produced (tiles, grids, sizes) and on the weights, so a second user opening the same case, a
regenerated answer or a new conversation about the same image reuses it. Features go to ``generate``
through the models' own ``mm_encoder_outputs`` input (transformers' pre-encoded multimodal path).
Memory is bounded; the least recently used features go first. With a directory, features also go to
disk (one file per entry, mode 0600, named by the key's hash) so a restart does not encode again; the
disk has its own budget, trimmed oldest-read first.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
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
    """Encoder outputs (the pooled features the language model receives) within byte budgets, LRU."""

    def __init__(self, budget_bytes: int, directory: Path | None = None, disk_budget_bytes: int = 0,
                 device: str = "cpu") -> None:
        self.budget_bytes = budget_bytes
        self.directory = directory if directory is not None and disk_budget_bytes > 0 else None
        self.disk_budget_bytes = disk_budget_bytes
        self.device = device
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._held = 0  # bytes in memory
        self._lock = threading.Lock()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return value
        value = self._read(key)
        if value is None:
            self.misses += 1
            return None
        self.disk_hits += 1
        self._remember(key, value)
        return value

    def put(self, key: str, value: Any) -> None:
        self._remember(key, value)
        self._write(key, value)

    def clear(self) -> None:
        """Forget everything, on disk too."""
        with self._lock:
            self._entries.clear()
            self._held = 0
        if self.directory is not None:
            clear_directory(self.directory)

    def drop_memory(self) -> None:
        """Forget what is in memory only (as a restart does); the disk copies stay."""
        with self._lock:
            self._entries.clear()
            self._held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _remember(self, key: str, value: Any) -> None:
        size = _nbytes(value)
        if size > self.budget_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._held -= _nbytes(self._entries.pop(key))
            self._entries[key] = value
            self._held += size
            while self._held > self.budget_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._held -= _nbytes(dropped)
                log.info("vision feature cache full (%.0f MiB): dropped the oldest entry", self.budget_bytes / 2**20)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    def _read(self, key: str) -> Any | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            value = torch.load(path, map_location=self.device, weights_only=True)
            os.utime(path)  # the disk budget drops the least recently read first
        except FileNotFoundError:
            return None
        except Exception as exc:  # a damaged file is a miss, and goes
            log.warning("unreadable cached features dropped (%s)", type(exc).__name__)
            path.unlink(missing_ok=True)
            return None
        return value

    def _write(self, key: str, value: Any) -> None:
        if self.directory is None or _nbytes(value) > self.disk_budget_bytes:
            return
        on_cpu = [v.cpu() for v in value] if isinstance(value, list | tuple) else value.cpu()
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".part")  # mode 0600
        try:
            with os.fdopen(handle, "wb") as out:
                torch.save(tuple(on_cpu) if isinstance(value, tuple) else on_cpu, out)
            os.replace(tmp, self._path(key))
        except OSError as exc:
            log.warning("could not keep vision features on disk (%s)", exc.strerror or type(exc).__name__)
            Path(tmp).unlink(missing_ok=True)
            return
        self._trim_disk()

    def _trim_disk(self) -> None:
        assert self.directory is not None
        files = []
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):  # another thread may trim at the same time
                if entry.name.endswith(".pt"):
                    stat = entry.stat()
                    files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        files.sort(key=lambda entry: entry[0])
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.disk_budget_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            log.info("vision feature cache on disk over %.0f MiB: dropped the oldest entry",
                     self.disk_budget_bytes / 2**20)


def clear_directory(directory: Path) -> int:
    """Delete every cached feature file in ``directory`` (a purge needs no loaded model); returns how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith((".pt", ".part")):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
