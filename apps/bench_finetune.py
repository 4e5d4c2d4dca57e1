"""``loupe bench finetune``: a LoRA step against a full fine-tuning step, side by side.

SmolVLM-256M size with random weights, fp32 on the CPU, the same examples (a 512-px image and a short
answer, as ``loupe finetune`` encodes them), each configuration in its own process so peak RSS is its
own: ``lora`` is what ``loupe finetune`` trains (LoRA rank 8 on the language model's projections);
``full`` makes every parameter trainable, with the same AdamW. A warm-up step, then the mean of the
timed steps. Also: trainable parameters and the adapter's size on disk.

``serving`` is the app's side: the saved adapter loaded beside the base on the default engine for
this machine, the time of a switch between base and adapter, and the same answer (a 512-px image, 32
new tokens, image features cached) with and without the adapter, alternated, medians of 3.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from .bench_process import in_own_process, peak_rss_mb, random_checkpoint

STEPS = 4


def _examples(folder: Path) -> list:
    import json

    from PIL import Image

    from loupe.core.finetune.data import read_examples

    lines = []
    for i in range(STEPS + 1):
        Image.effect_noise((512, 512), 30 + 10 * i).convert("RGB").save(folder / f"img{i}.png")
        lines.append(json.dumps({"images": [f"img{i}.png"], "messages": [
            {"role": "user", "content": "<image>What is in this picture?"},
            {"role": "assistant", "content": "Grey noise with no object in it."}]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return read_examples(folder / "train.jsonl")


def _run(model: Path, mode: str, out: mp.Queue) -> None:
    try:
        import torch

        from loupe.core.finetune.train import ADAPTER, TrainConfig, add_lora, encode_example
        from loupe.core.vlm.hf import HFVLM

        vlm = HFVLM.from_pretrained(model, device="cpu", dtype="fp32", engine="plain")
        total = sum(p.numel() for p in vlm.model.parameters())
        with tempfile.TemporaryDirectory() as folder:
            # full fine-tuning trains the vision tower too: its images go through it at every step
            items = [encode_example(vlm, e, "low", vision_features=mode == "lora") for e in _examples(Path(folder))]
            if mode == "lora":
                trainable = add_lora(vlm, TrainConfig())
            else:
                for param in vlm.model.parameters():
                    param.requires_grad = True
                trainable = total
            optimizer = torch.optim.AdamW([p for p in vlm.model.parameters() if p.requires_grad], lr=1e-4)
            vlm.model.train()
            seconds = []
            for n, item in enumerate(items):
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                vlm.model(**item.inputs, labels=item.labels).loss.backward()
                optimizer.step()
                if n:  # the first step is the warm-up
                    seconds.append(time.perf_counter() - started)
            adapter_bytes = None
            if mode == "lora":
                vlm.model.save_pretrained(model.parent / "adapter-r8", selected_adapters=[ADAPTER])
                adapter_bytes = sum(p.stat().st_size for p in (model.parent / "adapter-r8").rglob("*.safetensors"))
        out.put({"mode": mode, "step_s": round(statistics.mean(seconds), 3), "steps_timed": len(seconds),
                 "trainable_parameters": trainable, "base_parameters": total if mode == "full" else total - trainable,
                 "adapter_bytes": adapter_bytes,
                 "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"mode": mode, "error": f"{type(exc).__name__}: {exc}"})


def _serve(model: Path, adapter: Path, out: mp.Queue) -> None:
    try:
        from PIL import Image

        from loupe.core.vlm import worker
        from loupe.core.vlm.base import GenerationOptions, Message
        from loupe.core.vlm.hf import HFVLM

        vlm = HFVLM.from_pretrained(model)  # the app's engine on this machine
        started = time.perf_counter()
        vlm.load_adapter(adapter, "bench")
        load_s = time.perf_counter() - started

        def switches() -> list[float]:
            times = []
            for name in ["bench", None] * 10:
                begun = time.perf_counter()
                vlm.adapters.use(name)
                times.append(time.perf_counter() - begun)
            return times

        switch_s = worker.call(switches)
        messages = [Message("user", "Describe this picture.", [Image.effect_noise((512, 512), 40).convert("RGB")])]
        runs: dict[str, list] = {"base": [], "adapter": []}
        for round_ in range(4):  # the first round warms the caches and is not kept
            for label, name in (("base", None), ("adapter", "bench")):
                run = vlm.chat(messages, GenerationOptions(max_new_tokens=32, min_new_tokens=32, detail="low",
                                                           adapter=name)).run
                if round_:
                    runs[label].append(run)
        answers = {label: {"total_s": statistics.median(r.total_time_s for r in rs),
                           "time_to_first_token_s": statistics.median(r.time_to_first_token_s for r in rs),
                           "tokens_per_s": statistics.median(r.tokens_per_s for r in rs)} for label, rs in runs.items()}
        out.put({"engine": vlm.engine.name, "adapter_load_s": round(load_s, 3),
                 "switch_ms_median": round(statistics.median(switch_s) * 1000, 3),
                 "answers": answers, "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"mode": "serving", "error": f"{type(exc).__name__}: {exc}"})


def run_finetune_bench(workdir: Path) -> dict:

    model = random_checkpoint(workdir / "smolvlm-256m-random", "smolvlm")
    results = {}
    for mode in ("full", "lora"):
        results[mode] = in_own_process(_run, model, mode)
    summary = {}
    full, lora = results["full"], results["lora"]
    if "error" not in full and "error" not in lora:
        summary = {"adapter_param_fraction": round(lora["trainable_parameters"] / lora["base_parameters"], 5),
                   "lora_step_speedup": round(full["step_s"] / lora["step_s"], 2),
                   "lora_peak_memory_reduction": round(1 - lora["peak_rss_mb"] / full["peak_rss_mb"], 3)}
        results["serving"] = serving = in_own_process(_serve, model, workdir / "adapter-r8")
        if "error" not in serving:
            base, tuned = serving["answers"]["base"], serving["answers"]["adapter"]
            summary |= {"adapter_answer_time_ratio": round(tuned["total_s"] / base["total_s"], 3),
                        "adapter_switch_ms": serving["switch_ms_median"]}
    return {"benchmark": "finetune", "model": "SmolVLM-256M architecture, random weights, fp32, CPU",
            "example": "one 512-px image, a one-sentence answer, detail low", "results": results,
            "summary": summary}
