"""Sessions end with the account change that should end them: a password, role or active change, made in
the app or by another process (the ``loupe users`` command), ends every session the user had."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from webapp import serve

from loupe.apps.web.gate import COOKIE, WebSecurity
from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings

LOUPE = Path(sys.executable).with_name("loupe")


def _scope(token: str | None = None) -> dict:
    headers = [(b"cookie", f"{COOKIE}={token}".encode())] if token else []
    return {"type": "http", "path": "/config", "headers": headers, "client": ("127.0.0.1", 50000)}


@pytest.fixture
def web(sqlite_settings: Settings):
    """A WebSecurity on a real store, and a second store on the same database (as another process has)."""
    sqlite_settings.ensure_dirs()
    store = CaseStore(open_database(sqlite_settings.db_url), AssetStore(sqlite_settings.assets_dir))
    for name, role in (("root", "admin"), ("alice", "user"), ("bob", "user")):
        store.add_user(name, f"{name}-password", role)
    other = CaseStore(open_database(sqlite_settings.db_url), AssetStore(sqlite_settings.assets_dir))
    security = WebSecurity(SimpleNamespace(settings=sqlite_settings, store=store))  # type: ignore[arg-type]
    return SimpleNamespace(security=security, store=store, other=other)


def _login(web: SimpleNamespace, name: str) -> str:
    user = web.store.authenticate(name, f"{name}-password")
    return web.security.sessions.create(user.username, user.session_epoch)


def _user(web: SimpleNamespace, token: str) -> str | None:
    user = web.security.user_for(_scope(token))
    return user.username if user else None


@pytest.mark.parametrize("change", ["password", "role", "disable"])
def test_an_account_change_in_another_process_ends_every_session_of_that_user(web, change):
    first, second, bob = _login(web, "alice"), _login(web, "alice"), _login(web, "bob")
    assert _user(web, first) == _user(web, second) == "alice"
    {"password": lambda: web.other.set_password(None, "alice", "alice-new-password"),
     "role": lambda: web.other.set_role(None, "alice", "reviewer"),
     "disable": lambda: web.other.set_active(None, "alice", False)}[change]()
    assert _user(web, first) is None and _user(web, second) is None
    assert web.security.sessions.get(first) is None  # ended, not just refused once
    assert _user(web, bob) == "bob"  # other users keep theirs


def test_re_enabling_a_user_does_not_revive_her_old_session(web):
    token = _login(web, "alice")
    web.other.set_active(None, "alice", False)
    web.other.set_active(None, "alice", True)  # no request came in while she was disabled
    assert _user(web, token) is None
    assert _user(web, _login(web, "alice")) == "alice"  # a new login works


def test_a_login_that_raced_with_a_password_change_gets_a_dead_session(web):
    user = web.store.authenticate("alice", "alice-password")  # the old password, checked just before ...
    web.other.set_password(None, "alice", "alice-new-password")  # ... an admin changes it
    token = web.security.sessions.create(user.username, user.session_epoch)
    assert _user(web, token) is None


@pytest.mark.parametrize(("command", "restore"), [
    (["passwd", "alice"], None),
    (["role", "alice", "reviewer"], None),
    (["disable", "alice"], ["enable", "alice"]),
])
def test_the_users_command_ends_a_live_web_session(tmp_path, command, restore):
    """End to end: a logged-in browser, then ``loupe users ...`` in its own process on the same database."""
    with serve(tmp_path / "home", None, {"root": "admin", "alice": "user"}) as served:
        alice, root = served.http("alice"), served.http("root")
        assert alice.get("/config").status_code == 200
        env = {**os.environ, "LOUPE_HOME": str(served.home), "LOUPE_NEW_PASSWORD": "alice-password"}
        env.pop("LOUPE_DATABASE_URL", None)
        for args in filter(None, (command, restore)):
            subprocess.run([str(LOUPE), "users", *args], env=env, check=True, capture_output=True, timeout=120)
        assert alice.get("/config").status_code == 401
        assert root.get("/config").status_code == 200
        assert served.http("alice").get("/config").status_code == 200  # she logs in again
