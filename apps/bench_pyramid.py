"""``loupe bench pyramid``: answering about a giant image, three ways, side by side in one run.

On a synthetic 27,328 × 27,328 COG (written once into the work folder, objects planted at known
places) with a SmolVLM-256M-size model (random weights, the app's default engine), each measured in its
own process so peak RSS is its own:

- ``full``: tiling the whole image at full resolution. Encoding every one of its tiles would take
  hours on a CPU, so the encoder is timed on a sample of tiles and the total EXTRAPOLATED; the same is
  done on a 2,048-px image and compared with encoding all of its tiles, to show the extrapolation is
  linear.
- ``thumbnail``: the whole image shrunk to one tile.
- ``focus``: Loupe's path (the remote-sensing domain's context, question-guided coarse-to-fine focus
  with the model's own attention, the answer streamed), then a second question on the same image.

Focus also runs on a 4,096-px COG to show memory does not grow with the image (resident memory is
sampled during each question; the process peak includes loading the model), once more on the 27k
image with every round descending until the tile budget is spent (random weights rarely concentrate
their attention, so this is the time a real model's deepest search costs), and with a planted scorer
(no model) to check it finds a planted tile in 50 random placements, a third of them across tile
borders.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import random
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .bench_process import in_own_process, peak_rss_mb, random_checkpoint

QUESTION = "Is there a red square building in this scene? Where?"
SECOND_QUESTION = "Describe the land cover around it."
SAMPLE_TILES = 8
REPEATS = 3
NEW_TOKENS = 24


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


class RssWatch:
    """The highest resident memory seen while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> RssWatch:
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = round(max(self.peak, _rss_mb()), 1)


def _load(model: Path):  # noqa: ANN202 - an HFVLM
    """The model as the app loads it (its slot, its defaults), with a fresh home: no features on disk."""
    import tempfile

    from loupe.core.config import Settings
    from loupe.core.vlm.slot import model_slot

    slot = model_slot(Settings(home=Path(tempfile.mkdtemp(prefix="loupe-bench-")), database_url=None,
                               model=str(model)))
    slot.load(model)
    return slot.get()


def _timed_encoder(vlm) -> list[float]:  # noqa: ANN001
    """Wrap the vision encoder call so its seconds are summed into the returned one-item list."""
    spent = [0.0]
    original = vlm.model.model.get_image_features

    @functools.wraps(original)  # keeps the signature: the caller picks its inputs by it
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started
    vlm.model.model.get_image_features = timed
    return spent


def _answer(vlm, images: list, text: str, domain) -> tuple[str, Any]:  # noqa: ANN001
    from loupe.apps.service import conversation_messages
    from loupe.core.plugins import VisualContext
    from loupe.core.vlm.base import GenerationOptions

    context = VisualContext(images=images, extra_text=text)
    messages = conversation_messages(domain.system_prompt, context, [("user", QUESTION)], False)
    options = GenerationOptions(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, detail=domain.default_detail)
    answer = vlm.chat(messages, options)
    return answer.text, answer.run


