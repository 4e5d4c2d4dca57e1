"""Server-side login sessions (idle and absolute expiry) and login throttling with backoff."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


def session_key(token: str | None) -> str | None:
    """What is kept of a session cookie: its digest (a memory dump does not hand out live sessions)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


@dataclass
class Session:
    username: str
    created: float
    last_seen: float
    epoch: int = 0  # the user's session epoch at login; a password, role or active change raises it
    # Gradio temp files this session uploaded, each with how many uploads await it: Gradio names a copy by its
    # content's hash, so the same bytes chosen twice (two tabs, two users) share one file.
    uploads: Counter[str] = field(default_factory=Counter)


class SessionStore:
    def __init__(self, idle_s: float, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, username: str, epoch: int = 0) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._sessions[session_key(token)] = Session(username, now, now, epoch)
        return token

    def get(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie value; expired ones are dropped (their uploads go with ``expired``)."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_key(token))
            if session is None or self._is_expired(session, now):
                return None
            if touch:
                session.last_seen = now
            return session

    def end(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            return self._sessions.pop(session_key(token), None)

    def end_all(self) -> list[Session]:
        with self._lock:
            ended = list(self._sessions.values())
            self._sessions.clear()
        return ended

    def expired(self) -> list[Session]:
        """Remove and return every expired session."""
        now = self._clock()
        with self._lock:
            gone = [k for k, s in self._sessions.items() if self._is_expired(s, now)]
            return [self._sessions.pop(k) for k in gone]

    def held_uploads(self) -> set[str]:
        """Temp files some live session still waits to use (not to be deleted under it)."""
        with self._lock:
            return {path for session in self._sessions.values() for path in session.uploads}

    def _is_expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_s or now - session.created > self.max_age_s


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Exponential backoff after failed logins, per user name *at* an address, and per address.

    Failures count against the pair (user name, address) and against the address alone, never against a
    user name by itself: failures from one address cannot lock an account for anyone at another address.
    A pair's first ``free`` failures cost nothing, an address's first ``address_free`` (over any user
    names); each further one doubles the wait (1 s, 2 s, 4 s … up to ``max_delay_s``). While a key is
    locked, attempts are refused without checking the password.
    """

    def __init__(self, free: int = 5, address_free: int = 20, max_delay_s: float = 900.0,
                 forget_after_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.address_free = address_free
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def wait_s(self, username: str, address: str) -> float:
        """Seconds until this user name may try again from this address (0 when allowed now)."""
        now = self._clock()
        with self._lock:
            waits = [f.locked_until - now for k, _ in self._keys(username, address) if (f := self._failures.get(k))]
        return max([0.0, *waits])

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:
                self._forget_old(now)
            for key, free in self._keys(username, address):
                f = self._failures.setdefault(key, _Failures())
                if now - f.last > self.forget_after_s:
                    f.count = 0
                f.count += 1
                f.last = now
                if f.count > free:
                    f.locked_until = now + min(self.max_delay_s, 2.0 ** (f.count - free - 1))

    def succeeded(self, username: str, address: str) -> None:
        """Clear the pair; the address keeps its count (logging in to one's own account resets nothing else)."""
        with self._lock:
            self._failures.pop(self._keys(username, address)[0][0], None)

    def _keys(self, username: str, address: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return (f"pair:{username.lower()}\n{address}", self.free), (f"addr:{address}", self.address_free)

    def _forget_old(self, now: float) -> None:
        for key in [k for k, f in self._failures.items() if now - f.last > self.forget_after_s]:
            del self._failures[key]
