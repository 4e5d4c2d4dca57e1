"""Choose where and in which precision a model runs.

CUDA gets bf16. On CPU, bf16 only pays off where the processor executes it natively
(AVX512-BF16 or AMX); elsewhere it is emulated and slower than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & _NATIVE_BF16_FLAGS)


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(_DTYPES))}") from None


def choose_placement(device: str | None = None, dtype: str | None = None,
                     flags: set[str] | None = None) -> Placement:
    """Pick device and dtype automatically; either can be forced (e.g. ``device="cpu"``, ``dtype="fp32"``)."""
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype and dtype != "auto":
        return Placement(dev, parse_dtype(dtype))
    if dev.startswith("cuda"):
        return Placement(dev, torch.bfloat16)
    return Placement(dev, torch.bfloat16 if cpu_has_native_bf16(flags) else torch.float32)
