"""Sessions and the login throttle live in the database: several ``loupe serve`` processes share them.

Each "process" here is its own engine, store and WebSecurity on one database (SQLite and PostgreSQL), as
two processes behind a proxy would have; tests/test_department.py runs two real ``loupe serve`` processes
behind nginx.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from loupe.apps.web.gate import COOKIE, WebSecurity
from loupe.apps.web.sessions import LoginThrottle, SessionStore
from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.models import LoginFailure, WebSession
from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings

IDLE_S, MAX_AGE_S = 600.0, 3600.0


class Clock:
    """Epoch seconds, moved by hand (both processes read the same wall clock)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pair(db_url: str, clock: Clock) -> tuple[SimpleNamespace, SimpleNamespace]:
    """Two processes' session stores and throttles on one database."""
    def process() -> SimpleNamespace:
        db = open_database(db_url)
        return SimpleNamespace(db=db, sessions=SessionStore(db, IDLE_S, MAX_AGE_S, clock=clock),
                               throttle=LoginThrottle(db, clock=clock))
    return process(), process()


def test_a_session_made_in_one_process_is_live_in_the_other(pair):
    one, two = pair
    token = one.sessions.create("alice", epoch=3)
    seen = two.sessions.get(token)
    assert (seen.username, seen.epoch) == ("alice", 3)
    assert two.sessions.get("another-token") is None


def test_logout_in_one_process_ends_the_session_in_the_other(pair):
    one, two = pair
    token = one.sessions.create("alice")
    other = one.sessions.create("bob")
    assert two.sessions.end(token).username == "alice"
    assert one.sessions.get(token) is None and two.sessions.get(token) is None
    assert one.sessions.get(other).username == "bob"


def test_idle_and_absolute_expiry_are_shared(pair, clock):
    one, two = pair
    token = one.sessions.create("alice")
    for i in range(5):  # activity seen by either process keeps the session alive in both
        clock.now += IDLE_S - 60
        assert (one, two)[i % 2].sessions.get(token) is not None
    clock.now += IDLE_S + 1
    assert one.sessions.get(token) is None and two.sessions.get(token) is None
    [gone] = two.sessions.expired()  # either process's housekeeping deletes it
    assert gone.username == "alice" and one.sessions.expired() == []
    busy = one.sessions.create("bob")
    for _ in range(int(MAX_AGE_S // 300)):
        clock.now += 300
        assert two.sessions.get(busy) is not None
    clock.now += 1  # an hour and a second after login, however busy
    assert one.sessions.get(busy) is None and two.sessions.get(busy) is None


def test_the_throttle_counts_failures_from_every_process(pair, clock):
    one, two = pair
    for i in range(8):
        (one, two)[i % 2].throttle.failed("Alice", "10.0.0.1")
    assert one.throttle.wait_s("alice", "10.0.0.1") == two.throttle.wait_s("alice", "10.0.0.1") == 4
    clock.now += 4
    two.throttle.succeeded("alice", "10.0.0.1")
    one.throttle.failed("alice", "10.0.0.1")  # the pair starts again; the address counts on (9 of 20)
    assert two.throttle.wait_s("alice", "10.0.0.1") == 0


def test_concurrent_failures_are_all_counted(pair):
    from concurrent.futures import ThreadPoolExecutor

    one, two = pair
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: (one, two)[i % 2].throttle.failed(f"user{i % 3}", "10.0.0.7"), range(24)))
    with one.db() as s:
        counts = sorted(s.scalars(select(LoginFailure.count)))
    assert counts == [8, 8, 8, 24]  # three pairs and the address: no failure lost to a race


def test_the_database_never_holds_the_cookie_token(pair, db_url):
    one, two = pair
    tokens = [one.sessions.create("alice") for _ in range(3)]
    two.throttle.failed("alice", "203.0.113.9")
    with one.db() as s:
        cells = [str(v) for row in s.execute(select(WebSession)).scalars()
                 for v in (row.key, row.username, row.created, row.last_seen, row.epoch)]
        throttle_keys = list(s.scalars(select(LoginFailure.key)))
    assert not any(token in cell for token in tokens for cell in cells)
    assert not any("203.0.113.9" in key or "alice" in key for key in throttle_keys)
    if db_url.startswith("sqlite"):  # nor any page of the file or its write-ahead log
        path = Path(db_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        assert raw and not any(token.encode() in raw for token in tokens)


# -- through the gate: epochs, uploads, shutdown ----------------------------------------------------


@pytest.fixture
def web(settings: Settings) -> tuple[WebSecurity, WebSecurity]:
    """Two processes' WebSecurity (each its own engine) on one database, with their temp folder."""
    settings.ensure_dirs()

    def process() -> WebSecurity:
        store = CaseStore(open_database(settings.db_url), AssetStore(settings.assets_dir))
        return WebSecurity(SimpleNamespace(settings=settings, store=store))  # type: ignore[arg-type]

    first = process()
    first.service.store.add_user("alice", "alice-password", "user")
    return first, process()


def _scope(token: str) -> dict:
    return {"type": "http", "path": "/config", "headers": [(b"cookie", f"{COOKIE}={token}".encode())],
            "client": ("127.0.0.1", 50000)}


def _login(security: WebSecurity) -> str:
    user = security.service.store.authenticate("alice", "alice-password")
    return security.sessions.create(user.username, user.session_epoch)


def test_a_session_from_before_an_account_change_is_refused_by_every_process(web):
    one, two = web
    token = _login(one)
    assert two.user_for(_scope(token)).username == "alice"
    one.service.store.set_password(None, "alice", "alice-new-password")  # raises her epoch
    assert two.user_for(_scope(token)) is None  # the other process refuses it and ends it ...
    assert one.sessions.get(token) is None  # ... for everyone
    stale = one.sessions.create("alice", epoch=0)  # a session carrying the old epoch, however it came
    assert one.user_for(_scope(stale)) is None and two.user_for(_scope(stale)) is None


def _upload_awaited(process: WebSecurity, token: str, settings: Settings, folder: str) -> Path:
    """A temp upload the session of ``token`` chose in ``process`` and has not submitted yet."""
    upload = settings.gradio_tmp_dir / folder / "scan.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"pixels")
    process.sessions.get(token).uploads.update([str(upload)])
    return upload


def test_stopping_a_process_keeps_the_sessions_and_wipes_its_temp_files(web, settings):
    one, two = web
    token = _login(one)
    upload = _upload_awaited(one, token, settings, "abc")
    one.shutdown()
    assert not upload.exists()
    assert two.user_for(_scope(token)).username == "alice"  # served on by the other process
    restarted = WebSecurity(one.service)
    assert restarted.user_for(_scope(token)).username == "alice"  # and by a restart: nobody is logged out


def test_housekeeping_removes_uploads_of_a_session_another_process_ended(web, settings):
    one, two = web
    token = _login(one)
    upload = _upload_awaited(one, token, settings, "def")
    one.housekeeping()
    assert upload.exists()  # a live session waits for it
    two.end_session(token)  # she logged out through the other process
    one.housekeeping()
    assert not upload.exists() and one.sessions.held_uploads() == set()
