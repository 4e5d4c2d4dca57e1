"""``loupe bench gpu``: the GPU path checked and timed in one short run.

Four parts, run in this order, each in its own process, on the device the app would use (CUDA when
present; on a CPU the same code runs as a rehearsal, with tiny models in the tests):

- ``chat``: the app's streaming path (``HFVLM.stream``, automatic dtype and engine: the static cache,
  compiled decoding on CUDA) against plain ``generate`` with transformers' own static cache in the
  same dtype, SmolVLM-256M size, a new 512-px image, 64 new tokens. Each side answers once on another
  image of that size first, so both are timed as a server that has compiled that shape already.
- ``prune``: LLaVA-OneVision-0.5B size, prefill seconds with every visual token and with 25/10/5%
  kept (``loupe bench prune``'s run, timed after ``torch.cuda.synchronize``).
- ``lora``: the code-word learning check (core/finetune/code_words.py) trained on the device.
- ``static``: for each family, greedy answers of the static engine and the plain (dynamic cache)
  engine in the app's dtype (and in fp32 where those differ), compared character for character.

Weights are random: compute does not depend on them. Targets (GPU only): decode >= 200 tokens/s in
the streaming path, time to first token <= 0.15 s for the 512-px image.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .bench_process import in_own_process, peak_rss_mb, random_checkpoint, samples_folder
from .bench_prune import FAMILIES, _family_run

PARTS = ("chat", "prune", "lora", "static")  # the order they run in: the targets first
DESCRIPTIONS = {
    "chat": "chat: the app's streaming path and generate with a static cache, SmolVLM-256M size",
    "prune": "prune: prefill with 100/25/10/5% of the visual tokens, LLaVA-OneVision-0.5B size",
    "lora": "lora: the code-word learning check, {epochs} epochs",
    "static": "static: greedy equality of the static and plain engines, three families",
}
SIZES = ("auto", "tiny", "real")
PHOTO = "rsicd_airport_17.jpg"  # in data/samples
DECODE_TARGET = 200.0  # tokens/s in the app's streaming path
TTFT_TARGET_S = 0.15  # 512-px image


def _device() -> dict:
    import torch

    from loupe.core.vlm.device import choose_placement

    placement = choose_placement()
    info = {"device": placement.device, "dtype": placement.dtype_name, "torch": torch.__version__}
    if placement.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(placement.device)
    else:
        from loupe.core.vlm.device import cpu_flags

        info["cpu"] = platform.processor() or platform.machine()
        info["cpu_flags"] = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})
    return info


def _chat(config: str, path: str, new_tokens: int, repeats: int, out: mp.Queue) -> None:
    from .bench import _measure

    _measure(config, path, "smolvlm", ["512"], new_tokens, repeats, out, warm_each_size=True)


def _static_equality(paths: dict[str, str], new_tokens: int, out: mp.Queue) -> None:
    """Greedy answers of the static and plain engines per family, in the app's dtype and in fp32."""
    try:
        import torch
        from PIL import Image

        from loupe.core.vlm.base import GenerationOptions, Message
        from loupe.core.vlm.hf import HFVLM

        photo = Image.open(samples_folder() / PHOTO).convert("RGB").resize((512, 384))
        messages = [Message("user", "Describe this picture.", [photo])]
        options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens, detail="low")
        rows = []
        for family, path in paths.items():
            for dtype in (None, "fp32"):
                answers, dtype_name = {}, ""
                for engine in ("plain", "static"):
                    vlm = HFVLM.from_pretrained(path, dtype=dtype, engine=engine)
                    dtype_name = vlm.placement.dtype_name
                    answers[engine] = [vlm.chat(messages, options).text for _ in range(2)]  # 2nd: compiled
                    del vlm
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                plain, static = answers["plain"][-1], answers["static"][-1]
                rows.append({"family": family, "dtype": dtype_name, "equal": plain == static,
                             "first_difference_at_char": _first_difference(plain, static),
                             "distinct_words": len(set(plain.split())),
                             "static_repeatable": answers["static"][0] == static})
                if plain == static or dtype_name == "float32":
                    break  # fp32 is run only to tell rounding from a fault where the app's dtype differs
        out.put({"rows": rows, "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _first_difference(a: str, b: str) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                None if len(a) == len(b) else min(len(a), len(b)))


def _lora(workdir: str, epochs: int, out: mp.Queue) -> None:
    """The code-word learning check, trained on the device the app would use."""
    try:
        from loupe.core.finetune.code_words import LEARNING_INIT_STD, learning_config, write_code_words
        from loupe.core.finetune.data import read_examples
        from loupe.core.finetune.train import encode_example, evaluate, train
        from loupe.core.vlm.hf import HFVLM
        from loupe.core.vlm.tiny import make_tiny

        root = Path(workdir)
        model = make_tiny("smolvlm", root / "model", init_std=LEARNING_INIT_STD)
        examples = read_examples(write_code_words(root / "data"))
        vlm = HFVLM.from_pretrained(model, dtype="fp32", engine="plain")
        config = learning_config(epochs)
        base = evaluate(vlm, [encode_example(vlm, e, config.detail) for e in examples], config)
        started = time.perf_counter()
        state = train(vlm, examples, examples, root / "run", config)
        train_s = time.perf_counter() - started
        last = state.evals[-1]
        out.put({"device": vlm.placement.device, "epochs": epochs, "examples": len(examples),
                 "base_exact_match": base["exact_match"], "exact_match": last["exact_match"],
                 "first_loss": round(state.losses[0], 4), "last_loss": round(state.losses[-1], 4),
                 "train_s": round(train_s, 2), "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _checkpoint(workdir: Path, family: str, size: str) -> Path:
    return random_checkpoint(workdir / f"{family}-{size}-random", family, size)


def run_gpu_bench(workdir: Path, size: str = "auto", parts: tuple[str, ...] = PARTS, new_tokens: int = 64,
                  repeats: int = 3, lora_epochs: int = 40, part_timeout_s: float = 300, out: Path | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run ``parts`` in the order of PARTS; ``size`` "auto" is the real architectures' size on CUDA and
    "tiny" on a CPU. A part running past ``part_timeout_s`` is stopped and reported; ``out`` is
    rewritten after each part, so a run cut short keeps what it measured."""
    import torch

    unknown = [p for p in parts if p not in PARTS]
    if unknown or size not in SIZES:
        raise ValueError(f"unknown part {unknown[0]!r}" if unknown else f"size must be one of {', '.join(SIZES)}")
    if size == "auto":
        size = "real" if torch.cuda.is_available() else "tiny"
    workdir.mkdir(parents=True, exist_ok=True)
    on_gpu = torch.cuda.is_available()
    results: dict[str, object] = {}
    started = time.perf_counter()
    machine = _device()

    def report() -> dict:
        result = {"benchmark": "gpu", "machine": machine, "size": size, "weights": "random",
                  "new_tokens": new_tokens, "repeats": repeats, "seconds": round(time.perf_counter() - started, 1),
                  "results": results, "summary": _summary(results, on_gpu and size == "real")}
        if out is not None:
            out.write_text(json.dumps(result, indent=2))
        return result

    def run(target: Callable[..., None], *args: object) -> dict:
        return in_own_process(target, *args, timeout_s=part_timeout_s)

    for part in (p for p in PARTS if p in parts):
        progress(DESCRIPTIONS[part].format(epochs=lora_epochs))
        if part == "chat":
            path = str(_checkpoint(workdir, "smolvlm", size))
            results["chat"] = [run(_chat, config, path, new_tokens, repeats)
                               for config in ("baseline_static", "loupe")]
        elif part == "prune":
            results["prune"] = run(_family_run, "llava-ov", _checkpoint(workdir, "llava-ov", size))
        elif part == "lora":
            with tempfile.TemporaryDirectory(prefix="loupe-bench-lora-", dir=workdir) as tmp:
                results["lora"] = run(_lora, tmp, lora_epochs)
        else:
            paths = {f: str(_checkpoint(workdir, f, size)) for f in FAMILIES}
            results["static"] = run(_static_equality, paths, min(new_tokens, 32))
        report()
    return report()


def _summary(results: dict, targets_apply: bool) -> dict:
    """The figures the targets are stated in; the targets are judged only on CUDA at the real size."""
    summary: dict[str, object] = {}
    chat = {r.get("config"): r for r in results.get("chat", [])}
    rows = {config: next(iter(r.get("images", [])), {}) for config, r in chat.items()}
    ours, base = rows.get("loupe", {}), rows.get("baseline_static", {})
    if ours:
        ttft, decode = ours.get("time_to_first_token_s"), ours.get("tokens_per_s")
        summary |= {"app_ttft_512_s": ttft, "app_decode_tokens_per_s": decode, "app_engine": ours.get("engine"),
                    "ttft_target_met": ttft is not None and ttft <= TTFT_TARGET_S if targets_apply else None,
                    "decode_target_met": decode is not None and decode >= DECODE_TARGET if targets_apply else None}
        if base.get("time_to_first_token_s") and base.get("tokens_per_s"):
            summary |= {"ttft_speedup_vs_static_generate": round(base["time_to_first_token_s"] / ttft, 2),
                        "decode_speedup_vs_static_generate": round(decode / base["tokens_per_s"], 2)}
    for row in results.get("static", {}).get("rows", []):
        summary[f"static_equal_{row['family']}_{row['dtype']}"] = row["equal"]
    prune = {row["keep"]: row for row in results.get("prune", {}).get("rows", [])}
    if prune.get(1.0, {}).get("prefill_s") and prune.get(0.1, {}).get("prefill_s"):
        summary["prefill_speedup_10pct_llava-ov"] = round(prune[1.0]["prefill_s"] / prune[0.1]["prefill_s"], 2)
    lora = results.get("lora", {})
    if "exact_match" in lora:
        summary |= {"lora_exact_match": lora["exact_match"], "lora_loss_fall": round(
            lora["first_loss"] / max(lora["last_loss"], 1e-9), 1)}
    errors = [part for part, r in results.items()
              if (isinstance(r, dict) and "error" in r) or (isinstance(r, list) and any("error" in x for x in r))]
    summary["parts_failed"] = errors
    return summary
