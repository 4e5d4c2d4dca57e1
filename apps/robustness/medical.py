"""Specimens for medical inputs (see loupe.apps.robustness)."""

from __future__ import annotations

from . import Specimen

SPECIMENS: list[Specimen] = []
