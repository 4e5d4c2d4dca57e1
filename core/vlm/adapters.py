"""LoRA adapters held by one loaded model, and the one its next forward pass uses.

Adapters are loaded once next to the base weights (peft through transformers) and switched with
``set_adapter``; the base is never reloaded. All model work runs on the torch thread (worker.py) one
job at a time, so each job names its adapter at its start and the switch is exact under concurrent
users. On the int8 engine peft wraps the ``Int8Linear`` layers like its own quantised layers: the
base product stays int8 and the low-rank path runs in fp32.

Each load gets a fresh slot name inside peft, so a re-trained adapter loaded again under the same
name never continues a conversation cached with the old weights (the cache key carries the slot).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import ModelUnavailable
from .int8 import Int8Linear

WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class _Loaded:
    slot: str  # the adapter's name inside peft
    version: tuple[str, int]  # weights file and its modification time: a change means load again


def _weights(path: Path) -> Path:
    for name in WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise ModelUnavailable(f"no adapter weights ({' or '.join(WEIGHTS)}) in {path}")


class Adapters:
    def __init__(self, model: nn.Module, int8: bool) -> None:
        self._model = model
        self._int8 = int8
        self._loaded: dict[str, _Loaded] = {}
        self._serial = 0
        self._applied: str | None = None  # the slot peft runs now; None: base weights

    @property
    def names(self) -> list[str]:
        return list(self._loaded)

    def load(self, name: str, path: str | Path) -> None:
        """Load ``name`` from an adapter folder unless these very files are loaded already. On the torch thread."""
        from peft import PeftConfig
        from peft.tuners.lora.layer import Linear as LoraLinear

        folder = Path(path)
        weights = _weights(folder)
        version = (str(weights.resolve()), weights.stat().st_mtime_ns)
        known = self._loaded.get(name)
        if known is not None and known.version == version:
            return
        self._serial += 1
        slot = f"adapter{self._serial}"
        try:
            config = PeftConfig.from_pretrained(str(folder))
            if self._int8:
                config._register_custom_module({Int8Linear: LoraLinear})  # noqa: SLF001 - peft's hook for custom layers
            with warnings.catch_warnings():  # peft warns of any layer type it does not know, ours included
                warnings.filterwarnings("ignore", message="Unsupported layer type")
                self._model.load_adapter(str(folder), adapter_name=slot, peft_config=config)
        except Exception as exc:  # noqa: BLE001 - peft, safetensors and torch each raise their own kinds
            self._applied = "?"
            if slot in (getattr(self._model, "peft_config", None) or {}):  # injected before its weights failed
                self._model.delete_adapter(slot)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelUnavailable(f"cannot load adapter {name!r} from {folder}: {first}") from exc
        if known is not None:
            self._model.delete_adapter(known.slot)
        self._loaded[name] = _Loaded(slot, version)
        self._applied = "?"  # loading may have switched peft's active adapter: apply the next choice anew

    def adopt(self, name: str) -> None:
        """Record an adapter added to the model directly (training adds its own with ``add_adapter``)."""
        self._loaded[name] = _Loaded(name, ("trained here", 0))
        self._applied = "?"

    def use(self, name: str | None) -> str | None:
        """Make the next forward passes run with adapter ``name`` (None: the base weights); its slot."""
        if name is not None and name not in self._loaded:
            raise ModelUnavailable(f"adapter {name!r} is not loaded (loaded: {', '.join(self._loaded) or 'none'})")
        slot = self._loaded[name].slot if name is not None else None
        if slot == self._applied or (slot is None and not self._loaded):
            return slot
        if slot is None:
            self._model.disable_adapters()
        else:
            self._model.set_adapter(slot)
            self._model.enable_adapters()
        self._applied = slot
        return slot
