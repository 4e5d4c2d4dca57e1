"""The PACS slide part of ``loupe bench sources``: a DICOM whole slide answered from Orthanc, side by side
with the same slide answered from a server folder.

A synthetic Aperio-style slide (write_svs) is made DICOM by orthanc-wsi's dicomizer (JPEG tiles of 256 px,
levels split every 10 MB) into an Orthanc kept in the work folder, once. In its own process each, the app's
service opens the slide by reference and answers a question, once from the PACS (metadata, the view from a
small level's frames, the question's tiles fetched as frames over WADO-RS) and once from the folder source
(OpenSlide on the file, the baseline). Measured: seconds to open and to answer, the frames Orthanc served
against all the slide's frames, and resident memory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _series_item(url: str) -> str | None:
    from loupe.core.sources.dicomweb import search_series

    found = search_series(url, "SM", 10)
    return found[0][1] if found else None


def _frame_count(url: str, item: str) -> int:
    from loupe.core.budgets import Budgets
    from loupe.core.sources.dicomweb import client
    from loupe.core.sources.dicomweb_slide import slide_parts

    study, series = item.split("/")
    parts, _, _ = slide_parts(client(url).retrieve_series_metadata(study, series), Budgets())
    return sum(len(part.frames) for part in parts)


def run_pacs_slide_bench(workdir: Path, slide: Path, model: Path, baseline: bool = True) -> dict:
    """The PACS part, and (``baseline``) the same slide from a folder beside it, with their ratios."""
    from .bench_process import in_own_process
    from .bench_sources import _open_and_answer
    from .nginx_site import free_port
    from .orthanc_server import (
        dicomize,
        dicomizer_binary,
        dicomweb_plugin,
        frames_served,
        orthanc_binary,
        running_orthanc,
    )

    if not (orthanc_binary() and dicomweb_plugin() and dicomizer_binary()):
        return {"error": "Orthanc, its DICOMweb plugin and orthanc-wsi are needed (Debian: orthanc "
                         "orthanc-dicomweb orthanc-wsi)"}
    folder = workdir / f"orthanc-slide-{slide.stem}"
    result: dict = {}
    with running_orthanc(folder, free_port(), verbose=True) as url:
        item = _series_item(url)
        if item is None:
            started = time.perf_counter()
            print(f"bench sources: making {slide.name} DICOM in Orthanc", file=sys.stderr)
            dicomize(slide, url)
            result["dicomize_s"] = round(time.perf_counter() - started, 1)
            item = _series_item(url)
        frames = _frame_count(url, item)
        before = frames_served(folder)
        pacs = in_own_process(_open_and_answer, model, "dicomweb", url, "medical", item)
        served = frames_served(folder) - before
    local = in_own_process(_open_and_answer, model, "folder", str(slide.parent), "medical", slide.name) \
        if baseline else {}
    result |= {"pacs": pacs, "folder": local, "frames": frames, "frames_served": served}
    if "error" not in pacs and "error" not in local:
        result["summary"] = {
            "pacs_slide_open_s": pacs["open_s"], "pacs_slide_answer_s": pacs["answer_s"],
            "pacs_slide_frames_fraction": round(served / frames, 4),
            "pacs_slide_rss_above_loaded_mb": round(pacs["rss_peak_open_and_answer_mb"] - pacs["rss_after_load_mb"],
                                                    1)}
        if local:
            result["summary"] |= {"pacs_slide_answer_vs_folder": round(pacs["answer_s"] / local["answer_s"], 3),
                                  "pacs_slide_open_vs_folder": round(pacs["open_s"] / local["open_s"], 3)}
    return result
