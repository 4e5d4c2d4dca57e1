"""Training data from what reviewers accepted or corrected in the case database.

For every answer of a domain whose latest review is ``accepted`` or ``edited``: the question before it,
the case's images (the stored, already de-identified views, at most ``MAX_IMAGES``), and the answer as
accepted or as corrected. Images are written beside the JSONL named by their content hash, so no case
title, file name or patient detail reaches the export; the export itself is an audit event.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..cases.models import Asset, Case, ChatMessage
from ..cases.store import CaseStore
from .data import PLACEHOLDER

MAX_IMAGES = 4
KEPT = ("accepted", "edited")


def _images(case: Case) -> list[Asset]:
    """The pictures a reviewer saw: display views where the domain makes them, else stored images."""
    pictures = [a for a in case.assets if a.media_type.startswith("image/") and not (a.meta or {}).get("lazy")]
    views = [a for a in pictures if (a.meta or {}).get("kind") == "view"]
    return (views or pictures)[:MAX_IMAGES]


def export_reviews(store: CaseStore, domain: str, out: Path) -> dict:
    folder = out.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    lines, cases = [], set()
    with store.sessions() as session:
        found = session.scalars(select(Case).where(Case.domain == domain, Case.archived_at.is_(None))
                                .options(selectinload(Case.assets), selectinload(Case.messages)
                                         .selectinload(ChatMessage.reviews))).all()
        for case in found:
            question = None
            for message in case.messages:
                if message.role == "user":
                    question = message.content
                    continue
                if message.role != "assistant" or question is None or not message.reviews:
                    continue
                latest = max(message.reviews, key=lambda r: r.id)
                if latest.verdict not in KEPT:
                    continue
                answer = latest.edited_text if latest.verdict == "edited" else message.content
                names = []
                for asset in _images(case):
                    name = f"{asset.sha256}{Path(asset.media_type.replace('image/', '.')).suffix or '.png'}"
                    target = folder / name
                    if not target.exists():
                        target.write_bytes(store.assets.read(asset.sha256))
                    names.append(f"images/{name}")
                lines.append(json.dumps({"images": names, "messages": [
                    {"role": "user", "content": PLACEHOLDER * len(names) + question},
                    {"role": "assistant", "content": answer}]}, ensure_ascii=False))
                cases.add(case.id)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    summary = {"domain": domain, "examples": len(lines), "cases": len(cases)}
    store.audit(None, "reviews.export", detail=summary)
    return summary
