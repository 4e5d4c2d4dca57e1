"""``loupe bench chat``: what a user waits for, Loupe's defaults beside plain transformers, in one run.

Two configurations, each in its own process (bench_process.py; peak RSS per configuration stays honest and no cache or
thread pool flatters the other):

- ``baseline``: plain transformers as its documentation shows it: the checkpoint's processor with its
  own settings, ``AutoModelForImageTextToText`` with the default dtype (bf16 on the GPU the app would
  use), ``generate``.
- ``loupe``: the path the app takes: ``HFVLM`` with the automatic device, dtype and engine (measured on
  CPU, static cache on CUDA) and the general domain's default detail level.

On CUDA every timing waits for the GPU's queued work first (``torch.cuda.synchronize``).

For each test image: the first answer (time to first token, decode tokens/s, visual tokens) and a
follow-up question in the same conversation (Loupe continues the conversation's cached prefix; plain
``generate`` prefills everything again). Weights are random: compute does not depend on them.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from loupe.core.vlm.device import choose_placement, cpu_has_native_bf16
from loupe.core.vlm.engines import choose_engine
from loupe.core.vlm.tiny import make_tiny

from .bench_process import in_own_process, peak_rss_mb, samples_folder, synchronizer

IMAGES: dict[str, tuple[int, int]] = {"512": (512, 512), "1024x768": (1024, 768), "2048x1536": (2048, 1536)}
CONFIGS = ("baseline", "loupe")
FIRST_QUESTION = "Describe this image in detail."
FOLLOW_UP = "What is in the upper left corner?"


def _test_image(size: tuple[int, int]) -> Image.Image:
    return Image.effect_noise(size, 64).convert("RGB")


class _Clock:
    """A logits processor that only notes when each generation step's logits are ready."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.steps: list[float] = []
        self.sync = sync

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.sync()
        self.steps.append(time.perf_counter())
        return scores


class _Baseline:
    """Plain transformers: processor defaults, ``generate``; the default dtype on a CPU, bf16 on the GPU the
    app would use (the documented way to run these models there)."""

    def __init__(self, path: str, family: str, cache: str | None = None) -> None:
        from transformers import AutoModelForImageTextToText

        from loupe.core.vlm.families import FAMILIES, processor_class

        # ``cache="static"``: generate's own preallocated cache (compiled decoding on CUDA), the fair
        # baseline for Loupe's static engine on a GPU
        self.generate_kwargs = {"cache_implementation": cache} if cache else {}

        # AutoProcessor for SmolVLM; the image-only twins of the Qwen/LLaVA processors, which are the
        # same classes without the video processor that needs torchvision.
        self.processor = processor_class(FAMILIES[family]).from_pretrained(path)
        placement = choose_placement()
        on_gpu = placement.device.startswith("cuda")
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, **({"dtype": torch.bfloat16} if on_gpu else {})).to(placement.device).eval()
        self.sync = synchronizer(self.model.device)
        config = self.model.config
        self.image_token = getattr(config, "image_token_id", None) or config.image_token_index

    def forget_images(self) -> None:
        """Plain generate keeps nothing between calls."""

    def turn(self, conversation: list[dict], new_tokens: int, key: str = "") -> dict:
        from transformers import LogitsProcessorList

        clock = _Clock(self.sync)
        self.sync()
        start = time.perf_counter()
        inputs = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt")
        dtype = self.model.dtype
        inputs = {k: v.to(self.model.device, dtype=dtype if v.is_floating_point() else None)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      do_sample=False, logits_processor=LogitsProcessorList([clock]),
                                      **self.generate_kwargs)
        text = self.processor.batch_decode(out[:, inputs["input_ids"].shape[-1]:].cpu(), skip_special_tokens=True)[0]
        return _timing(start, clock.steps, int((inputs["input_ids"] == self.image_token).sum()), text)


