"""The medical viewer: each displayed frame with what it is, and warnings about text in the pixels."""

from __future__ import annotations

import html
from collections.abc import Sequence

from loupe.core.plugins import AssetView, deep_zoom_element, frame_stack_element

STYLE = ("<style>.loupe-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}"
         ".loupe-grid figure{margin:0}.loupe-frame{position:relative;display:block;width:100%}"
         ".loupe-frame img{display:block;width:100%;height:auto;background:#000;image-rendering:pixelated}"
         ".loupe-frame svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}"
         ".loupe-frame rect{fill:rgba(255,0,0,.15);stroke:#ff1744;stroke-width:2;vector-effect:non-scaling-stroke}"
         ".loupe-warning{color:#b71c1c;font-weight:600}</style>")


TEXT_FRAMES_SHOWN = 4  # frames with text in their pixels shown outlined under the series viewer


def _caption(meta: dict) -> str:
    parts = [str(meta.get("Modality", "DICOM"))]
    if meta.get("slide"):
        return " · ".join(html.escape(p) for p in (*parts, f"whole slide {meta['width']:,} × {meta['height']:,} px"))
    if meta.get("BodyPartExamined"):
        parts.append(str(meta["BodyPartExamined"]).title())
    if meta.get("slices", 1) > 1:
        parts.append(f"slice {meta['series_position'] + 1} of {meta['slices']}")
    if meta.get("frames", 1) > 1:
        parts.append(f"frame {meta['frame'] + 1} of {meta['frames']}")
    if meta.get("window"):
        center, width = meta["window"]
        parts.append(f"window {center:g}/{width:g}")
    return " · ".join(html.escape(p) for p in parts)


def _series_warnings(views: list[AssetView]) -> str:
    """What holds for the whole study, said once above its pictures (not under each of 30 thumbnails)."""
    notes = []
    if any(v.meta.get("burned_in_annotation") for v in views):
        notes.append("The file says text is burned into these pixels.")
    lossy = next((v.meta for v in views if v.meta.get("lossy")), None)
    if lossy is not None:
        how = ", ".join(p for p in (lossy.get("lossy_method"), f"ratio {lossy['lossy_ratio']:g}:1"
                                    if lossy.get("lossy_ratio") else None) if p)
        notes.append(f"Lossy compressed{f' ({how})' if how else ''}: fine detail and measured values may differ "
                     "from the acquired image.")
    return "".join(f'<p class="loupe-warning">⚠ {html.escape(note)}</p>' for note in notes)


def _warnings(meta: dict) -> str:
    notes = []
    if meta.get("text_regions"):
        count = len(meta["text_regions"])
        notes.append(f"Text found in the pixels ({count} region{'s' if count != 1 else ''}, outlined): "
                     "check it names no one before sharing.")
    return "".join(f'<br><span class="loupe-warning">⚠ {note}</span>' for note in notes)


def report_html(report: AssetView) -> str:
    return (f'<div class="loupe-viewer loupe-sr"><p><strong>Structured report</strong> '
            f'({html.escape(report.meta.get("sop_class", "DICOM SR"))}): names, identifiers, dates and UIDs '
            'are taken out; free text may still name someone the header did not. It is in the report editor '
            f'below, ready to check.</p><pre>{html.escape(report.meta.get("text", ""))}</pre></div>')


def studies_html(assets: list[AssetView], highlights: Sequence[dict] = ()) -> str:
    views = [a for a in assets if a.meta.get("kind") == "view"]
    if not views:
        reports = [a for a in assets if a.meta.get("kind") == "sr_text"]
        return report_html(reports[0]) if reports else '<div class="loupe-viewer empty">No case open.</div>'
    figures = [STYLE]
    if views[0].case_id is not None and not views[0].meta.get("slide"):  # a slide is read in place, not exported
        figures.append(f'<p class="loupe-downloads">Download the de-identified DICOM: '
                       f'<a href="/case-export/{views[0].case_id}/zip" download>zip</a></p>')
    figures.append(_series_warnings(views))
    slide = next((a for a in assets if a.meta.get("kind") == "slide_level"), None)
    # the slide itself, to zoom to full resolution (an uploaded DICOM slide's levels, each a file, zoom as one)
    if slide is not None and slide.case_id is not None:
        figures.append(f'<p class="loupe-slide-facts">{_caption(views[0].meta)}</p>'
                       + deep_zoom_element(slide.id, boxes=[cited["box"] for cited in highlights])
                       + '<p class="hint">Scroll or pinch to zoom to full resolution; drag to pan. The tiles the '
                       "chosen answer read are outlined and numbered: click one to zoom to it.</p>")
        views = []  # the still overview says nothing the zoomable slide does not
    series = next((a for a in assets if a.meta.get("kind") == "dicom_series"), None)
    if series is not None:
        figures.append(f'<p class="loupe-pacs">This series stays in the PACS: {series.meta["slices"]} slices, '
                       "each fetched when you move to it. The download fetches and de-identifies every slice.</p>")
    if slide is None and views[0].case_id is not None:  # DICOM images: the series viewer is the main view
        figures.append(frame_stack_element(views[0].case_id))
        views = [v for v in views if v.meta.get("text_regions")]  # below: only the frames with text to check
        if views:
            more = len(views) - TEXT_FRAMES_SHOWN
            figures.append('<p class="loupe-warning">⚠ Text found in the pixels of the frames below (outlined)'
                           + (f" and of {more} more (scroll to them above)" if more > 0 else "")
                           + ": check it names no one before sharing.</p>")
            views = views[:TEXT_FRAMES_SHOWN]
    figures.append('<div class="loupe-grid">' if len(views) > 1 else "<div>")
    for view in views:
        width, height = view.width or 1, view.height or 1
        boxes = [region["box"] for region in view.meta.get("text_regions", [])]
        if view.meta.get("slide"):  # a whole slide: the tiles the chosen answer read, in level-0 pixels
            width, height = view.meta["width"], view.meta["height"]
            boxes = [cited["box"] for cited in highlights]
        rects = "".join(f'<rect x="{x0:.0f}" y="{y0:.0f}" width="{x1 - x0:.0f}" height="{y1 - y0:.0f}"></rect>'
                        for x0, y0, x1, y1 in boxes)
        figures.append(
            f'<figure class="loupe-viewer"><div class="loupe-frame">'
            f'<img src="{view.url}" alt="{_caption(view.meta)}" loading="lazy">'
            f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{rects}</svg></div>'
            f'<figcaption>{_caption(view.meta)} · <a href="{view.url}" target="_blank" rel="noopener">full size</a>'
            f'{_warnings(view.meta) if view.meta.get("slide") else ""}</figcaption></figure>')
    figures.append("</div>")
    return "".join(figures)
