"""``loupe bench prune``: visual-token pruning at real model sizes (random weights), side by side.

Per family (SmolVLM-256M, Qwen2-VL-2B, LLaVA-OneVision-0.5B sizes), in its own process with the app's
defaults (device, dtype, engine), one photograph at the family's high-resolution setting
(``detail="high"``): the encoder runs once (its features are cached, as in the app), then each keep
ratio — 100% (no pruning), 25%, 10%, 5% — answers with one new token. Reported per ratio: the language
model's prefill seconds (its first forward call, timed), time to first token, visual tokens, and the
process's peak RSS. The ``summary`` holds each family's prefill speed-up against 100%.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from PIL import Image

from .bench_process import in_own_process, peak_rss_mb, random_checkpoint, samples_folder, synchronizer

FAMILIES = ("smolvlm", "qwen2vl", "llava-ov")
KEEP = (1.0, 0.25, 0.10, 0.05)
PHOTO = "rsicd_airport_17.jpg"  # in data/samples
PHOTO_SIZE = (1024, 768)
QUESTION = "What is in this picture?"


def _timed_forwards(vlm) -> list[float]:  # noqa: ANN001
    """Seconds of every language-model forward call, in order; a request's first one is its prefill."""
    from loupe.core.vlm.families import language_model

    text = language_model(vlm.model, vlm.family)
    spent: list[float] = []
    original = text.forward
    sync = synchronizer(vlm.model.device)  # on CUDA a forward call returns before its kernels ran

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        sync()
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sync()
            spent.append(time.perf_counter() - started)
    text.forward = timed
    return spent


def _family_run(family: str, model: Path, out: mp.Queue) -> None:
    try:
        import tempfile

        from loupe.core.config import Settings
        from loupe.core.vlm.base import GenerationOptions, Message
        from loupe.core.vlm.slot import model_slot

        slot = model_slot(Settings(home=Path(tempfile.mkdtemp(prefix="loupe-bench-")), database_url=None,
                                   model=str(model)))
        slot.load(model)
        vlm = slot.get()
        photo = Image.open(samples_folder() / PHOTO).convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
        messages = [Message("user", QUESTION, [photo])]
        started = time.perf_counter()
        # encodes once, reading the encoder's attention too: every ratio below reuses features and scores
        vlm.chat(messages, GenerationOptions(max_new_tokens=1, detail="high", visual_keep=KEEP[1]))
        encode_s = time.perf_counter() - started
        forwards = _timed_forwards(vlm)
        rows = []
        for keep in KEEP:
            forwards.clear()
            answer = vlm.chat(messages, GenerationOptions(max_new_tokens=1, detail="high", visual_keep=keep))
            rows.append({"keep": keep, "prefill_s": round(forwards[0], 3) if forwards else None,
                         "ttft_s": answer.run.time_to_first_token_s, "visual_tokens": answer.run.visual_tokens,
                         "prompt_tokens_after_pruning": answer.run.prompt_tokens - (
                             answer.run.extra.get("visual_tokens_unpruned", answer.run.visual_tokens)
                             - answer.run.visual_tokens),
                         "encoder_ran_again": vlm.last_encoded_units > 0})
        out.put({"family": family, "engine": vlm.engine.name, "dtype": vlm.placement.dtype_name,
                 "first_encode_and_answer_s": round(encode_s, 2), "rows": rows,
                 "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"family": family, "error": f"{type(exc).__name__}: {exc}"})


def run_prune_bench(workdir: Path, families: tuple[str, ...] = FAMILIES) -> dict:

    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for family in families:
        model = random_checkpoint(workdir / f"{family}-real-random", family)
        results[family] = in_own_process(_family_run, family, model)
    summary = {}
    for family, result in results.items():
        rows = {row["keep"]: row for row in result.get("rows", [])}
        full = rows.get(1.0, {}).get("prefill_s")
        for keep in KEEP[1:]:
            pruned = rows.get(keep, {}).get("prefill_s")
            if full and pruned:
                summary[f"prefill_speedup_{round(keep * 100)}pct_{family}"] = round(full / pruned, 2)
    return {"benchmark": "prune", "image": f"{PHOTO} at {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, detail high",
            "policy": "attention (received in the vision encoder's penultimate layer)",
            "models": "real-size architectures, random weights", "families": results, "summary": summary}
