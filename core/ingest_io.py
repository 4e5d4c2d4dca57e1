"""What a domain's ``ingest`` is given and gives back, without whole files in memory.

An upload reaches a domain as a path (the spooled upload: the web process never reads it) or a readable
binary stream (tests, tools). A domain that needs the bytes reads them with ``read_whole``, which checks
the size against ``max_bytes`` first; one that reads in parts (a scene) opens ``local_file``, a path that
is the upload itself or a stream spooled to disk in chunks, against ``max_stream_bytes``. A large result
goes back as a file: ``file_asset`` hashes it in chunks and the case store moves it into place, so its
bytes never pass through memory or between processes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from .budgets import Budgets
from .plugins import IngestedAsset

Source = Path | BinaryIO
CHUNK = 1 << 20


def source_size(source: Source) -> int | None:
    """The size in bytes when it is known without reading (a path, a seekable stream)."""
    if isinstance(source, Path):
        return source.stat().st_size
    try:
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def head(source: Source, count: int = 16) -> bytes:
    """The first ``count`` bytes (a stream is left where it was)."""
    if isinstance(source, Path):
        with source.open("rb") as fh:
            return fh.read(count)
    here = source.tell()
    data = source.read(count)
    source.seek(here)
    return data


def read_whole(source: Source, limits: Budgets, what: str = "The file") -> bytes:
    """The whole file, for a domain that decodes it at once: refused over ``max_bytes`` before it is read
    (a stream of unknown size is read to one byte past the budget at most)."""
    size = source_size(source)
    if size is not None:
        limits.check("max_bytes", size, what)
    if isinstance(source, Path):
        return source.read_bytes()
    data = source.read(limits.max_bytes + 1)
    limits.check("max_bytes", len(data), what)
    return data


@contextmanager
def local_file(source: Source, limits: Budgets, suffix: str = "", what: str = "The file") -> Iterator[Path]:
    """A path to read the file from in parts, refused over ``max_stream_bytes``: the upload's own path, or a
    (seekable) stream copied in chunks to a temporary file (removed afterwards; the stream is rewound)."""
    size = source_size(source)
    if size is not None:
        limits.check("max_stream_bytes", size, what)
    if isinstance(source, Path):
        yield source
        return
    start = source.tell()
    with tempfile.TemporaryDirectory(prefix="loupe-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        copied = 0
        with path.open("wb") as out:
            while chunk := source.read(CHUNK):
                copied += len(chunk)
                limits.check("max_stream_bytes", copied, what)
                out.write(chunk)
        source.seek(start)  # the stream reads as before for whoever reads it next
        yield path


def staged_path(suffix: str = "") -> Path:
    """A new empty file for a result too large to hold in memory, in this process's temporary folder (on
    the server: under LOUPE_HOME, so the store can move it into place)."""
    fd, name = tempfile.mkstemp(prefix="loupe-staged-", suffix=suffix)
    os.close(fd)
    return Path(name)


def file_asset(path: Path, media_type: str, width: int | None, height: int | None,
               meta: dict[str, Any]) -> IngestedAsset:
    """An asset whose bytes stay in ``path`` (from ``staged_path``): hashed here in chunks; the store moves
    the file into place instead of writing bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return IngestedAsset(b"", media_type, width, height, meta, path=path, digest=digest.hexdigest())

