"""``auto`` on CPU: the engine measured fastest to the first token on this machine, at equal quality.

Which engine is fastest depends on the processor: int8 wins where the CPU has AVX512-VNNI but no
native bf16, plain bf16 wins by far on a CPU with AMX, plain fp32 can beat int8 elsewhere (issue 20).
So the first load of a model on a machine times each candidate on the loaded model itself:

- ``int8``: the int8 engine (int8.py), fp32 activations;
- ``fp32``: the plain engine in fp32, the reference;
- ``bf16``: the plain engine in bf16, only where the CPU executes bf16 natively (AMX or AVX512-BF16);
  elsewhere it is emulated and slower than fp32, so it is not timed.

Each candidate runs one forward pass over a short real prompt (a 512-px image at the app's default
detail and a few words of text): image encoding, prefill and the first token's logits, i.e. the time
to first token less the processor's preprocessing, which is the same for every engine. One warm-up
pass, then the fastest of one to three timed passes (a few seconds on SmolVLM-256M). A candidate is
eligible only when its first-step logits have a cosine of at least ``MIN_COSINE`` to fp32's; the
eligible candidate with the lowest time wins. The candidates are applied to the loaded fp32 model in
place and undone after timing (int8 swaps the linear layers, bf16 casts the tensors), so measuring
needs no second copy of the model.

The result is kept in ``$LOUPE_HOME/cache/engines.json``, keyed by model (id and a hash of its
files or revision), torch version, CPU model name, CPU flags and thread count: another machine, model
or torch measures again. A corrupt file is ignored and rewritten. CUDA is not measured: ``static``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..files import write_atomically
from .device import cpu_flags, cpu_has_native_bf16
from .engines import EngineChoice
from .int8 import Int8Linear, int8_matmul_available
from .resolution import plan_resolution

log = logging.getLogger(__name__)

CANDIDATES = ("int8", "fp32", "bf16")
MIN_COSINE = 0.99
MAX_SLOWDOWN = 2.0  # a candidate's linear layer this many times slower than fp32's cannot win
METHOD = 1  # bump when the measurement changes: older cached results are then measured again
SHOWN_FLAGS = ("avx2", "avx512_vnni", "amx_bf16", "avx512_bf16")
PROBE_DETAIL = "standard"  # GenerationOptions' default: what an answer in the app sees
PROBE_TEXT = "Describe this image."
MAX_CACHED = 64  # models x machines kept in the cache file; the oldest go first
_TIMED_RUNS = 3  # at most; fewer once this much time was spent timing one candidate:
_TIMING_BUDGET_S = 0.5

# candidate -> (engine, dtype)
ENGINE_OF: dict[str, tuple[str, torch.dtype]] = {
    "int8": ("int8", torch.float32), "fp32": ("plain", torch.float32), "bf16": ("plain", torch.bfloat16)}

Forward = Callable[[str, nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Measurement:
    candidate: str  # int8 | fp32 | bf16
    ttft_s: float | None = None  # None: not timed (see note)
    cosine: float | None = None  # first-step logits against fp32's
    note: str = ""

    @property
    def eligible(self) -> bool:
        return self.ttft_s is not None and self.cosine is not None and self.cosine >= MIN_COSINE


@dataclass(frozen=True)
class EngineReport:
    chosen: str  # a candidate
    results: tuple[Measurement, ...]
    measured_at: str
    cached: bool = False  # read from the cache file rather than measured by this load
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return ENGINE_OF[self.chosen][0]

    @property
    def dtype(self) -> torch.dtype:
        return ENGINE_OF[self.chosen][1]

    @property
    def reason(self) -> str:
        """One line for the run record and the slot status."""
        timed = ", ".join(f"{m.candidate} {m.ttft_s:.2f} s" for m in self.results if m.ttft_s is not None)
        when = f"; cached, measured {self.measured_at}" if self.cached else ""
        return f"auto: {self.chosen} measured fastest on this CPU ({timed}{when})"


# -- the rule ----------------------------------------------------------------------------------
def pick(results: Sequence[Measurement]) -> str:
    """The eligible candidate with the lowest time to first token; fp32 when none is eligible."""
    eligible = [m for m in results if m.eligible]
    return min(eligible, key=lambda m: m.ttft_s or 0.0).candidate if eligible else "fp32"


def candidates_here(flags: set[str] | None = None) -> tuple[list[str], list[Measurement]]:
    """(candidates to time, the others with why not) on this machine."""
    skipped = []
    if not int8_matmul_available():
        skipped.append(Measurement("int8", note="this torch build has no CPU int8 matrix product"))
    if not cpu_has_native_bf16(flags):
        skipped.append(Measurement("bf16", note="no native bf16 on this CPU (AMX, AVX512-BF16): emulated"))
    names = {m.candidate for m in skipped}
    return [c for c in CANDIDATES if c not in names], skipped


# -- the machine and the model -------------------------------------------------------------------
def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def model_hash(model_id: str, commit: str | None = None) -> str:
    """A local checkpoint: its files' names, sizes and times; a hub model: its revision."""
    folder = Path(model_id)
    if folder.is_dir():
        stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
        return "files:" + hashlib.sha256(repr((str(folder.resolve()), stats)).encode()).hexdigest()[:16]
    return f"revision:{commit or 'unknown'}"


