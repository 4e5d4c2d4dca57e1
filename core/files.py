"""Files written whole or not at all: a temporary name beside the target, flushed to disk, renamed into place.

What a killed writer leaves carries ``TEMP_MARK`` in its name, so the next run can find and remove it.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_MARK = ".loupe-partial"


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_MARK}")


def write_atomically(path: Path, data: bytes | str) -> None:
    """``data`` at ``path`` (mode 0600), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_name(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
