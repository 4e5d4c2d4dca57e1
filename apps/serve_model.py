"""``loupe serve-model``: vLLM's OpenAI-compatible server for the department's model, with every LoRA
adapter of the registry that was trained on it registered (multi-LoRA: each request names its domain's
adapter). vLLM lives in a virtual environment of its own (``make vllm``): it pins its own torch and
transformers. The app processes then answer through it with ``LOUPE_MODEL_SERVER``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings
from loupe.core.vlm.device import cpu_has_native_bf16
from loupe.core.vlm.registry import resolve
from loupe.core.vlm.remote import served_adapter_name

# vLLM accepts these as --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class ServedAdapter:
    name: str  # Loupe's name (the registry's)
    domain: str
    served: str  # the name requests use (served_adapter_name)
    path: Path
    rank: int


def vllm_python(settings: Settings, explicit: Path | None = None) -> Path:
    """The vLLM environment's Python: ``--python``, LOUPE_VLLM_PYTHON, the checkout's ``.venv-vllm`` (``make
    vllm``), or LOUPE_HOME/vllm."""
    if explicit is not None:
        return explicit
    if os.environ.get("LOUPE_VLLM_PYTHON"):
        return Path(os.environ["LOUPE_VLLM_PYTHON"])
    checkout = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
    return checkout if checkout.is_file() else settings.home / "vllm" / "bin" / "python"


def adapter_rank(folder: Path) -> int:
    config = json.loads((folder / "adapter_config.json").read_text())
    ranks = [int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def served_adapters(store: CaseStore, model_id: str) -> tuple[list[ServedAdapter], list[str]]:
    """The registry's adapters trained on ``model_id`` (to register), and why any others are left out."""
    chosen: list[ServedAdapter] = []
    skipped: list[str] = []
    for record in store.adapters():
        folder = Path(record.path)
        if resolve(record.base_model) != model_id:
            skipped.append(f"{record.name}: trained on {record.base_model}")
        elif not (folder / "adapter_config.json").is_file():
            skipped.append(f"{record.name}: no adapter_config.json in its folder")
        else:
            chosen.append(ServedAdapter(record.name, record.domain, served_adapter_name(record.name, folder),
                                        folder.resolve(), adapter_rank(folder)))
    return chosen, skipped


def default_dtype() -> str:
    """bfloat16 where the CPU computes it natively; float32 otherwise (vLLM's CPU build falls back to a slow
    path for bfloat16 without AVX512-BF16 or AMX)."""
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def vllm_command(python: Path, model: str, host: str, port: int, dtype: str, max_model_len: int,
                 adapters: list[ServedAdapter], eager: bool = False, served_name: str = "loupe") -> list[str]:
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", served_name, "--host", host, "--port", str(port), "--dtype", dtype,
               "--max-model-len", str(max_model_len),
               # Loupe sizes each image per request (its detail level) through processor settings; the
               # server is reached by the app processes only (loopback by default, or an API key).
               "--trust-request-mm-kwargs"]
    if eager:  # no torch.compile at start: minutes sooner on a small CPU, slower decoding after
        command.append("--enforce-eager")
    # LoRA is always on, so the Admin tab can activate an adapter trained after the server started
    # (it is loaded at run time: VLLM_ALLOW_RUNTIME_LORA_UPDATING).
    rank = max((a.rank for a in adapters), default=16)
    command += ["--enable-lora", "--max-lora-rank", str(next(r for r in VLLM_LORA_RANKS if r >= rank)),
                "--max-loras", str(max(1, min(len(adapters), 4)))]
    if adapters:
        command += ["--lora-modules", *(f"{a.served}={a.path}" for a in adapters)]
    return command


SMALL_MACHINE_CORES = 4  # up to this many cores, the one vLLM keeps for its front end costs too much


def engine_binding(cores: str) -> dict[str, str]:
    """vLLM's CPU thread binding for its engine: ``auto`` (every core on a small machine, vLLM's own choice on
    a larger one), ``all``, ``vllm`` (vLLM's choice: one core kept for its front end and scheduler), or a
    CPU list such as ``0-3``. vLLM's default on a 2-core machine leaves the engine one core: a new 512-px
    image's TTFT 7.43 s against 3.98 s on both, 8 users' decode 32.6 against 49.5 tokens/s (2026-12-06,
    docs/performance.md). An operator's own VLLM_CPU_OMP_THREADS_BIND wins."""
    if cores == "vllm" or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    available = sorted(os.sched_getaffinity(0))
    if cores == "auto":
        if len(available) > SMALL_MACHINE_CORES:
            return {}
        cores = "all"
    if cores == "all":
        cores = ",".join(map(str, available))
    return {"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def vllm_environment(kv_cache_gb: int, api_key: str | None, cores: str = "auto") -> dict[str, str]:
    env = dict(os.environ) | engine_binding(cores)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gb)  # GiB of KV cache on a CPU server
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("VLLM_NO_USAGE_STATS", "1")  # no telemetry from a hospital network
    env.setdefault("DO_NOT_TRACK", "1")
    if api_key:
        env["VLLM_API_KEY"] = api_key
    return env
