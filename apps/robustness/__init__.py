"""Hostile and everyday inputs, generated on the spot: the bomb suite's cases and ``loupe bench robustness``'s corpus.

Each :class:`Specimen` writes one file into a folder and says what Loupe must do with it: refuse it
before decoding (naming the budget) or accept it within budget. Domain modules list their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Specimen:
    name: str  # short id, also the file's stem
    domain: str  # the domain whose ingest receives it
    make: Callable[[Path], Path]  # writes the file into the folder given, returns its path
    expect: str  # "refused" | "accepted" | "either" (a real file: processed or refused, never a crash)
    budget: str | None = None  # the Budgets field a refusal names (None: refused for what it is, e.g. damaged)
    about: str = ""  # what the file is, in a few words
    # upload: the domain's ingest reads it; report: the radiology report checker reads its text;
    # question: asked about a case
    kind: str = "upload"


def specimens() -> list[Specimen]:
    """Every specimen of every domain module, in a stable order."""
    from . import documents, medical, rasters, text

    found = [s for module in (medical, documents, rasters, text) for s in module.SPECIMENS]
    names = [s.name for s in found]
    if len(names) != len(set(names)):
        raise ValueError("specimen names must be unique")
    return found
