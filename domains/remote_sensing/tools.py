"""The remote-sensing tab's zoom and band tools: any part of the scene, at any zoom, in any band preset,
read from the stored raster's pyramid (never the whole image) and sent inline, so no case image passes
through Gradio's file cache."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import gradio as gr  # at module level: Gradio reads the handlers' type hints to pass the request
from PIL import Image

from loupe.core.errors import LoupeError
from loupe.core.plugins import DomainTab, IngestedAsset
from loupe.core.pyramid.sources import RasterSource, Stretch, open_source

from .bands import TRUE_COLOUR, is_index
from .geo import lat_lon_text
from .indices import index_values, ramp_image, summary_text

VIEW_PX = 768
MAX_ZOOM = 64


def zoom_box(width: int, height: int, zoom: float, centre_x: float, centre_y: float) -> tuple[int, int, int, int]:
    """The level-0 box seen at ``zoom`` (1 = whole scene) around a centre given in percent of the scene."""
    zoom = max(1.0, zoom)
    box_w, box_h = max(1, round(width / zoom)), max(1, round(height / zoom))
    x0 = min(max(0, round(width * centre_x / 100 - box_w / 2)), width - box_w)
    y0 = min(max(0, round(height * centre_y / 100 - box_h / 2)), height - box_h)
    return x0, y0, x0 + box_w, y0 + box_h


def render_region(assets: Sequence[IngestedAsset], preset: str, zoom: float, centre_x: float, centre_y: float) -> str:
    raster = next((a for a in assets if a.meta.get("kind") == "raster"), None)
    if raster is None or raster.path is None:
        return '<p class="loupe-zoom empty">No scene in this case.</p>'
    meta = raster.meta
    box = zoom_box(meta["width"], meta["height"], zoom, centre_x, centre_y)
    scale = min(1.0, VIEW_PX / max(box[2] - box[0], box[3] - box[1]))
    size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
    if is_index(preset) and preset in meta.get("presets", {}) and meta.get("format") == "tiff":
        image, shown = _index_image(raster.path, meta["presets"][preset], preset, box, size)
    else:
        bands = meta.get("presets", {}).get(preset) or meta.get("presets", {}).get(TRUE_COLOUR)
        stretch = Stretch(*map(tuple, meta["stretch"])) if meta.get("stretch") and bands == meta["presets"].get(
            TRUE_COLOUR) else None
        source = RasterSource(raster.path, bands, stretch) if meta.get("format") == "tiff" else \
            open_source(raster.path, int(meta.get("max_pixels", 10**8)))
        try:
            image, shown = source.read(box, size), preset
        finally:
            source.close()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    label = f"{shown} · ×{zoom:g} · x {box[0]:,}–{box[2]:,}, y {box[1]:,}–{box[3]:,} px"
    if meta.get("georeferenced"):
        from . import georef

        lon, lat = georef(meta).centre(box)
        label += f" · centre {lat_lon_text(lat, lon)}"
    return (f'<figure class="loupe-zoom"><img alt="{html.escape(label)}" style="max-width:100%" '
            f'src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
            f"<figcaption>{html.escape(label)}</figcaption></figure>")


def _index_image(path: object, bands: Sequence[int], name: str, box: tuple[int, int, int, int],
                 size: tuple[int, int]) -> tuple[Image.Image, str]:
    """A band index (NDVI...) of ``box`` from the bands' values, in its colour ramp, and its statistics."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as dataset:
        values = index_values(dataset, tuple(bands), Window(box[0], box[1], box[2] - box[0], box[3] - box[1]),
                              (size[1], size[0]))
    return ramp_image(values), summary_text(name, values)


def _rendered(tab: DomainTab, request: gr.Request, case_id: int, preset: str, zoom: float, centre_x: float,
              centre_y: float) -> str:
    """``render_region`` in a worker (reading a region of a large raster is heavy work); a refusal is shown
    in its place."""
    try:
        return tab.run_on_case(request, case_id, "Showing the region", render_region,
                               (preset, zoom, centre_x, centre_y))
    except LoupeError as exc:
        return f'<p class="loupe-zoom empty">⚠️ {html.escape(str(exc))}</p>'


def add_scene_tools(tab: DomainTab) -> None:
    with gr.Accordion("Zoom and bands", open=True, elem_id="remote-zoom-tools"):
        with gr.Row():
            preset = gr.Dropdown([TRUE_COLOUR], value=TRUE_COLOUR, label="Bands", elem_id="remote-preset", scale=2)
            zoom = gr.Slider(1, MAX_ZOOM, value=1, step=1, label="Zoom", elem_id="remote-zoom", scale=2)
        with gr.Row():
            centre_x = gr.Slider(0, 100, value=50, step=0.5, label="Centre, left → right (%)", elem_id="remote-x")
            centre_y = gr.Slider(0, 100, value=50, step=0.5, label="Centre, top → bottom (%)", elem_id="remote-y")
        view = gr.HTML(elem_id="remote-zoom-view")

    def show(case_id: int | None, band_preset: str, zoom_value: float, x_value: float, y_value: float,
             request: gr.Request) -> str:
        if case_id is None:
            return ""
        return _rendered(tab, request, case_id, band_preset, zoom_value, x_value, y_value)

    def opened(case_id: int | None, request: gr.Request) -> tuple:
        if case_id is None:
            return gr.update(choices=[TRUE_COLOUR], value=TRUE_COLOUR), ""
        assets = tab.case_assets(case_id, request, with_bytes=False)
        raster = next((a for a in assets if a.meta.get("kind") == "raster"), None)
        choices = list((raster.meta.get("presets") if raster else None) or {TRUE_COLOUR: []})
        return (gr.update(choices=choices, value=choices[0]),
                _rendered(tab, request, case_id, choices[0], 1, 50, 50))

    inputs = [tab.case_id, preset, zoom, centre_x, centre_y]
    tab.case_id.change(opened, tab.case_id, [preset, view], api_name="remote_open_view")
    preset.change(show, inputs, view, api_name=False)
    for slider in (zoom, centre_x, centre_y):  # "input": a drag and a typed number (Enter) alike; the newest wins
        slider.input(show, inputs, view, api_name="remote_zoom" if slider is zoom else False,
                     trigger_mode="always_last")