class _Loupe:
    """The app's path: HFVLM, automatic device and dtype, the general domain's default detail."""

    def __init__(self, path: str, family: str) -> None:
        from loupe.core.vlm.hf import HFVLM
        from loupe.domains.general import GeneralDomain

        self.vlm = HFVLM.from_pretrained(path)
        self.model, self.processor = self.vlm.model, self.vlm.processor
        self.detail = GeneralDomain.default_detail

    def forget_images(self) -> None:
        self.vlm.features.clear()

    def turn(self, conversation: list[dict], new_tokens: int, key: str = "") -> dict:
        """One turn as the app asks it: the case's conversation key lets a follow-up reuse the last turn."""
        from loupe.core.vlm.base import GenerationOptions, Message

        messages = [Message(m["role"], next(c["text"] for c in m["content"] if c["type"] == "text"),
                            [c["image"] for c in m["content"] if c["type"] == "image"]) for m in conversation]
        options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens, detail=self.detail)
        chunks = list(self.vlm.stream(messages, options, conversation=key or None))
        run = chunks[-1].run
        return {"time_to_first_token_s": run.time_to_first_token_s, "tokens_per_s": run.tokens_per_s,
                "visual_tokens": run.visual_tokens, "answer": "".join(c.text for c in chunks), **run.extra}


def _timing(start: float, steps: list[float], visual_tokens: int, text: str) -> dict:
    ttft = steps[0] - start
    decode = (len(steps) - 1) / (steps[-1] - steps[0]) if len(steps) > 1 and steps[-1] > steps[0] else 0.0
    return {"time_to_first_token_s": round(ttft, 4), "tokens_per_s": round(decode, 2),
            "visual_tokens": visual_tokens, "answer": text}


def _conversation(image: Image.Image, answer: str | None = None) -> list[dict]:
    first = {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": FIRST_QUESTION}]}
    if answer is None:
        return [first]
    return [first, {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]}]


RUNNERS: dict[str, Callable[[str, str], _Baseline | _Loupe]] = {
    "baseline": _Baseline, "baseline_static": functools.partial(_Baseline, cache="static"), "loupe": _Loupe}


def _measure(config: str, path: str, family: str, images: list[str], new_tokens: int, repeats: int,
             out: mp.Queue, warm_each_size: bool = False) -> None:
    """``warm_each_size``: answer once on another image of each size before timing it, so the timings
    are the steady state of a server that has compiled that shape already (CUDA's static cache)."""
    try:
        load_start = time.perf_counter()
        runner = RUNNERS[config](path, family)
        load_s = time.perf_counter() - load_start
        runner.turn(_conversation(_test_image((64, 64))), 2)  # warm-up: first-call allocations, kernel choice
        rows = []
        for key in images:
            image = _test_image(IMAGES[key])
            if warm_each_size:
                runner.forget_images()
                runner.turn(_conversation(_test_image(IMAGES[key])), new_tokens, f"{key}-warm")
            firsts, follows = [], []
            for i in range(repeats):  # a conversation per repeat: each follow-up continues its own first turn
                runner.forget_images()  # a first answer is measured as for a new image
                firsts.append(runner.turn(_conversation(image), new_tokens, f"{key}-{i}"))
                follows.append(runner.turn(_conversation(image, firsts[-1]["answer"]), new_tokens, f"{key}-{i}"))
            first = firsts[0]
            rows.append({
                "image": key, "visual_tokens": first["visual_tokens"],
                **{k: first[k] for k in ("engine", "detail", "tiles", "patch_grids") if k in first},
                "time_to_first_token_s": _median(firsts, "time_to_first_token_s"),
                "tokens_per_s": _median(firsts, "tokens_per_s"),
                "followup_time_to_first_token_s": _median(follows, "time_to_first_token_s"),
                "followup_reused_tokens": follows[0].get("reused_tokens", 0),
            })
        from loupe.core.vlm import worker  # Loupe's model works on its torch thread; the baseline on this one

        encode = worker.call if isinstance(runner, _Loupe) else (lambda fn, *args: fn(*args))
        encoder_s, features = encode(_one_tile_encoder, runner.model, runner.processor, family, max(repeats, 3))
        out.put({"config": config, "load_s": round(load_s, 2), "images": rows,
                 "encoder_one_tile_s": encoder_s, "encoder_features": features,
                 "peak_rss_mib": peak_rss_mb()})
    except Exception as exc:  # reported in the JSON rather than killing the other configuration
        out.put({"config": config, "error": f"{type(exc).__name__}: {exc}"})


def _encoder_images() -> list[Image.Image]:
    """Real photographs and scans (data/samples) for the encoder row."""
    paths = sorted(samples_folder().glob("*.jpg"))
    return [Image.open(p).convert("RGB") for p in paths] or [_test_image((512, 512))]


