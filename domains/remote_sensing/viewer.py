"""The scene viewer: the whole scene, with the tiles the chosen answer was read from outlined and
numbered (best first), their place and relevance listed, and the GeoJSON download."""

from __future__ import annotations

import html
from collections.abc import Sequence

from loupe.core.plugins import AssetView, map_element

STYLE = ("<style>.loupe-scene{position:relative;display:inline-block;max-width:100%}"
         ".loupe-scene img{display:block;max-width:100%;height:auto}"
         ".loupe-scene svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}"
         ".loupe-scene rect{fill:rgba(255,214,0,.12);stroke:#ffd600;stroke-width:2;vector-effect:non-scaling-stroke}"
         ".loupe-scene text{fill:#ffd600;font:bold 14px sans-serif;paint-order:stroke;stroke:#000;stroke-width:3px}"
         "</style>")


def scene_html(assets: list[AssetView], highlights: Sequence[dict] = ()) -> str:
    view = next((a for a in assets if a.meta.get("kind") == "view"), None)
    if view is None:
        return '<div class="loupe-viewer empty">No case open.</div>'
    width, height = view.meta["width"], view.meta["height"]  # level-0 pixels: the boxes' space
    marks, notes = [], []
    for n, cited in enumerate(highlights, start=1):
        x0, y0, x1, y1 = cited["box"]
        marks.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}"><title>{html.escape(cited["text"])}'
                     f'</title></rect><text x="{x0 + width * 0.004}" y="{y0 + height * 0.025}">{n}</text>')
        notes.append(f"<li>{html.escape(cited['text'])}</li>")
    raster = next((a for a in assets if a.meta.get("kind") == "raster"), None)
    parts = [STYLE, f'<p class="loupe-scene-facts">{html.escape(view.meta["description"])} · '
                    f'{width:,} × {height:,} px</p>']
    if raster is not None and raster.case_id is not None:  # the scene on a map, the answer's tiles on it
        parts += [map_element(raster.id, [cited["box"] for cited in highlights]),
                  '<p class="hint">Scroll or pinch to zoom to full resolution, drag to pan; move the pointer for '
                  "its pixel and coordinates, click for the pixel's band values.</p>"]
    else:
        parts.append(f'<div class="loupe-scene"><img src="{view.url}" alt="the whole scene">'
                     f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(marks)}</svg></div>')
    if notes:
        parts.append(f'<p>Read for this answer ({len(notes)} tile{"s" if len(notes) != 1 else ""}, best first):</p>'
                     f'<ol class="loupe-tiles">{"".join(notes)}</ol>')
    if view.case_id is not None and view.meta.get("georeferenced"):
        parts.append(f'<p class="loupe-downloads">Regions the answers looked at: <a href="/case-export/'
                     f'{view.case_id}/geojson" download>GeoJSON</a> (EPSG:4326, opens in QGIS)</p>')
    return "".join(parts)
