"""A page's OCR result as stored in its asset's metadata, and back."""

from __future__ import annotations

from loupe.core.ocr.base import Line, Page


def page_meta(page: Page) -> dict:
    return {"number": page.number, "width": page.width, "height": page.height, "rotation": page.rotation,
            "source": page.source, "engine": page.engine,
            "lines": [{"text": ln.text, "box": [round(v, 1) for v in ln.box], "confidence": round(ln.confidence, 4),
                       **({"mono": True} if ln.mono else {})} for ln in page.lines]}


def page_from_meta(meta: dict) -> Page:
    ocr = meta["ocr"]
    lines = [Line(ln["text"], tuple(ln["box"]), ln["confidence"], mono=bool(ln.get("mono"))) for ln in ocr["lines"]]
    return Page(ocr["number"], ocr["width"], ocr["height"], lines, ocr["rotation"], ocr["source"], ocr["engine"])