def _focus_run(model: Path, cog: Path, concentrated: float | None, out: mp.Queue) -> None:
    try:
        from loupe.core.plugins import IngestedAsset
        from loupe.core.pyramid.answer import focused_images
        from loupe.domains.remote_sensing import RemoteSensingDomain
        from loupe.domains.remote_sensing.ingest import describe_raster

        vlm = _load(model)
        loaded_rss = round(_rss_mb(), 1)
        encoder = _timed_encoder(vlm)
        domain = RemoteSensingDomain()
        meta, _ = describe_raster(cog, 10**8)
        asset = IngestedAsset(b"", "image/tiff", meta["width"], meta["height"], meta, cog)
        results: list[dict] = []
        seen: set[tuple] = set()  # tiles scored by an earlier question
        for question in (QUESTION, SECOND_QUESTION):
            encoder[0] = 0.0
            with RssWatch() as watch:
                started = time.perf_counter()
                context = domain.context([asset], question)
                if concentrated is not None:  # the budget-bound variant: every round descends
                    context.pyramid.config = replace(context.pyramid.config, concentrated=concentrated)
                images, placed, record = focused_images(vlm, context.pyramid, question)
                focus_s = time.perf_counter() - started
                _, run = _answer(vlm, images, f"{context.extra_text}\n{placed}", domain)
                total_s = time.perf_counter() - started
            scored = {tuple(t) for t in record["focus"]["scored"]}
            new = len(scored - seen)
            seen |= scored
            encoded = record["focus_tiles_encoded"] + vlm.last_encoded_units
            results.append({"tiles_encoded": encoded, "tiles_new_to_this_process": new + (not results),  # + thumbnail
                            "tiles_encoded_again": encoded - new - (not results),
                            "tiles_scored": record["focus"]["tiles_scored"], "tiles_shown": len(images),
                            "levels_descended": len(record["focus"]["steps"]) - 1,
                            "visual_tokens": run.visual_tokens, "vision_encoder_s": round(encoder[0], 2),
                            "focus_s": round(focus_s, 2), "total_s": round(total_s, 2),
                            "rss_peak_during_question_mb": watch.peak, "chosen": record["focus"]["tiles"]})
        out.put({"first": results[0], "second": results[1], "rss_after_load_mb": loaded_rss,
                 "peak_rss_mb": peak_rss_mb(), "engine": vlm.engine.name})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _thumbnail_run(model: Path, cog: Path, out: mp.Queue) -> None:
    try:
        from loupe.core.pyramid.attention import tile_side
        from loupe.core.pyramid.pyramid import Pyramid
        from loupe.core.pyramid.sources import open_source
        from loupe.domains.remote_sensing import RemoteSensingDomain

        vlm = _load(model)
        encoder = _timed_encoder(vlm)
        started = time.perf_counter()
        thumbnail = Pyramid(open_source(cog, 10**8), tile=tile_side(vlm)).thumbnail()
        _, run = _answer(vlm, [thumbnail], "Image 1 shows the whole scene, reduced.", RemoteSensingDomain())
        out.put({"tiles_encoded": 1, "visual_tokens": run.visual_tokens, "vision_encoder_s": round(encoder[0], 2),
                 "total_s": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _full_run(model: Path, cog: Path, small: Path, out: mp.Queue) -> None:
    """Per-tile encoder seconds on a sample of level-0 tiles, extrapolated; the small image fully."""
    try:
        from loupe.core.pyramid.attention import tile_side
        from loupe.core.pyramid.pyramid import Pyramid
        from loupe.core.pyramid.sources import open_source
        from loupe.core.vlm.base import Message

        vlm = _load(model)
        side = tile_side(vlm)

        def encode(images: list) -> float:
            """Seconds to encode ``images``, in batches of the sample's size (as a full tiling would run)."""
            spent = 0.0
            for start in range(0, len(images), SAMPLE_TILES):
                inputs = vlm.prepare([Message("user", "x", images[start:start + SAMPLE_TILES])], "low")
                started = time.perf_counter()
                vlm._encode_once(inputs)  # noqa: SLF001 - the encoder path answers take
                spent += time.perf_counter() - started
            return spent

        big = Pyramid(open_source(cog, 10**8), tile=side)
        tiles = big.tiles(0)
        rng = random.Random(0)
        sample = [big.read(t) for t in rng.sample(tiles, SAMPLE_TILES)]
        small_pyramid = Pyramid(open_source(small, 10**8), tile=side)
        small_tiles = [small_pyramid.read(t) for t in small_pyramid.tiles(0)]
        small_sample = rng.sample(small_tiles, SAMPLE_TILES)
        encode(sample[:1])  # warm-up
        runs: dict[str, list[float]] = {"sample": [], "small_sample": [], "small_full": []}
        for _ in range(REPEATS):  # interleaved, medians: this machine's speed drifts by 10-20 %
            for name, images in (("sample", sample), ("small_sample", small_sample), ("small_full", small_tiles)):
                vlm.forget()
                runs[name].append(encode(images))
        per_tile = statistics.median(runs["sample"]) / SAMPLE_TILES
        small_per_tile = statistics.median(runs["small_sample"]) / SAMPLE_TILES
        small_full = statistics.median(runs["small_full"])
        tokens_per_tile = int((vlm.prepare([Message("user", "x", sample[:1])], "low")["input_ids"]
                               == vlm.image_token_id).sum())
        out.put({"tiles": len(tiles), "tiles_sampled": SAMPLE_TILES, "per_tile_encoder_s": round(per_tile, 3),
                 "visual_tokens": tokens_per_tile * len(tiles),
                 "vision_encoder_s_extrapolated": round(per_tile * len(tiles), 1),
                 "linearity_check": {"image_side": small_pyramid.source.width, "tiles": len(small_tiles),
                                     "predicted_s": round(small_per_tile * len(small_tiles), 2),
                                     "measured_s": round(small_full, 2),
                                     "measured_over_predicted": round(small_full / (small_per_tile * len(small_tiles)),
                                                                      3), "repeats": REPEATS},
                 "peak_rss_mb": peak_rss_mb()})
    except Exception as exc:  # noqa: BLE001
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _planted_hit_rate(cog: Path, tile: int, placements: int = 50) -> dict:
    from loupe.core.pyramid.focus import FocusConfig, PlantedScorer, focus
    from loupe.core.pyramid.pyramid import Pyramid
    from loupe.core.pyramid.sources import open_source

    pyramid = Pyramid(open_source(cog, 10**8), tile=tile)
    side, size, rng = pyramid.source.width, 64, random.Random(50)
    hits, scored = 0, []
    for n in range(placements):
        if n % 3 == 0:  # across a vertical tile border
            x, y = rng.randrange(1, side // tile) * tile - size // 2, rng.randrange(0, side - size)
        elif n % 3 == 1:
            x, y = rng.randrange(0, side - size), rng.randrange(1, side // tile) * tile - size // 2
        else:
            x, y = rng.randrange(0, side - size), rng.randrange(0, side - size)
        box = (x, y, x + size, y + size)
        selection = focus(pyramid, "planted", PlantedScorer([box]), FocusConfig())
        scored.append(selection.tiles_scored)
        hits += any(c.tile.level == 0 and c.box[0] < box[2] and box[0] < c.box[2] and c.box[1] < box[3]
                    and box[1] < c.box[3] for c in selection.tiles)
    return {"placements": placements, "hits": hits, "rate": hits / placements, "max_tiles_scored": max(scored)}


def _cog(folder: Path, side: int) -> Path:
    from loupe.core.pyramid.synthetic import random_objects, write_cog

    path = folder / f"scene_{side}.tif"
    if not path.exists():
        write_cog(path, side, random_objects(side, max(2, side // 2048), 160, seed=7), seed=7)
    return path


def run_pyramid_bench(workdir: Path) -> dict:

    workdir.mkdir(parents=True, exist_ok=True)
    big, medium, small = _cog(workdir, 27_328), _cog(workdir, 4_096), _cog(workdir, 2_048)
    model = random_checkpoint(workdir / "smolvlm-256m-random", "smolvlm")
    full = in_own_process(_full_run, model, big, small)
    thumbnail = in_own_process(_thumbnail_run, model, big)
    focus_27k = in_own_process(_focus_run, model, big, None)
    focus_4k = in_own_process(_focus_run, model, medium, None)
    budget_bound = in_own_process(_focus_run, model, big, 0.0)
    planted = _planted_hit_rate(big, 512)
    summary = {}
    if not any("error" in r for r in (full, focus_27k, focus_4k)):
        summary = {"tiles_fraction_vs_full": round(focus_27k["first"]["tiles_encoded"] / full["tiles"], 4),
                   "answer_s": focus_27k["first"]["total_s"],
                   "answer_s_budget_spent": budget_bound.get("first", {}).get("total_s"),
                   "peak_rss_mb_4k": focus_4k["peak_rss_mb"], "peak_rss_mb_27k": focus_27k["peak_rss_mb"],
                   "question_rss_mb_4k": focus_4k["first"]["rss_peak_during_question_mb"],
                   "question_rss_mb_27k": focus_27k["first"]["rss_peak_during_question_mb"],
                   "planted_hit_rate": planted["rate"],
                   "second_question_tiles_encoded": focus_27k["second"]["tiles_encoded"],
                   "second_question_tiles_encoded_again": focus_27k["second"]["tiles_encoded_again"]}
    return {"benchmark": "pyramid", "image": "synthetic COG 27,328 x 27,328, 3 bands, JPEG tiles, overviews",
            "model": "SmolVLM-256M architecture, random weights", "question": QUESTION,
            "full_tiling": full, "thumbnail_only": thumbnail, "focus": focus_27k, "focus_4k": focus_4k,
            "focus_budget_spent": budget_bound,
            "planted": planted, "summary": summary}
