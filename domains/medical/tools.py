"""The medical tab's window and slice controls: any frame of the case, in a named preset or a free
centre/width, rendered in a worker by ``frames.render_frame``."""

from __future__ import annotations

import html

import gradio as gr  # at module level: Gradio reads the handlers' type hints to pass the request

from loupe.core.errors import LoupeError
from loupe.core.plugins import DomainTab

from .frames import CUSTOM, FILE_WINDOW, frames_of, render_frame, window_choices
from .windowing import PRESETS

CHOICES = window_choices("CT")
DEFAULT_WINDOW = (40.0, 400.0)  # centre, width: the sliders' start when a file gives no window


def slider_ranges(window: tuple[float, float]) -> tuple[tuple[float, float], float]:
    """(centre's min and max, width's max) that hold ``window`` with room to move: a CT in HU and a CR whose
    window is 15000/30000 alike."""
    center, width = window
    return (min(-1500.0, center - 2 * width), max(3000.0, center + 2 * width)), max(4000.0, 4 * width)


def _rendered(tab: DomainTab, request: gr.Request, case_id: int, number: int, preset: str, center: float,
              width: float) -> str:
    """``render_frame`` in a worker (decoding a frame is heavy work); a refusal is shown in its place."""
    try:
        return tab.run_on_case(request, case_id, "Showing the image", render_frame, (number, preset, center, width))
    except LoupeError as exc:
        return f'<p class="loupe-window empty">⚠️ {html.escape(str(exc))}</p>'


def add_window_controls(tab: DomainTab) -> None:
    with gr.Accordion("Window and slice", open=True, elem_id="medical-window-tools"):
        with gr.Row():
            preset = gr.Dropdown(CHOICES, value=FILE_WINDOW, label="Window", elem_id="medical-preset", scale=2)
            # Gradio wants maximum > minimum: a one-image case gets 1..2, not interactive (2 would clamp to 1)
            number = gr.Slider(1, 2, value=1, step=1, label="Slice / frame", elem_id="medical-frame", scale=3,
                               interactive=False)
        with gr.Row():
            center = gr.Slider(-1500, 3000, value=40, step=1, label="Centre", elem_id="medical-center")
            width = gr.Slider(1, 4000, value=400, step=1, label="Width", elem_id="medical-width")
        view = gr.HTML(elem_id="medical-window-view")

    def show(case_id: int | None, preset_name: str, frame_number: float, center_value: float, width_value: float,
             request: gr.Request) -> str:
        if case_id is None:
            return ""
        return _rendered(tab, request, case_id, int(frame_number), preset_name, center_value, width_value)

    def opened(case_id: int | None, request: gr.Request) -> tuple:
        """The case's first image in its own window; the sliders set to that window (a CR's 15000/30000 as a
        CT's 40/400) and the presets its modality has."""
        if case_id is None:
            return (gr.update(maximum=2, value=1, interactive=False), "", gr.update(choices=CHOICES, value=FILE_WINDOW),
                    gr.update(), gr.update())
        assets = tab.case_assets(case_id, request, with_bytes=False)
        count = len(frames_of(assets))
        meta = next((a.meta for a in assets if a.meta.get("kind") == "view"), {})
        own = tuple(meta["window"]) if meta.get("window") else DEFAULT_WINDOW
        (low, high), widest = slider_ranges(own)
        return (gr.update(maximum=max(count, 2), value=1, interactive=count > 1),
                _rendered(tab, request, case_id, 1, FILE_WINDOW, *own),
                gr.update(choices=window_choices(str(meta.get("Modality") or "")), value=FILE_WINDOW),
                gr.update(minimum=low, maximum=high, value=own[0]), gr.update(maximum=widest, value=own[1]))

    def preset_chosen(chosen: str) -> tuple:
        window = PRESETS.get(chosen)
        return (gr.update(value=window.center), gr.update(value=window.width)) if window else (gr.update(), gr.update())

    def custom(case_id: int | None, frame_number: float, center_value: float, width_value: float,
               request: gr.Request) -> tuple:
        """A dragged or typed centre or width: a custom window, rendered at once."""
        return CUSTOM, show(case_id, CUSTOM, frame_number, center_value, width_value, request)

    inputs = [tab.case_id, preset, number, center, width]
    tab.case_id.change(opened, tab.case_id, [number, view, preset, center, width], api_name="medical_open_view")
    # "input": the reader's own choice only (not the preset set on opening or by a slider)
    preset.input(preset_chosen, preset, [center, width], api_name=False).then(show, inputs, view, api_name=False)
    # "input": a drag and a typed number (Enter) alike; only the newest position is rendered while one is running
    number.input(show, inputs, view, api_name="medical_window", trigger_mode="always_last")
    for slider in (center, width):  # moving a slider means a custom window
        slider.input(custom, [tab.case_id, number, center, width], [preset, view], api_name=False,
                     trigger_mode="always_last")
