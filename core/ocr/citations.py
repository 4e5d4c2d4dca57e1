"""Which page lines an answer relied on: lines whose text the answer quotes (fuzzily, since OCR and
the model may each change a character) or whose figures it repeats. The documents prompt asks the
model to quote; this finds the quotes on the page so the viewer can highlight them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from .base import Line

MIN_SCORE = 88  # partial-ratio (0-100) of a line's text inside the answer
MIN_CHARS = 4  # shorter lines ("RM", "1") match anything
_NUMBER = re.compile(r"\d[\d.,:/-]*\d|\d")


@dataclass(frozen=True)
class Citation:
    page: int
    box: tuple[float, float, float, float]  # page pixels, like the line's
    text: str
    score: float

    def as_dict(self) -> dict:
        return {"page": self.page, "box": [round(v, 1) for v in self.box], "text": self.text,
                "score": round(self.score, 1)}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", ".") for n in _NUMBER.findall(text) if len(n) >= 3}


def cite(answer: str, lines: Sequence[tuple[int, Line]], limit: int = 6) -> list[Citation]:
    """The page lines (``(page number, line)``) the answer quotes, best first, at most ``limit``."""
    folded = " ".join(answer.lower().split())
    if not folded:
        return []
    answer_numbers = _numbers(folded)
    found = []
    for page, line in lines:
        text = " ".join(line.text.lower().split())
        if len(text.replace(" ", "")) < MIN_CHARS:
            continue
        if len(text) <= len(folded):
            score = fuzz.partial_ratio(text, folded)
        else:  # a short answer inside a longer line: only if the answer says something ("12.50", not "no")
            score = fuzz.partial_ratio(folded, text) if len(folded) >= MIN_CHARS else 0.0
        if score < MIN_SCORE and not (_numbers(text) & answer_numbers):
            continue
        found.append(Citation(page, line.box, line.text, float(score)))
    found.sort(key=lambda c: (-c.score, -len(c.text)))
    return found[:limit]
