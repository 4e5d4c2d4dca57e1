"""Login sessions (idle and absolute expiry) and login throttling with backoff, kept in the database.

Every ``loupe serve`` process on one database shares them: a login made through one process is valid in
the others, logging out ends it in all, and a restart signs nobody out. Times are epoch seconds
(``time.time``): they are compared between processes, whose monotonic clocks differ.

Gradio's temp uploads lie on the local disk of the process that received them, so which of them a session
waits for is kept in this process's memory, keyed like the session (the proxy keeps a session on one
process: Gradio's queue and uploads live there).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from loupe.core.cases.models import LoginFailure, WebSession

Clock = Callable[[], float]
Database = sessionmaker[DbSession]
_CHUNK = 500  # keys per IN (...) list: well under every database's limit on bound parameters
_NO_SYNC = {"synchronize_session": False}  # bulk statements: no ORM objects to keep in step


def session_key(token: str | None) -> str | None:
    """What is kept of a session cookie: its digest (a database dump does not hand out live sessions)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


@dataclass
class Session:
    username: str
    created: float
    last_seen: float
    epoch: int = 0  # the user's session epoch at login; a password, role or active change raises it
    # Gradio temp files this session uploaded (to this process), each with how many uploads await it: Gradio
    # names a copy by its content's hash, so the same bytes chosen twice (two tabs, two users) share one file.
    uploads: Counter[str] = field(default_factory=Counter)


_COLUMNS = (WebSession.key, WebSession.username, WebSession.created, WebSession.last_seen, WebSession.epoch)


