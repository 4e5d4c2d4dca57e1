"""What several command modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loupe.core.config import Settings

if TYPE_CHECKING:
    from loupe.core.cases.store import CaseStore


def open_store(settings: Settings) -> CaseStore:
    """The case store alone: user commands need no model slot, domains or web stack."""
    from loupe.core.cases.assets import AssetStore
    from loupe.core.cases.db import open_database
    from loupe.core.cases.store import CaseStore

    settings.ensure_dirs()
    return CaseStore(open_database(settings.db_url), AssetStore(settings.assets_dir))
