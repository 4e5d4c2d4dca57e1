"""Per-installation secrets (e.g. the key that makes de-identified UIDs consistent within one
installation): random bytes in ``LOUPE_HOME/secrets``, owner-only, created once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


def installation_secret(home: Path, name: str) -> bytes:
    """The secret called ``name``; made on first use (atomically, 0600 in a 0700 folder)."""
    folder = home / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(SECRET_BYTES))
    try:
        os.link(temporary, path)  # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes()