class SessionStore:
    """Sessions in the ``web_sessions`` table; upload bookkeeping in this process."""

    def __init__(self, db: Database, idle_s: float, max_age_s: float, clock: Clock = time.time,
                 touch_step_s: float | None = None) -> None:
        self.db = db
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._touch_step_s = touch_step_s
        self._clock = clock
        self._uploads: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()

    @property
    def touch_step_s(self) -> float:
        """last_seen is written at most once a step, not on every request (a write each would load SQLite):
        a session may go idle up to one step early. Default: a tenth of the idle limit, at most 30 s."""
        return min(30.0, self.idle_s / 10) if self._touch_step_s is None else self._touch_step_s

    def create(self, username: str, epoch: int = 0) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self.db.begin() as s:
            s.add(WebSession(key=session_key(token), username=username, created=now, last_seen=now, epoch=epoch))
        return token

    def get(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie value (None when unknown, ended or expired)."""
        key = session_key(token)
        if key is None:
            return None
        now = self._clock()
        with self.db() as s:
            row = s.execute(select(*_COLUMNS).where(WebSession.key == key)).one_or_none()
        if row is None or self._is_expired(row.created, row.last_seen, now):
            return None
        last_seen = row.last_seen
        if touch and now - last_seen >= self.touch_step_s:
            with self.db.begin() as s:
                s.execute(update(WebSession).where(WebSession.key == key, WebSession.last_seen < now)
                          .values(last_seen=now).execution_options(**_NO_SYNC))
            last_seen = now
        return Session(row.username, row.created, last_seen, row.epoch, self._local_uploads(key))

    def end(self, token: str | None) -> Session | None:
        """End a session for every process (its row is deleted); None if there was none."""
        key = session_key(token)
        if key is None:
            return None
        with self.db.begin() as s:
            row = s.execute(delete(WebSession).where(WebSession.key == key).returning(*_COLUMNS)
                            .execution_options(**_NO_SYNC)).one_or_none()
        return None if row is None else self._ended(row)

    def expired(self) -> list[Session]:
        """Remove and return every expired session, and those another process ended that had uploads here.

        A session ended elsewhere comes back with an empty user name: only its uploads matter then.
        """
        now = self._clock()
        stale = or_(WebSession.last_seen < now - self.idle_s, WebSession.created < now - self.max_age_s)
        with self.db.begin() as s:
            rows = s.execute(delete(WebSession).where(stale).returning(*_COLUMNS)
                             .execution_options(**_NO_SYNC)).all()
        gone = [self._ended(row) for row in rows]
        with self._lock:
            local = list(self._uploads)
        live = self._existing(local)
        orphans = [self._pop_uploads(key) for key in local if key not in live]
        return gone + [Session("", 0.0, 0.0, 0, uploads) for uploads in orphans if uploads]

    def held_uploads(self) -> set[str]:
        """Temp files some session of this process still waits to use (not to be deleted under it)."""
        with self._lock:
            return {path for uploads in self._uploads.values() for path in uploads}

    def forget_uploads(self) -> None:
        """This process stops (and wipes its temp files); the sessions live on in the database."""
        with self._lock:
            self._uploads.clear()

    def count(self) -> int:
        with self.db() as s:
            return s.execute(select(func.count()).select_from(WebSession)).scalar_one()

    def _is_expired(self, created: float, last_seen: float, now: float) -> bool:
        return now - last_seen > self.idle_s or now - created > self.max_age_s

    def _local_uploads(self, key: str) -> Counter[str]:
        with self._lock:
            return self._uploads.setdefault(key, Counter())

    def _pop_uploads(self, key: str) -> Counter[str] | None:
        with self._lock:
            return self._uploads.pop(key, None)

    def _ended(self, row: Any) -> Session:
        return Session(row.username, row.created, row.last_seen, row.epoch, self._pop_uploads(row.key) or Counter())

    def _existing(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        with self.db() as s:
            for i in range(0, len(keys), _CHUNK):
                found.update(s.scalars(select(WebSession.key).where(WebSession.key.in_(keys[i:i + _CHUNK]))))
        return found


class LoginThrottle:
    """Exponential backoff after failed logins, per user name *at* an address, and per address.

    Failures count against the pair (user name, address) and against the address alone, never against a
    user name by itself: failures from one address cannot lock an account for anyone at another address.
    A pair's first ``free`` failures cost nothing, an address's first ``address_free`` (over any user
    names); each further one doubles the wait (1 s, 2 s, 4 s … up to ``max_delay_s``). While a key is
    locked, attempts are refused without checking the password. Counts live in the ``login_failures``
    table, so every process sees them; a key is stored as its sha256 (no addresses or typed names).
    """

    def __init__(self, db: Database, free: int = 5, address_free: int = 20, max_delay_s: float = 900.0,
                 forget_after_s: float = 3600.0, max_rows: int = 10_000, clock: Clock = time.time) -> None:
        self.db = db
        self.free = free
        self.address_free = address_free
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self.max_rows = max_rows
        self._clock = clock

    def wait_s(self, username: str, address: str) -> float:
        """Seconds until this user name may try again from this address (0 when allowed now)."""
        keys = [key for key, _ in self._keys(username, address)]
        with self.db() as s:
            until = s.execute(select(func.max(LoginFailure.locked_until)).where(LoginFailure.key.in_(keys))).scalar()
        return max(0.0, (until or 0.0) - self._clock())

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self.db.begin() as s:
            for key, free in self._keys(username, address):
                count = s.execute(self._count_failure(s, key, now)).scalar_one()
                if count > free:  # at most 2**62 s: a long siege must not overflow the float
                    delay = min(self.max_delay_s, 2.0 ** min(count - free - 1, 62))
                    s.execute(update(LoginFailure).where(LoginFailure.key == key)
                              .values(locked_until=now + delay).execution_options(**_NO_SYNC))
            self._cap(s, now)

    def succeeded(self, username: str, address: str) -> None:
        """Clear the pair; the address keeps its count (logging in to one's own account resets nothing else)."""
        self._delete(LoginFailure.key == self._keys(username, address)[0][0])

    def forget_old(self) -> None:
        """Drop counts with no failure for ``forget_after_s`` (housekeeping)."""
        self._delete(LoginFailure.last < self._clock() - self.forget_after_s)

    def clear(self) -> None:
        """Forget every failure (an operator unlocking everyone)."""
        self._delete(LoginFailure.key.is_not(None))

    def count(self) -> int:
        with self.db() as s:
            return s.execute(select(func.count()).select_from(LoginFailure)).scalar_one()

    def _keys(self, username: str, address: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return ((_digest(f"pair:{username.lower()}\n{address}"), self.free),
                (_digest(f"addr:{address}"), self.address_free))

    def _count_failure(self, s: DbSession, key: str, now: float) -> Any:
        """One atomic upsert (no read-then-write race between processes) returning the new count."""
        insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
        stmt = insert(LoginFailure).values(key=key, count=1, locked_until=0.0, last=now)
        forgotten = LoginFailure.last < now - self.forget_after_s  # a quiet hour: start counting afresh
        return stmt.on_conflict_do_update(
            index_elements=[LoginFailure.key],
            set_={"count": case((forgotten, 1), else_=LoginFailure.count + 1), "last": now},
        ).returning(LoginFailure.count)

    def _cap(self, s: DbSession, now: float) -> None:
        """Keep the table under ``max_rows``: old counts go first, then the oldest that lock nothing now."""
        if s.execute(select(func.count()).select_from(LoginFailure)).scalar_one() <= self.max_rows:
            return
        s.execute(delete(LoginFailure).where(LoginFailure.last < now - self.forget_after_s)
                  .execution_options(**_NO_SYNC))
        excess = s.execute(select(func.count()).select_from(LoginFailure)).scalar_one() - self.max_rows
        if excess > 0:
            oldest = (select(LoginFailure.key).where(LoginFailure.locked_until <= now)
                      .order_by(LoginFailure.last).limit(excess))
            s.execute(delete(LoginFailure).where(LoginFailure.key.in_(oldest.scalar_subquery()))
                      .execution_options(**_NO_SYNC))

    def _delete(self, where: ColumnElement[bool]) -> None:
        with self.db.begin() as s:
            s.execute(delete(LoginFailure).where(where).execution_options(**_NO_SYNC))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