def machine_key(model_id: str, model_revision: str, flags: set[str] | None = None,
                cpu: str | None = None) -> dict[str, Any]:
    flags = cpu_flags() if flags is None else flags
    return {"model": model_id, "model_hash": model_revision, "torch": torch.__version__,
            "cpu": cpu if cpu is not None else cpu_model_name(),
            "flags_hash": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "threads": torch.get_num_threads(), "method": METHOD}


def key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


# -- the cache file ------------------------------------------------------------------------------
def default_cache_path() -> Path:
    from ..config import Settings

    return Settings().engine_cache


class EngineCache:
    """``{"version": 1, "entries": {key id: {"key", "chosen", "measured_at", "results"}}}``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()

    def _entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
            entries = data["entries"] if data.get("version") == 1 else {}
            return {k: v for k, v in entries.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            log.warning("engine cache %s is unreadable: measuring again and rewriting it", self.path)
            return {}

    def get(self, key: dict[str, Any]) -> EngineReport | None:
        entry = self._entries().get(key_id(key))
        try:
            if entry is None or entry["key"] != key or entry["chosen"] not in ENGINE_OF:
                return None
            results = tuple(Measurement(**m) for m in entry["results"])
            return EngineReport(entry["chosen"], results, entry["measured_at"], cached=True, key=key)
        except (KeyError, TypeError):
            return None

    def put(self, report: EngineReport) -> None:
        entries = self._entries()
        entries[key_id(report.key)] = {"key": report.key, "chosen": report.chosen, "measured_at": report.measured_at,
                                       "results": [asdict(m) for m in report.results]}
        newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("measured_at", "")))[-MAX_CACHED:]
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_atomically(self.path, json.dumps({"version": 1, "entries": dict(newest)}, indent=1))
        except OSError as exc:  # a read-only home still runs; it measures at every start
            log.warning("cannot write the engine cache %s: %s", self.path, exc)


# -- measuring -----------------------------------------------------------------------------------
def probe_image(side: int = 512) -> Image.Image:
    """A photo-like test image (gradients, shapes, grain), the same on every machine."""
    rng = np.random.default_rng(20)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1),
                       np.full((side, side), 128, np.float32)], axis=-1)
    pixels[side // 4: side // 2, side // 4: 3 * side // 4] = (200, 40, 40)
    pixels += rng.normal(0, 12, pixels.shape).astype(np.float32)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def probe_inputs(processor: Any, family: str, device: str) -> dict[str, torch.Tensor]:  # noqa: ANN401
    """The short real prompt every candidate answers: fp32 tensors on ``device``."""
    image = probe_image()
    plan = plan_resolution(family, processor.image_processor, [image], PROBE_DETAIL)
    chat = [{"role": "user", "content": [{"type": "image", "image": img} for img in plan.images]
             + [{"type": "text", "text": PROBE_TEXT}]}]
    inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs=plan.processor_kwargs)
    return {k: v.to(device, dtype=torch.float32) if v.is_floating_point() else v.to(device)
            for k, v in inputs.items()}


def first_logits(candidate: str, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The prompt's forward pass (encoder, prefill, head): the logits of the first generated token."""
    dtype = ENGINE_OF[candidate][1]
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.inference_mode():
        return model(**cast, logits_to_keep=1).logits[0, -1].float()