def _one_tile_encoder(model, processor, family: str, repeats: int) -> tuple[float, list[list[float]]]:  # noqa: ANN001
    """The vision encoder alone on one tile per sample image (the same pixels for both configurations):
    the best of ``repeats`` on the first image, and every image's features for the cosine check."""
    from loupe.core.vlm.features import encoder_inputs
    from loupe.core.vlm.resolution import plan_resolution

    get_features = model.model.get_image_features
    dtype = next(model.parameters()).dtype
    sync = synchronizer(model.device)
    times, features = [], []
    with torch.inference_mode():
        for n, image in enumerate(_encoder_images()):
            plan = plan_resolution(family, processor.image_processor, [image], "low")
            images = [plan.images] if family == "smolvlm" else plan.images
            pixels = processor.image_processor(images=images, return_tensors="pt", **plan.processor_kwargs)
            inputs = {k: v.to(model.device, dtype=dtype if v.is_floating_point() else None)
                      for k, v in encoder_inputs(get_features, pixels).items()}
            for _ in range(repeats if n == 0 else 1):
                sync()
                start = time.perf_counter()
                pooled = get_features(**inputs, return_dict=True).pooler_output
                sync()
                times.append(time.perf_counter() - start)
            flat = torch.cat([p.flatten() for p in pooled]) if isinstance(pooled, list | tuple) else pooled.flatten()
            features.append(flat.float().tolist())
    return round(min(times[:repeats]), 4), features


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 4)


def run_chat_bench(family: str, size: str, new_tokens: int, repeats: int, images: list[str]) -> dict:
    unknown = [k for k in images if k not in IMAGES]
    if unknown:
        raise ValueError(f"unknown test image {unknown[0]!r}; choose from {', '.join(IMAGES)}")
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as tmp:
        path = make_tiny(family, Path(tmp) / family, size=size)
        results = [in_own_process(_measure, config, str(path), family, images, new_tokens, repeats)
                   for config in CONFIGS]
    auto = choose_placement()
    return {
        "benchmark": "chat", "family": family, "size": size, "new_tokens": new_tokens, "repeats": repeats,
        "weights": "random",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "native_bf16": cpu_has_native_bf16(), "auto_dtype": auto.dtype_name,
                    "auto_engine": choose_engine(None, auto.device).name},
        "results": [{k: v for k, v in r.items() if k != "encoder_features"} for r in results],
        "summary": _summary(results),
    }


def _summary(results: list[dict]) -> dict:
    """The ratios the speed targets are stated in (None where a configuration failed or was not run)."""
    by_config = {r["config"]: {row["image"]: row for row in r.get("images", [])} for r in results}
    by_encoder = {r["config"]: r for r in results}
    base, ours = by_config.get("baseline", {}), by_config.get("loupe", {})

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    def ttft(rows: dict, key: str, field: str = "time_to_first_token_s") -> float | None:
        return rows.get(key, {}).get(field)

    first = next(iter(ours), None)
    return {
        "first_answer_speedup_512": ratio(ttft(base, "512"), ttft(ours, "512")),
        "first_answer_speedup_1024x768": ratio(ttft(base, "1024x768"), ttft(ours, "1024x768")),
        "followup_ttft_fraction": ratio(ttft(ours, first, "followup_time_to_first_token_s"), ttft(ours, first))
        if first else None,
        "decode_speedup": ratio(ttft(ours, first, "tokens_per_s"), ttft(base, first, "tokens_per_s"))
        if first else None,
        "encoder_tile_speedup": ratio(*(by_encoder.get(c, {}).get("encoder_one_tile_s") for c in CONFIGS)),
        "encoder_cosine": _cosine(*(by_encoder.get(c, {}).get("encoder_features") for c in CONFIGS)),
    }


def _cosine(a: list[list[float]] | None, b: list[list[float]] | None) -> float | None:
    """The lowest feature cosine similarity over the sample images."""
    if not a or not b or len(a) != len(b):
        return None
    pairs = [(torch.tensor(x), torch.tensor(y)) for x, y in zip(a, b, strict=True)]
    return round(min(float(torch.nn.functional.cosine_similarity(x, y, dim=0)) for x, y in pairs), 5)
