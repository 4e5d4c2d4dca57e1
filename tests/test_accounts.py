"""Accounts: password, role and enable/disable changes (audited), the last-admin guard, login cost, first start."""

from __future__ import annotations

import hashlib
import stat

import pytest

from loupe.apps.cli import ROLE_CHOICE
from loupe.apps.firstrun import ensure_admin, forget_initial_password
from loupe.core.cases import passwords
from loupe.core.cases import store as store_module
from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.store import ROLES, CaseStore
from loupe.core.errors import AccessDenied, LoupeError


@pytest.fixture
def store(db_url, tmp_path):
    return CaseStore(open_database(db_url), AssetStore(tmp_path / "assets"))


def _events(store: CaseStore, prefix: str = "user.") -> list[tuple[int | None, str, dict]]:
    return [(e.user_id, e.action, e.detail) for e in store.audit_events() if e.action.startswith(prefix)]


def test_cli_role_choice_matches_the_store():
    assert tuple(ROLE_CHOICE.choices) == ROLES


def test_changes_are_audited_with_actor_or_cli_and_never_the_password(store):
    root = store.add_user("root", "root-password", "admin")
    store.add_user("alice", "alice-password", actor=root)
    store.set_password(root, "alice", "alice-new-password")
    store.set_role(root, "alice", "reviewer")
    store.set_active(None, "alice", False)
    store.set_active(root, "alice", True)
    assert store.authenticate("alice", "alice-new-password").role == "reviewer"
    assert store.authenticate("alice", "alice-password") is None
    assert _events(store) == [
        (None, "user.create", {"username": "root", "role": "admin", "via": "cli"}),
        (root.id, "user.create", {"username": "alice", "role": "user"}),
        (root.id, "user.passwd", {"username": "alice"}),
        (root.id, "user.role", {"username": "alice", "role": "reviewer", "previous": "user"}),
        (None, "user.disable", {"username": "alice", "via": "cli"}),
        (root.id, "user.enable", {"username": "alice"}),
    ]
    assert not any("password" in str(e.detail) for e in store.audit_events())


def test_changes_validate_like_add_user(store):
    store.add_user("alice", "alice-password")
    for change in (lambda: store.set_password(None, "nobody", "long enough"),
                   lambda: store.set_active(None, "nobody", False),
                   lambda: store.set_role(None, "nobody", "user")):
        with pytest.raises(LoupeError, match="no user named 'nobody'"):
            change()
    with pytest.raises(LoupeError, match="at least 8"):
        store.set_password(None, "alice", "short")
    with pytest.raises(LoupeError, match="unknown role"):
        store.set_role(None, "alice", "root")
    assert _events(store) == [(None, "user.create", {"username": "alice", "role": "user", "via": "cli"})]


def test_only_admins_change_other_users_but_anyone_their_own_password(store):
    alice = store.add_user("alice", "alice-password")
    store.add_user("bob", "bob-password")
    with pytest.raises(AccessDenied):
        store.set_role(alice, "alice", "admin")
    with pytest.raises(AccessDenied):
        store.set_password(alice, "bob", "hijacked-password")
    with pytest.raises(AccessDenied):
        store.add_user("mallory", "mallory-password", actor=alice)
    store.set_password(alice, "alice", "alice-new-password")
    assert store.authenticate("alice", "alice-new-password") is not None


def test_disabled_user_cannot_log_in_until_enabled(store):
    store.add_user("root", "root-password", "admin")
    store.add_user("alice", "alice-password")
    store.set_active(None, "alice", False)
    assert store.authenticate("alice", "alice-password") is None
    assert store.get_user("alice") is None
    assert [u.active for u in store.list_users()] == [False, True]
    store.set_active(None, "alice", True)
    assert store.authenticate("alice", "alice-password") is not None
    failed = [e for e in store.audit_events() if e.action == "login.failed"]
    assert len(failed) == 1 and failed[0].detail == {"disabled": True}


