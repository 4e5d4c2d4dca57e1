"""Uploads: an original file name never reaches the disk, and Gradio's temp copies do not outlive their use.

Gradio stores an upload as ``<temp>/<sha>/<name the browser sent>``; names like ``SMITH_ANNA_1980-01-01.jpg``
carry PHI. The multipart body is rewritten on its way in so Gradio only ever sees ``upload.<ext>``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

# A quoted value, or an unquoted one only once its terminator has arrived (so a half-received name never matches).
_FILENAME = re.compile(rb'filename(\*?)=(?:"([^"\r\n]*)"|([^";\r\n]*)(?=[;\r\n]))', re.IGNORECASE)
_EXTENSION = re.compile(r"\.[a-z0-9]{1,5}")
# Longest part-header value we expect; bytes this close to the end of a chunk wait for the next one.
_HOLD = 16 * 1024


def neutral_name(original: str) -> str:
    """``upload`` plus the original extension when it is a plain one (Gradio checks file types by it)."""
    ext = os.path.splitext(original.strip().rsplit("'", 1)[-1])[1].lower()
    return "upload" + (ext if _EXTENSION.fullmatch(ext) else "")


def _replace(match: re.Match[bytes]) -> bytes:
    original = (match.group(2) if match.group(2) is not None else match.group(3)).decode("utf-8", "replace")
    return b'filename="' + neutral_name(original).encode() + b'"'


def scrub_filenames(receive: Receive) -> Receive:
    """Wrap an ASGI ``receive`` so every multipart ``filename=`` in the request body becomes neutral."""
    held = b""
    finished = False

    async def scrubbed() -> Message:
        nonlocal held, finished
        if finished:
            return await receive()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            data = _FILENAME.sub(_replace, held + message.get("body", b""))
            if not message.get("more_body", False):
                finished, held = True, b""
                return {**message, "body": data}
            cut = len(data) - _HOLD
            if cut <= 0:
                held = data
                continue
            held = data[cut:]
            return {**message, "body": data[:cut], "more_body": True}

    return scrubbed


class TempSweeper:
    """Deletes Gradio's temp files: specific ones, stale ones, or all of them."""

    def __init__(self, root: Path, max_age_s: float) -> None:
        self.root = root.resolve()
        self.max_age_s = max_age_s

    def remove(self, paths: Iterable[str]) -> int:
        removed = 0
        for raw in paths:
            path = Path(raw).resolve()
            if self.root in path.parents and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
                self._prune_empty(path.parent)
        return removed

    def sweep(self, now: float | None = None) -> int:
        """Remove files older than ``max_age_s`` (abandoned uploads: chosen, then never submitted)."""
        now = time.time() if now is None else now
        stale = [p for p in self._files() if now - p.stat().st_mtime > self.max_age_s]
        return self.remove(str(p) for p in stale)

    def wipe(self) -> int:
        files = list(self._files())
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        return len(files)

    def _files(self) -> Iterable[Path]:
        return (p for p in self.root.rglob("*") if p.is_file()) if self.root.is_dir() else ()

    def _prune_empty(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
