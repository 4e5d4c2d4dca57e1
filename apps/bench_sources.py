"""``loupe bench sources``: images opened where they live, on the path a user takes.

A synthetic 27,328 × 27,328 COG and a 4,096 × 4,096 one (written once into the work folder) are served
by Debian's nginx as static files (range requests, an access log of the bytes it sent). In its own
process each time, the app's service (SQLite, job workers, a SmolVLM-256M-size model with random weights
and the app's default engine) adds the HTTP data source, opens the scene by reference (``open_item``:
header and overviews read in a worker) and answers a question about it (``ask``: the domain's context,
question-guided focus over HTTP, the answer streamed). Measured: seconds to open and to answer, the
tiles encoded against full tiling's, the bytes nginx sent against the file's size, and resident memory.

The slide part: synthetic Aperio-style slides of 50,000² and 5,000² (write_svs) in a folder source of the
medical tab, opened where they lie (OpenSlide) and answered the same way; the open job's worker memory too.

With Orthanc installed, the PACS part (bench_pacs.py): a 500-slice CT opened from it by reference; the PACS
slide part (bench_pacs_slide.py): a DICOM whole slide answered from it against the same slide in a folder. The
upload part (bench_upload.py): a 1 GB scene uploaded through the web app, the web process's memory.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

from .bench_process import in_own_process, peak_rss_mb, random_checkpoint
from .bench_pyramid import RssWatch, _cog, _rss_mb

QUESTION = "Is there a red square building in this scene? Where?"
NEW_TOKENS = 24


def _open_and_answer(model: Path, kind: str, location: str, domain: str, item: str, out: mp.Queue) -> None:
    try:
        from loupe.apps.service import LoupeService
        from loupe.core.config import Settings
        from loupe.core.jobs import close_pools
        from loupe.core.pyramid.attention import tile_side
        from loupe.core.vlm.base import GenerationOptions

        home = Path(tempfile.mkdtemp(prefix="loupe-bench-sources-"))
        try:
            service = LoupeService.open(Settings(home=home, database_url=None, model=str(model)))
            service.jobs.run("bench", "warm up", time.perf_counter)  # a user's first job finds a worker running
            service.slot.load(model)
            vlm = service.slot.get()
            loaded_rss = round(_rss_mb(), 1)
            store = service.store
            store.add_source(None, "scenes", kind, location, domain, ("role:user",))
            user = store.add_user("analyst", "analyst-password-1", "user")
            if kind == "folder":  # the open job once more on its own, for the worker's peak memory
                from loupe.apps.service import open_item_in_worker
                from loupe.core.sources import item_location

                spec = store.readable_source(user, "scenes")[1]
                _, stats = service.jobs.run_with_stats("bench", "open", open_item_in_worker, (
                    service.settings, type(service.domain(domain)), item_location(spec, item)))
                worker_peak = {"open_worker_peak_rss_mb": round(stats.peak_rss_bytes / 2**20, 1)}
            else:
                worker_peak = {}
            with RssWatch() as watch:
                started = time.perf_counter()
                case_id = service.open_item(user, "scenes", item)
                open_s = time.perf_counter() - started
                options = GenerationOptions(NEW_TOKENS, min_new_tokens=NEW_TOKENS, detail="low")
                final = list(service.ask(user, case_id, QUESTION, options))[-1]
                answer_s = time.perf_counter() - started - open_s
            raster = service.case_assets(user, case_id)[0]
            side = tile_side(vlm)
            full_tiles = math.ceil(raster.width / side) * math.ceil(raster.height / side)
            extra = final.run.extra
            out.put({"width": raster.width, "height": raster.height, "open_s": round(open_s, 2),
                     "answer_s": round(answer_s, 2), "tiles_encoded": extra.get("focus_tiles_encoded", 0) + 1,
                     "full_tiling_tiles": full_tiles, "visual_tokens": final.run.visual_tokens,
                     "engine": vlm.engine.name, "rss_after_load_mb": loaded_rss,
                     "rss_peak_open_and_answer_mb": watch.peak, "peak_rss_mb": peak_rss_mb()} | worker_peak)
        finally:
            close_pools()  # this process's job workers: it can then exit
            shutil.rmtree(home, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run_sources_bench(workdir: Path, nginx: str, big_side: int = 27_328, small_side: int = 4_096,
                      parts: tuple[str, ...] = ("cog", "pacs", "upload"), slices: int = 500,
                      slide_sides: tuple[int, int] = (50_000, 5_000), pacs_slide_side: int = 20_000) -> dict:
    results: dict[str, dict] = {}
    summary: dict[str, object] = {}
    if "cog" in parts:
        summary |= _cog_part(workdir, nginx, big_side, small_side, results)
    if "slide" in parts:
        summary |= _slide_part(workdir, *slide_sides, results)
    if "pacs-slide" in parts:
        from .bench_pacs_slide import run_pacs_slide_bench

        results["pacs_slide"] = run_pacs_slide_bench(workdir, _slide_file(workdir, pacs_slide_side),
                                                     random_checkpoint(workdir / "smolvlm-256m-random", "smolvlm"))
        summary |= results["pacs_slide"].pop("summary", {"pacs_slide_answer_s": None})
    if "pacs" in parts:
        from .bench_pacs import run_pacs_bench
        from .orthanc_server import dicomweb_plugin, orthanc_binary

        if orthanc_binary() and dicomweb_plugin():
            results["pacs"] = run_pacs_bench(workdir, slices)
            summary["pacs_first_slice_s"] = results["pacs"].get("first_slice_s")
            summary["pacs_first_slice_cold_s"] = results["pacs"].get("first_slice_cold_s")
            summary["pacs_view_slice_median_s"] = results["pacs"].get("view_slice_median_s")
            summary["pacs_first_slice_vs_whole_series"] = results["pacs"].get("first_slice_vs_whole_series")
        else:
            results["pacs"] = {"error": "Orthanc with its DICOMweb plugin is not installed (Debian: orthanc "
                                        "orthanc-dicomweb)"}
            summary["pacs_first_slice_s"] = None
    if "upload" in parts:
        from .bench_upload import run_upload_bench

        results["upload"] = run_upload_bench(workdir)
        summary["upload_1gb_peak_rss_mb"] = results["upload"].get("web_rss_peak_above_idle_mb")
        summary["upload_1gb_worker_peak_rss_mb"] = results["upload"].get("worker_rss_peak_mb")
    return {"benchmark": "sources",
            "images": "synthetic COGs (3 bands, JPEG tiles, overviews) served by nginx; synthetic Aperio-style "
                      "slides in a server folder; a synthetic CT series in Orthanc (DICOMweb)",
            "model": "SmolVLM-256M architecture, random weights", "question": QUESTION,
            "results": results, "summary": summary}


def _slide_file(workdir: Path, side: int) -> Path:
    """The synthetic Aperio slide of ``side`` px in the work folder, written once."""
    import sys

    from loupe.core.pyramid.synthetic import write_svs

    folder = workdir / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"slide_{side}.svs"
    if not path.exists():
        started = time.perf_counter()
        write_svs(path.with_suffix(".part"), side, progress=lambda d, t: print(
            f"bench sources: writing a {side:,}² slide {d}/{t} tiles", end="\r", file=sys.stderr))
        path.with_suffix(".part").rename(path)
        print(f"\nbench sources: slide written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def _slide_part(workdir: Path, big_side: int, small_side: int, out: dict[str, dict]) -> dict:
    """Synthetic Aperio slides in a folder source of the medical tab, opened where they lie and answered."""
    model = random_checkpoint(workdir / "smolvlm-256m-random", "smolvlm")
    results = {}
    for side in (big_side, small_side):
        path = _slide_file(workdir, side)
        result = in_own_process(_open_and_answer, model, "folder", str(path.parent), "medical", path.name)
        results[side] = result | {"file_bytes": path.stat().st_size}
    out |= {f"slide_{side}": r for side, r in results.items()}
    big, small = results[big_side], results[small_side]
    if "error" in big or "error" in small:
        return {"slide_open_s": None}
    return {"slide_open_s": big["open_s"], "slide_answer_s": big["answer_s"],
            "slide_rss_above_loaded_mb": round(big["rss_peak_open_and_answer_mb"] - big["rss_after_load_mb"], 1),
            "slide_open_worker_peak_rss_mb": big["open_worker_peak_rss_mb"],
            "slide_rss_ratio_big_small": round(big["rss_peak_open_and_answer_mb"]
                                               / small["rss_peak_open_and_answer_mb"], 3)}


def _cog_part(workdir: Path, nginx: str, big_side: int, small_side: int, out: dict[str, dict]) -> dict:

    from .nginx_site import bytes_served, free_port, running_nginx, static_site

    workdir.mkdir(parents=True, exist_ok=True)
    scenes = {side: _cog(workdir, side) for side in (big_side, small_side)}
    model = random_checkpoint(workdir / "smolvlm-256m-random", "smolvlm")
    port = free_port()
    log = workdir / "nginx" / "bytes.log"
    log.unlink(missing_ok=True)
    results = {}
    with running_nginx(nginx, workdir / "nginx", static_site(port, workdir, log), port) as url:
        for side, path in scenes.items():
            before = bytes_served(log, f"/{path.name}")[1]
            result = in_own_process(_open_and_answer, model, "http", url + "/", "remote_sensing", path.name)
            requests, sent = bytes_served(log, f"/{path.name}")
            size = path.stat().st_size
            results[side] = result | {"file_bytes": size, "http_requests": requests, "http_bytes": sent - before,
                                      "http_bytes_fraction": round((sent - before) / size, 4)}
    out |= {f"cog_{side}": r for side, r in results.items()}
    big, small = results[big_side], results[small_side]
    summary: dict[str, object] = {}
    if "error" not in big:
        summary |= {"cog_http_answer_s": round(big["open_s"] + big["answer_s"], 2),
                    "cog_http_tiles_fraction": round(big["tiles_encoded"] / big["full_tiling_tiles"], 4),
                    "cog_http_bytes_fraction": big["http_bytes_fraction"]}
        if "error" not in small:
            summary["cog_rss_ratio_27k_4k"] = round(big["rss_peak_open_and_answer_mb"]
                                                    / small["rss_peak_open_and_answer_mb"], 3)
    return summary
