"""The documents viewer: each page with the boxes of the lines read from it drawn over the image."""

from __future__ import annotations

import html
from collections.abc import Sequence

from loupe.core.ocr.export import page_blocks
from loupe.core.plugins import AssetView

from .pages import page_from_meta

# Pages as wide as the viewer; the box of every line read only when asked for (a checkbox, no script), the
# lines an answer cites always.
ON = ".loupe-show-lines:checked~figure .loupe-page "  # a rule that holds while the box is ticked
STYLE = ("<style>.loupe-page{position:relative;display:block;width:100%;margin:0 0 12px}"
         ".loupe-page img{display:block;width:100%;height:auto}"
         ".loupe-page svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}"
         ".loupe-page rect{fill:none;stroke:none;vector-effect:non-scaling-stroke}.loupe-page text{display:none}"
         ".loupe-page rect.cited{stroke:#c2185b;stroke-width:3;fill:rgba(233,30,99,.22)}"
         f"{ON}rect.layer{{fill:rgba(255,200,0,.12);stroke:#d08000;stroke-width:2}}"
         f"{ON}rect.ocr{{stroke:#1f6feb;fill:rgba(31,111,235,.08);stroke-width:2}}"
         f"{ON}rect.region{{stroke-dasharray:6 4;stroke-width:2}}"
         f"{ON}text{{display:inline;stroke:none;font:bold 1px sans-serif}}"
         f"{ON}rect.title{{stroke:#7b1fa2}}{ON}text.title{{fill:#7b1fa2}}"
         f"{ON}rect.table{{stroke:#2e7d32}}{ON}text.table{{fill:#2e7d32}}"
         f"{ON}rect.code{{stroke:#00838f}}{ON}text.code{{fill:#00838f}}"
         f"{ON}rect.header,{ON}rect.footer{{stroke:#757575}}{ON}text.header,{ON}text.footer{{fill:#757575}}"
         # a page zoomed ×3 in its own scrolling box (a checkbox, no script): small print, with its boxes
         ".loupe-page-scroll{overflow:auto;max-height:85vh}.loupe-zoom-page{margin-left:0}"
         ".loupe-zoom-page+label{font-size:.85em}.loupe-zoom-page:checked~.loupe-page-scroll .loupe-page{width:300%}"
         "</style>")
REGION_KINDS = ("title", "table", "code", "header", "footer")  # outlined and labelled; plain text blocks are not


def _rect(css: str, box: Sequence[float], text: str) -> str:
    x0, y0, x1, y1 = box
    return (f'<rect class="{css}" x="{x0:.0f}" y="{y0:.0f}" width="{x1 - x0:.0f}" height="{y1 - y0:.0f}">'
            f'<title>{html.escape(text)}</title></rect>')


def _regions(meta: dict, height: float) -> str:
    """Dashed outlines, labelled, around the page's titles, tables, headers and footers."""
    size = max(height / 70, 8)
    out = []
    for block in page_blocks(page_from_meta(meta)):
        if block.kind in REGION_KINDS:
            x0, y0, _, _ = block.box
            out.append(_rect(f"region {block.kind}", block.box, block.kind.title())
                       + f'<text class="{block.kind}" x="{x0:.0f}" y="{max(y0 - size / 4, size):.0f}" '
                         f'style="font-size:{size:.0f}px">{block.kind}</text>')
    return "".join(out)


def _anchor(asset: AssetView) -> str:
    return f"loupe-case-{asset.case_id}-page-{asset.meta.get('page', asset.id)}"


def pages_html(assets: list[AssetView], highlights: Sequence[dict] = ()) -> str:
    """Every page with its line boxes; ``highlights`` (the chosen answer's citations) drawn on top."""
    if not assets:
        return '<div class="loupe-viewer empty">No case open.</div>'
    figures = [STYLE]
    if assets[0].case_id is not None:
        case = assets[0].case_id
        figures.append(f'<p class="loupe-downloads">Download the text: <a href="/case-export/{case}/md" '
                       f'download>Markdown</a> · <a href="/case-export/{case}/json" download>JSON</a> '
                       '(page, box, type and confidence of every line)</p>')
    if len(assets) > 1:  # jump links; pages the chosen answer cites are marked
        cited_pages = {c.get("page") for c in highlights}
        links = " ".join(
            f'<a href="#{_anchor(a)}">{"<strong>" if a.meta.get("page") in cited_pages else ""}'
            f'{a.meta.get("page", "?")}{"</strong>" if a.meta.get("page") in cited_pages else ""}</a>'
            for a in assets)
        figures.append(f'<nav class="loupe-pages">Pages: {links}</nav>')
    toggle = f"loupe-lines-{assets[0].case_id or 0}"
    figures.append(f'<input type="checkbox" class="loupe-show-lines" id="{toggle}"> <label for="{toggle}">Show the '
                   "box of every line read (titles, tables, headers and footers outlined)</label>")
    for asset in assets:
        ocr = asset.meta.get("ocr", {})
        width, height = ocr.get("width") or asset.width or 1, ocr.get("height") or asset.height or 1
        css = "ocr" if ocr.get("source") == "ocr" else "layer"
        cited = [c for c in highlights if c.get("page") == asset.meta.get("page")]
        rects = "".join(_rect(css, line["box"], line["text"]) for line in ocr.get("lines", []))
        rects += _regions(asset.meta, height)
        rects += "".join(_rect("cited", c["box"], f"Cited: {c['text']}") for c in cited)
        source = {"ocr": "read by OCR", "text-layer": "the PDF's own text"}.get(ocr.get("source", ""), "")
        fields = " · ".join(f"{name.title()}: <strong>{html.escape(str(value))}</strong>"
                            for name, value in (asset.meta.get("fields") or {}).items()
                            if value and name in ("company", "date", "total"))
        count = len(ocr.get("lines", []))
        figures.append(
            f'<figure class="loupe-viewer" id="{_anchor(asset)}">'
            f'<input type="checkbox" class="loupe-zoom-page" id="{_anchor(asset)}-zoom">'
            f'<label for="{_anchor(asset)}-zoom">Zoom ×3 (scroll to move)</label>'
            f'<div class="loupe-page-scroll"><div class="loupe-page" data-page="{asset.meta.get("page", "")}">'
            f'<img src="{asset.url}" alt="Page {asset.meta.get("page", "")}" loading="lazy">'
            f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{rects}</svg></div></div>'
            f'<figcaption>Page {asset.meta.get("page", "?")} · {count} line{"s" if count != 1 else ""}'
            f'{f" · <strong>{len(cited)} cited</strong>" if cited else ""}'
            f'{" · " + source if source else ""} · <a href="{asset.url}" target="_blank" rel="noopener">'
            f'full size</a>{"<br>Found: " + fields if fields else ""}</figcaption></figure>')
    return "".join(figures)
