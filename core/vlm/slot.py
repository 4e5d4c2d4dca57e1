"""The model an app serves: loaded in the background, with an honest status the UI can show."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Settings
from ..errors import ModelUnavailable
from . import worker
from .base import VLM
from .hf import HFVLM
from .tiny import has_random_weights, make_tiny

log = logging.getLogger(__name__)

DEMO_FAMILY = "smolvlm"


@dataclass(frozen=True)
class SlotStatus:
    state: str  # "loading" | "ready" | "failed"
    model_id: str
    demo: bool = False
    error: str | None = None
    engine: str | None = None  # once ready: the engine that runs (plain | int8 | static) ...
    engine_reason: str | None = None  # ... and why ("auto: bf16 measured fastest on this CPU (...)")
    switching_to: str | None = None  # another model loading while this one keeps answering
    switch_error: str | None = None  # why the last switch failed (this model kept answering)


class ModelSlot:
    def __init__(self, loader: Callable[..., VLM] = HFVLM.from_pretrained, **load_kwargs) -> None:
        self._loader = loader
        self._load_kwargs = load_kwargs
        self._lock = threading.Lock()
        self._vlm: VLM | None = None
        self._status = SlotStatus("failed", "", error="no model configured")

    @property
    def status(self) -> SlotStatus:
        return self._status

    def load(self, name_or_path: str | Path, background: bool = False, keep_current: bool = False) -> None:
        """Load a model; on failure the status says why. ``keep_current``: a switch, where the model now loaded
        (if any) keeps answering until the new one is ready, and stays if it fails (both are in memory for a
        while); otherwise the previous model is dropped first."""
        demo = has_random_weights(name_or_path)
        with self._lock:
            if keep_current and self._vlm is not None:
                self._status = replace(self._status, switching_to=str(name_or_path), switch_error=None)
            else:
                self._vlm = None
                self._status = SlotStatus("loading", str(name_or_path), demo)
        if background:
            threading.Thread(target=self._load, args=(name_or_path, demo), daemon=True, name="loupe-load").start()
        else:
            self._load(name_or_path, demo)

    def load_demo(self, models_dir: Path, keep_current: bool = False) -> None:
        """Switch to the random-weight demo model, building it on first use (a few seconds)."""
        path = models_dir / f"demo-{DEMO_FAMILY}"
        if not has_random_weights(path):
            worker.call(make_tiny, DEMO_FAMILY, path)  # torch work stays on the torch thread
        self.load(path, keep_current=keep_current)

    def get(self) -> VLM:
        vlm, status = self._vlm, self._status
        if vlm is None:
            reason = "the model is still loading" if status.state == "loading" else status.error
            raise ModelUnavailable(f"No model is available: {reason}")
        return vlm

    def _load(self, name_or_path: str | Path, demo: bool) -> None:
        try:
            vlm = self._loader(name_or_path, **self._load_kwargs)
        except Exception as exc:  # any failure must end "loading": the UI shows the reason
            reason = str(exc) if isinstance(exc, ModelUnavailable) else f"{type(exc).__name__}: {exc}"
            log.warning("model load failed: %s", reason)
            with self._lock:
                if self._vlm is not None:  # a failed switch: the model loaded before keeps answering
                    self._status = replace(self._status, switching_to=None, switch_error=reason)
                else:
                    self._status = SlotStatus("failed", str(name_or_path), demo, reason)
            return
        engine = getattr(vlm, "engine", None)  # an HFVLM's EngineChoice; other VLMs may have none
        with self._lock:
            self._vlm = vlm
            self._status = SlotStatus("ready", str(name_or_path), demo, engine=getattr(engine, "name", None),
                                      engine_reason=getattr(engine, "reason", None))


def model_slot(settings: Settings) -> ModelSlot:
    """The model slot the settings describe: a served model (LOUPE_MODEL_SERVER), or the in-process
    engine with its device, dtype, engine and cache budgets."""
    if settings.model_server:
        from .remote import RemoteVLM

        return ModelSlot(RemoteVLM.connect, base_url=settings.model_server, api_key=settings.model_server_key)
    return ModelSlot(device=settings.device, dtype=settings.dtype, engine=settings.engine,
                     kv_cache_mb=settings.kv_cache_mb, feature_cache_mb=settings.feature_cache_mb,
                     feature_cache_dir=settings.feature_cache_dir, feature_disk_mb=settings.feature_disk_mb,
                     ocr_queries=settings.ocr_queries, engine_cache=settings.engine_cache)
