"""The data sources an admin configured, who may read each, and every read of one, audited.

A user sees only the sources their role or name is a reader of (admins see all); any other name is
answered as missing, exactly like a source that does not exist, and the attempt is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import AccessDenied, LoupeError
from ..sources import SourceSpec, check_readers, check_spec, item_location
from .models import ROLES, Asset, AuditEvent, DataSource, User, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker


def _spec(row: DataSource) -> SourceSpec:
    return SourceSpec(row.name, row.kind, row.location, row.domain, tuple(row.readers or ()))


def may_read(user: User, readers: tuple[str, ...] | list[str]) -> bool:
    return user.is_admin or f"role:{user.role}" in readers or f"user:{user.username}" in readers


class SourceRegistry:
    """Mixed into CaseStore: the ``data_sources`` table and the reads of items by reference."""

    sessions: sessionmaker[Session]

    def add_source(self, actor: User | None, name: str, kind: str, location: str, domain: str,
                   readers: tuple[str, ...]) -> SourceSpec:
        """Admins only (``actor`` None: the command line). ``readers``: "role:NAME" or "user:NAME"."""
        if actor is not None:
            self.require_admin(actor, "source.add")
        location = check_spec(name, kind, location)
        readers = check_readers(readers, ROLES)
        with self.sessions.begin() as s:
            if s.scalar(select(DataSource.id).where(DataSource.name == name)) is not None:
                raise LoupeError(f"A data source named {name!r} exists (or was removed while cases still read from "
                                 "it): choose another name.")
            row = DataSource(name=name, kind=kind, location=location, domain=domain, readers=list(readers))
            s.add(row)
            s.add(self._source_event(actor, "source.add", name, kind=kind, domain=domain))
            return _spec(row)

    def remove_source(self, actor: User | None, name: str) -> int:
        """Remove a source; returns how many cases still name it (they then say it was removed)."""
        if actor is not None:
            self.require_admin(actor, "source.remove")
        with self.sessions.begin() as s:
            row = s.scalar(select(DataSource).where(DataSource.name == name, DataSource.removed_at.is_(None)))
            if row is None:
                raise LoupeError(f"no data source named {name!r}")
            cases = s.scalar(select(func.count(func.distinct(Asset.case_id))).where(Asset.source_id == row.id)) or 0
            if cases:
                row.removed_at = utcnow()
            else:
                s.delete(row)
            s.add(self._source_event(actor, "source.remove", name, cases=cases))
            return cases

    def sources(self, user: User | None = None, domain: str | None = None) -> list[SourceSpec]:
        """The sources ``user`` may read (None: every source, for the command line), by name."""
        with self.sessions() as s:
            query = select(DataSource).where(DataSource.removed_at.is_(None)).order_by(DataSource.name)
            if domain:
                query = query.where(DataSource.domain == domain)
            return [_spec(r) for r in s.scalars(query) if user is None or may_read(user, r.readers or [])]

    def readable_source(self, user: User, name: str) -> tuple[int, SourceSpec]:
        """The source ``name`` if ``user`` may read it; otherwise AccessDenied as if it did not exist."""
        with self.sessions() as s:
            row = s.scalar(select(DataSource).where(DataSource.name == name, DataSource.removed_at.is_(None)))
            found = None if row is None or not may_read(user, row.readers or []) else (row.id, _spec(row))
        if found is None:
            self.audit(user, "source.denied", detail={"asked_for": name[:64]})
            raise AccessDenied("Data source not found.")
        return found

    def asset_location(self, user: User, asset: Asset, audit: bool = True) -> str:
        """Where an asset read by reference is, for a user who may see its case: the source must still exist
        and ``user`` must be one of its readers. Audited as a read of the source (``audit``; a refusal always)."""
        with self.sessions() as s:
            row = s.get(DataSource, asset.source_id)
        if row is None or row.removed_at is not None:
            raise AccessDenied("This case reads its image from a data source that was removed.")
        if not may_read(user, row.readers or []):
            self.audit(user, "source.denied", case_id=asset.case_id, detail={"source": row.name, "asset_id": asset.id})
            raise AccessDenied(f"This case reads its image from the data source {row.name!r}, which your account "
                               "may not read. Ask an administrator for access.")
        if audit:
            self.audit(user, "source.read", case_id=asset.case_id, detail={"source": row.name, "asset_id": asset.id})
        return item_location(_spec(row), asset.item or "")

    def audit_tiles(self, user: User, asset: Asset, tiles: list[list[int]]) -> None:
        """The tiles of an image read by reference that one answer read (its overview aside), as
        ``[level, col, row]``: audited against the asset's source, after ``asset_location`` checked access."""
        with self.sessions() as s:
            row = s.get(DataSource, asset.source_id)
        self.audit(user, "source.tiles", case_id=asset.case_id,
                   detail={"source": row.name if row is not None else None, "asset_id": asset.id,
                           "tiles": len(tiles), "read": tiles})

    @staticmethod
    def _source_event(actor: User | None, action: str, name: str, **extra: object) -> AuditEvent:
        detail = {"source": name, **extra} | ({} if actor is not None else {"via": "cli"})
        return AuditEvent(user_id=actor.id if actor is not None else None, action=action, detail=detail)

    # provided by CaseStore
    def audit(self, user: User | None, action: str, case_id: int | None = None,  # pragma: no cover
              detail: dict | None = None) -> None: ...

    def require_admin(self, user: User, action: str) -> None: ...  # pragma: no cover
