"""First start: create the 'admin' user and hand its generated password to the operator, never to a log."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loupe.core.cases.store import CaseStore

ADMIN = "admin"


def ensure_admin(store: CaseStore, password_file: Path, interactive: bool | None = None) -> str | None:
    """Create 'admin' when there are no users yet; return the line to print, or None when nothing was done.

    On a terminal (``interactive``, default: stdout is a TTY) the line shows the password once. Otherwise
    stdout probably goes to a log file, so the password goes to ``password_file`` (mode 0600) instead.
    """
    if store.list_users():
        return None
    if interactive is None:
        interactive = sys.stdout.isatty()
    password = secrets.token_urlsafe(16)
    if interactive:
        store.add_user(ADMIN, password, role="admin")
        return (f"First start: created user '{ADMIN}' with password {password}  "
                f"(shown only now; change it with: loupe users passwd {ADMIN})")
    _write_secret(password_file, password)
    try:
        store.add_user(ADMIN, password, role="admin")
    except BaseException:
        password_file.unlink(missing_ok=True)
        raise
    return (f"First start: created user '{ADMIN}'; its password is in {password_file} (readable by you only). "
            f"Change it with: loupe users passwd {ADMIN}")


def forget_initial_password(password_file: Path) -> None:
    """Remove the first-start password file once the admin has chosen a password."""
    password_file.unlink(missing_ok=True)


def _write_secret(path: Path, secret: str) -> None:
    # A leftover file belongs to a database that no longer has users: its password is useless.
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: created here with mode 0600 from the start (no window with wider permissions), and an
    # attacker-placed file or symlink makes this fail instead of being written through.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
