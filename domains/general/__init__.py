"""The ``general`` domain: ordinary photos and screenshots, shown to the model as they are."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from loupe.core.images import check_before_decoding, count_frames, frames_note, open_bounded, pixels_only_png
from loupe.core.ingest_io import read_whole
from loupe.core.plugins import Budgets, DomainTab, IngestedAsset, VisualContext

PROMPTS = ("Describe the image.", "What text is visible in the image?", "Is anything unusual or out of place?")


class GeneralDomain:
    name = "general"
    title = "General images"
    accepts = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
    system_prompt = "You are a careful visual assistant. Answer from what the image shows; say when unsure."
    default_detail = "standard"  # photos at their own resolution: no upscaling into 17 tiles
    export_formats: dict[str, str] = {}  # the image itself is the download (the viewer's full-size link)

    def ingest(self, source: Path | BinaryIO, limits: Budgets,
               progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        data = read_whole(source, limits)
        # From the header first: bytes, pixels, and a TIFF's every page and sub-image (only the first is decoded,
        # but a page over the pixel budget marks a file no viewer could open either).
        check_before_decoding(data, limits, read=1)
        img = open_bounded(data, limits.max_bytes, limits.max_pixels)
        frames = count_frames(data, img)
        # Every upload, clean-looking or not, is stored as a PNG of its (first frame's) pixels only:
        # metadata can hide names, record numbers, device serials and GPS anywhere.
        stored = pixels_only_png(img)
        width, height = Image.open(io.BytesIO(stored)).size  # upright size: the EXIF orientation is applied
        meta: dict[str, object] = {"mode": img.mode, "format": img.format, "frames": frames}
        if note := frames_note(frames):
            meta["note"] = note
        return [IngestedAsset(data=stored, media_type="image/png", width=width, height=height, meta=meta)]

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        img = Image.open(io.BytesIO(assets[0].data))
        return VisualContext(images=[img.convert("RGB")])

    def export(self, assets: Sequence[IngestedAsset], name: str, answers: Sequence[dict] = ()) -> bytes:
        raise KeyError(name)

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict) -> list[dict]:
        return []  # a plain image has no text lines to point at

    def build_tab(self, tab: DomainTab) -> None:
        # Photos need no tools of their own: the shared viewer and a few starting questions.
        tab.add_prompts(PROMPTS)
