"""Pick the pages of a long document worth reading for a question (BM25 over each page's text)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def pick_pages(page_texts: Sequence[str], question: str, budget: int) -> list[int]:
    """Indices (0-based, in document order) of at most ``budget`` pages, the best BM25 matches first
    chosen; when nothing matches, the first pages."""
    if budget <= 0 or not page_texts:
        return []
    if len(page_texts) <= budget:
        return list(range(len(page_texts)))
    from rank_bm25 import BM25Okapi

    corpus = [_tokens(text) or ["<empty>"] for text in page_texts]
    scores = BM25Okapi(corpus).get_scores(_tokens(question))
    ranked = sorted(range(len(page_texts)), key=lambda i: (-scores[i], i))
    chosen = [i for i in ranked[:budget] if scores[i] > 0] or list(range(budget))
    return sorted(chosen)