@contextlib.contextmanager
def _int8_applied(model: nn.Module) -> Iterator[None]:
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child))
    try:
        yield
    finally:
        for parent, name, child in targets:
            setattr(parent, name, child)


@contextlib.contextmanager
def _cast_applied(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    params = {id(p): p for p in model.parameters() if p.is_floating_point()}
    saved = {key: p.data for key, p in params.items()}
    buffers = [(m, n, b) for m in model.modules() for n, b in m._buffers.items()
               if b is not None and b.is_floating_point()]
    for p in params.values():
        p.data = p.data.to(dtype)
    for module, name, buf in buffers:
        module._buffers[name] = buf.to(dtype)
    try:
        yield
    finally:
        for key, p in params.items():
            p.data = saved[key]
        for module, name, buf in buffers:
            module._buffers[name] = buf


def applied(model: nn.Module, candidate: str) -> contextlib.AbstractContextManager[None]:
    """``model`` (fp32, plain) running as ``candidate`` inside the block, as it was after."""
    if candidate == "int8":
        return _int8_applied(model)
    if candidate == "bf16":
        return _cast_applied(model, torch.bfloat16)
    return contextlib.nullcontext()


def _timed(candidate: str, model: nn.Module, inputs: dict[str, torch.Tensor], forward: Forward,
           clock: Callable[[], float]) -> tuple[float, torch.Tensor]:
    logits = forward(candidate, model, inputs)  # warm-up (kernels, allocations); its logits are the sample
    times: list[float] = []
    while len(times) < _TIMED_RUNS and sum(times) < _TIMING_BUDGET_S:
        start = clock()
        forward(candidate, model, inputs)
        times.append(clock() - start)
    return min(times), logits


def matmul_slowdown(candidate: str, tokens: int = 256, width: int = 768) -> float:
    """How many times slower ``candidate``'s linear layer is than fp32's on one prefill-sized product (a
    second at most). Where int8 has no fast kernel (no VNNI) or bf16 is emulated, it measured 30x and 5x:
    such a candidate cannot win, and its full forward pass would take minutes to time."""
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(width, 4 * width)
    x = torch.randn(tokens, width, generator=generator)
    fast = {"int8": lambda: Int8Linear(linear), "bf16": lambda: nn.Linear(width, 4 * width).to(torch.bfloat16)}
    other = fast[candidate]()
    other_x = x.to(torch.bfloat16) if candidate == "bf16" else x

    def best(layer: nn.Module, inputs: torch.Tensor) -> float:
        layer(inputs)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            layer(inputs)
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        return best(other, other_x) / best(linear, x)


Slowdown = Callable[[str], float]


def measure(model: nn.Module, inputs: dict[str, torch.Tensor], candidates: Sequence[str],
            forward: Forward = first_logits, clock: Callable[[], float] = time.perf_counter,
            slowdown: Slowdown | None = matmul_slowdown) -> list[Measurement]:
    """Time each candidate on ``model`` (fp32, plain) and compare its first-step logits with fp32's. A
    candidate whose matrix products run ``MAX_SLOWDOWN`` times slower than fp32's here is not timed."""
    order = ["fp32", *[c for c in candidates if c != "fp32"]]  # the reference first
    reference: torch.Tensor | None = None
    results = {}
    for candidate in order:
        ratio = slowdown(candidate) if slowdown is not None and candidate != "fp32" else 1.0
        if ratio >= MAX_SLOWDOWN:
            results[candidate] = Measurement(
                candidate, note=f"not timed: its matrix products ran {ratio:.1f}x slower than fp32 here")
            continue
        try:
            with applied(model, candidate):
                seconds, logits = _timed(candidate, model, inputs, forward, clock)
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            if candidate == "fp32":
                raise
            results[candidate] = Measurement(candidate, note=f"failed: {str(exc).splitlines()[0][:120]}")
            continue
        if reference is None:
            reference = logits
        cosine = float(nn.functional.cosine_similarity(logits, reference, dim=0))
        note = "" if cosine >= MIN_COSINE else f"logits differ from fp32 (cosine < {MIN_COSINE})"
        results[candidate] = Measurement(candidate, round(seconds, 4), round(cosine, 5), note)
    return [results[c] for c in CANDIDATES if c in results]


def measure_engines(model: nn.Module, processor: Any, family: str, device: str,  # noqa: ANN401
                    key: dict[str, Any], flags: set[str] | None = None) -> EngineReport:
    """Measure the candidates this machine has on the loaded fp32 ``model``; the report of the winner."""
    candidates, skipped = candidates_here(flags)
    started = time.perf_counter()
    results = measure(model, probe_inputs(processor, family, device), candidates) + skipped
    results.sort(key=lambda m: CANDIDATES.index(m.candidate))
    report = EngineReport(pick(results), tuple(results), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), key=key)
    log.info("engine measured in %.1f s: %s", time.perf_counter() - started, report.reason)
    return report