def test_last_active_admin_cannot_be_disabled_or_demoted(store):
    store.add_user("root", "root-password", "admin")
    with pytest.raises(LoupeError, match="cannot disable 'root': it is the last active admin"):
        store.set_active(None, "root", False)
    with pytest.raises(LoupeError, match="cannot demote 'root': it is the last active admin"):
        store.set_role(None, "root", "reviewer")
    store.add_user("second", "second-password", "admin")
    store.set_active(None, "second", False)  # a disabled admin does not count as a spare
    with pytest.raises(LoupeError, match="last active admin"):
        store.set_role(None, "root", "user")
    store.set_active(None, "second", True)
    store.set_role(None, "root", "user")
    assert {u.username: u.role for u in store.list_users()} == {"root": "user", "second": "admin"}


def test_every_login_path_runs_the_kdf_exactly_once(store, monkeypatch):
    """Unknown and disabled names cost as much as real ones (checked by counting, not by timing)."""
    store.add_user("root", "root-password", "admin")
    store.add_user("alice", "alice-password")
    store.add_user("zed", "zed-password")
    store.set_active(None, "zed", False)
    verifications: list[str] = []
    kdf_runs: list[int] = []
    real_verify, real_scrypt = store_module.verify_password, hashlib.scrypt

    def counting_verify(password: str, stored: str) -> bool:
        verifications.append(stored)
        return real_verify(password, stored)

    def counting_scrypt(*args, **kwargs) -> bytes:
        kdf_runs.append(kwargs["n"])
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(store_module, "verify_password", counting_verify)
    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    attempts = {"known, right": ("alice", "alice-password"), "known, wrong": ("alice", "wrong-password"),
                "unknown": ("nobody", "alice-password"), "disabled": ("zed", "zed-password")}
    for label, (name, password) in attempts.items():
        verifications.clear()
        kdf_runs.clear()
        result = store.authenticate(name, password)
        assert (result is not None) == (label == "known, right"), label
        assert len(verifications) == 1 and kdf_runs == [2**15], label
        # the stand-in hash has the real hash's cost parameters and key length
        assert verifications[0].split("$")[:4] == store.get_user("alice").password_hash.split("$")[:4], label
    assert not passwords.verify_password("", passwords.dummy_hash())


def test_first_start_off_a_terminal_writes_the_password_to_a_private_file(store, tmp_path):
    password_file = tmp_path / "home" / "initial-admin-password"
    notice = ensure_admin(store, password_file, interactive=False)
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password not in notice and str(password_file) in notice and "loupe users passwd admin" in notice
    assert store.authenticate("admin", password).is_admin
    assert ensure_admin(store, password_file, interactive=False) is None  # users exist: nothing to do
    forget_initial_password(password_file)
    assert not password_file.exists()


def test_first_start_on_a_terminal_shows_the_password_once_and_writes_nothing(store, tmp_path):
    password_file = tmp_path / "home" / "initial-admin-password"
    notice = ensure_admin(store, password_file, interactive=True)
    password = notice.split("with password ", 1)[1].split()[0]
    assert store.authenticate("admin", password) is not None
    assert not password_file.exists()


def test_first_start_replaces_a_stale_password_file(store, tmp_path):
    password_file = tmp_path / "initial-admin-password"
    password_file.write_text("from-a-deleted-database\n")
    password_file.chmod(0o644)
    ensure_admin(store, password_file, interactive=False)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert store.authenticate("admin", password_file.read_text().strip()) is not None


def test_password_role_and_active_changes_raise_the_session_epoch(store):
    """The web app ends sessions made under an older epoch (tests/test_sessions.py); a refused change keeps it."""
    store.add_user("root", "root-password", "admin")
    store.add_user("alice", "alice-password")

    def epoch(name: str = "alice") -> int:
        return next(u.session_epoch for u in store.list_users() if u.username == name)

    assert epoch() == 0
    store.set_password(None, "alice", "alice-password")
    assert epoch() == 1
    store.set_role(None, "alice", "reviewer")
    assert epoch() == 2
    store.set_active(None, "alice", False)
    store.set_active(None, "alice", True)
    assert epoch() == 4
    with pytest.raises(LoupeError):
        store.set_password(None, "alice", "short")
    with pytest.raises(LoupeError):
        store.set_role(None, "root", "user")  # the last admin: refused, root's epoch unchanged
    assert epoch() == 4 and epoch("root") == 0
