"""Any frame of a medical case rendered on the server in a named preset or a free centre/width: from the
stored de-identified DICOM, or, for a series in a PACS, from the slice fetched when it is asked for.

Runs in job workers, so it imports no Gradio (a worker would spend seconds loading it). The image goes to
the browser inline (a data URI in the HTML) so that no case image ever passes through Gradio's file cache.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from loupe.core.plugins import Budgets, IngestedAsset

from .dicom_image import frame_values, read_dataset
from .pacs import fetch_instance, series_frames, series_of
from .windowing import PRESETS, Window, display, file_window

FILE_WINDOW = "as stored"
FULL_RANGE = "full range"  # every value of the frame, lowest black to highest white
CUSTOM = "custom"


def window_choices(modality: str) -> list[str]:
    """The windows a reader of ``modality`` chooses from: Hounsfield presets for CT only (on a radiograph,
    an MR or an ultrasound they mean nothing and show a black or white image)."""
    return [FILE_WINDOW, *(PRESETS if modality.upper() == "CT" else ()), FULL_RANGE, CUSTOM]


def frames_of(assets: Sequence[IngestedAsset]) -> list[tuple[IngestedAsset, str | None, int]]:
    """Every (DICOM asset, instance UID in a PACS or None, frame) of the case, in series order."""
    series = series_of(assets)
    if series is not None:
        return [(series, uid, frame) for _, uid, frame, _ in series_frames(series)]
    return [(a, None, f) for a in assets if a.meta.get("kind") == "dicom" for f in range(int(a.meta.get("frames", 1)))]


def render_frame(assets: Sequence[IngestedAsset], number: int, preset: str, center: float, width: float) -> str:
    """HTML showing frame ``number`` (1-based) with the chosen window; a slice of a series in a PACS is
    fetched from it now."""
    frames = frames_of(assets)
    if not frames:
        return '<p class="loupe-window empty">No DICOM image in this case.</p>'
    number = min(max(int(number), 1), len(frames))
    asset, uid, frame = frames[number - 1]
    ds = read_dataset(asset.data) if uid is None else fetch_instance(str(asset.path), uid, Budgets.from_env())
    values = frame_values(ds, frame)
    if preset == FULL_RANGE:
        low, high = float(values.min()), float(values.max())
        window: Window | None = Window((low + high) / 2, max(high - low, 1.0))
    else:
        window = (PRESETS.get(preset) or (Window(center, width) if preset == CUSTOM else None)
                  if preset != FILE_WINDOW else None)
    image = display(ds, values, window)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    shown = window or file_window(ds)
    label = (f"{preset if preset != CUSTOM else 'custom window'}"
             + (f" {shown.center:g}/{shown.width:g}" if shown else "") + f" · image {number} of {len(frames)}")
    return (f'<figure class="loupe-window"><img alt="{label}" '
            'style="width:100%;max-width:512px;image-rendering:pixelated;background:#000" '
            f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
            f"<figcaption>{label}</figcaption></figure>")