def as_choice(report: EngineReport) -> EngineChoice:
    return EngineChoice(report.engine, report.reason, report)


class MeasuredEngine:
    """The loader's side of ``auto`` on CPU: the cached choice for this machine and model, or else a
    measurement of the loaded fp32 model, kept for the next load."""

    def __init__(self, cache_path: Path | None = None, remeasure: bool = False,
                 flags: set[str] | None = None) -> None:
        self.cache = EngineCache(cache_path)
        self.remeasure = remeasure
        self.flags = cpu_flags() if flags is None else flags
        self.key: dict[str, Any] = {}

    def cached(self, model_id: str, commit: str | None = None) -> EngineChoice:
        """The kept choice; ``auto`` (load in fp32, then :meth:`measure`) when there is none."""
        self.key = machine_key(model_id, model_hash(model_id, commit), self.flags)
        report = None if self.remeasure else self.cache.get(self.key)
        return as_choice(report) if report else EngineChoice("auto", "to be measured")

    def measure(self, model: nn.Module, processor: Any, family: str, device: str) -> EngineChoice:  # noqa: ANN401
        """Measure on ``model`` (fp32, plain; left so) and keep the result; plain fp32 if measuring fails."""
        try:
            report = measure_engines(model, processor, family, device, self.key, self.flags)
        except (RuntimeError, ValueError, TypeError) as exc:
            log.warning("measuring the engines failed (%s): running plain fp32", exc)
            return EngineChoice("plain", f"auto: measuring failed ({str(exc).splitlines()[0][:120]}); plain fp32")
        self.cache.put(report)
        return as_choice(report)


# -- for people ----------------------------------------------------------------------------------
def table(report: EngineReport, flags: set[str] | None = None, cpu: str | None = None) -> str:
    """The measurement as ``loupe models engines`` prints it."""
    flags = cpu_flags() if flags is None else flags
    shown = "  ".join(f"{f} {'yes' if f in flags else 'no'}" for f in SHOWN_FLAGS)
    source = f"from the cache, measured {report.measured_at}" if report.cached else f"measured {report.measured_at}"
    lines = [f"CPU: {cpu or cpu_model_name()}, {torch.get_num_threads()} torch threads",
             f"flags: {shown}", f"model: {report.key.get('model', '?')} ({source})", "",
             f"{'engine':8}{'TTFT':>10}{'cosine':>10}  {'eligible':9}{'chosen':7}note"]
    for m in report.results:
        ttft = f"{m.ttft_s:.3f} s" if m.ttft_s is not None else "-"
        cosine = f"{m.cosine:.4f}" if m.cosine is not None else "-"
        lines.append(f"{m.candidate:8}{ttft:>10}{cosine:>10}  {'yes' if m.eligible else 'no':9}"
                     f"{'*' if m.candidate == report.chosen else '':7}{m.note}".rstrip())
    engine, dtype = ENGINE_OF[report.chosen]
    lines += ["", f"auto runs: {report.chosen} (the {engine} engine in {str(dtype).removeprefix('torch.')})"]
    return "\n".join(lines)
