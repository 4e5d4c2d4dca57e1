"""A page's OCR result as stored in its asset's metadata, and back."""

from __future__ import annotations

from loupe.core.ocr.base import Line, Page, Table


def page_meta(page: Page) -> dict:
    return {"number": page.number, "width": page.width, "height": page.height, "rotation": page.rotation,
            "source": page.source, "engine": page.engine,
            "lines": [{"text": ln.text, "box": [round(v, 1) for v in ln.box], "confidence": round(ln.confidence, 4),
                       **({"mono": True} if ln.mono else {}), **({"size": round(ln.size, 1)} if ln.size else {})}
                      for ln in page.lines],
            **({"tables": [{"box": [round(v, 1) for v in t.box], "rows": [list(row) for row in t.rows]}
                           for t in page.tables]} if page.tables else {})}


def page_from_meta(meta: dict) -> Page:
    ocr = meta["ocr"]
    lines = [Line(ln["text"], tuple(ln["box"]), ln["confidence"], mono=bool(ln.get("mono")), size=ln.get("size", 0.0))
             for ln in ocr["lines"]]
    tables = [Table(tuple(t["box"]), tuple(tuple(row) for row in t["rows"])) for t in ocr.get("tables", ())]
    return Page(ocr["number"], ocr["width"], ocr["height"], lines, ocr["rotation"], ocr["source"], ocr["engine"],
                tables)
