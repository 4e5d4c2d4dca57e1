"""Pages → a prompt (text with coarse boxes, within a budget), Markdown, or JSON with every element."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .base import Box, Page
from .layout import Block, blocks_in_reading_order

GRID = 1000  # boxes in prompts and JSON are also given on a 0-1000 grid per page (DocVLM's convention)


def grid_box(box: Box, page: Page) -> tuple[int, int, int, int]:
    sx, sy = GRID / max(page.width, 1), GRID / max(page.height, 1)
    return (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))


def _heading(block: Block, body_height: float) -> bool:
    """A short block set clearly larger than the page's body text."""
    heights = [ln.box[3] - ln.box[1] for ln in block.lines]
    return len(block.lines) <= 2 and min(heights) >= 1.4 * body_height and len(block.text) <= 120


def _body_height(page: Page) -> float:
    heights = sorted(ln.box[3] - ln.box[1] for ln in page.lines)
    return heights[len(heights) // 2] if heights else 0.0


def page_blocks(page: Page) -> list[Block]:
    body = _body_height(page)
    return [Block(b.lines, b.box, "title" if _heading(b, body) else "text")
            for b in blocks_in_reading_order(page.lines)]


def to_prompt(pages: Sequence[Page], budget_tokens: int = 1500,
              count_tokens: Callable[[str], int] = lambda text: len(text) // 4 + 1) -> tuple[str, bool]:
    """The pages' lines as ``[x0,y0,x1,y1] text`` (0-1000 grid, coarse), in reading order, until the
    budget is spent. Returns the text and whether everything fitted."""
    parts, used = [], 0
    for page in pages:
        header = f"Page {page.number}:"
        lines = [header] + [f"[{','.join(str(v // 10 * 10) for v in grid_box(ln.box, page))}] {ln.text}"
                            for ln in page.lines]
        for line in lines:
            cost = count_tokens(line)
            if used + cost > budget_tokens:
                return "\n".join(parts), False
            parts.append(line)
            used += cost
    return "\n".join(parts), True


def to_markdown(pages: Sequence[Page]) -> str:
    out = []
    for page in pages:
        if len(pages) > 1:
            out.append(f"<!-- page {page.number} -->")
        for block in page_blocks(page):
            text = " ".join(ln.text for ln in block.lines) if block.kind == "title" else block.text
            out.append(f"## {text}" if block.kind == "title" else text)
    return "\n\n".join(out) + "\n"


def to_json(pages: Sequence[Page]) -> dict:
    """Every block and line with page, box (pixels and 0-1000 grid), type and confidence."""
    return {"pages": [{
        "page": page.number, "width": page.width, "height": page.height, "rotation": page.rotation,
        "source": page.source, "engine": page.engine,
        "blocks": [{
            "type": block.kind, "box": [round(v, 1) for v in block.box], "grid_box": list(grid_box(block.box, page)),
            "lines": [{"text": ln.text, "box": [round(v, 1) for v in ln.box], "grid_box": list(grid_box(ln.box, page)),
                       "confidence": round(ln.confidence, 4),
                       "words": [{"text": w.text, "box": [round(v, 1) for v in w.box],
                                  "confidence": round(w.confidence, 4)} for w in ln.words]}
                      for ln in block.lines],
        } for block in page_blocks(page)],
    } for page in pages]}
