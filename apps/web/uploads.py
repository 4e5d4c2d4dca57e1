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

# A quoted or an unquoted value (RFC 5987 ``filename*=`` included) within one part's header block.
_FILENAME = re.compile(rb'filename(\*?)=(?:"([^"\r\n]*)"|([^";\r\n]*))', re.IGNORECASE)
_EXTENSION = re.compile(r"\.[a-z0-9]{1,5}")
# Longest part-header block we wait for; a longer one passes unchanged and Gradio's parser refuses it.
_HOLD = 16 * 1024


def neutral_name(original: str) -> str:
    """``upload`` plus the original extension when it is a plain one (Gradio checks file types by it)."""
    ext = os.path.splitext(original.strip().rsplit("'", 1)[-1])[1].lower()
    return "upload" + (ext if _EXTENSION.fullmatch(ext) else "")


def _replace(match: re.Match[bytes]) -> bytes:
    original = (match.group(2) if match.group(2) is not None else match.group(3)).decode("utf-8", "replace")
    return b'filename="' + neutral_name(original).encode() + b'"'


def multipart_boundary(content_type: str | None) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
    return match.group(1).encode("latin-1") if match else None


def scrub_filenames(receive: Receive, boundary: bytes) -> Receive:
    """Wrap an ASGI ``receive`` so the ``filename=`` of every multipart part header becomes neutral.

    Only part headers (from a ``--boundary`` line to the blank line after it) are rewritten: the files'
    own bytes pass unchanged even when they happen to contain ``filename="..."``.
    """
    delimiter = b"--" + boundary + b"\r\n"
    held = b""
    finished = False

    def scrub(data: bytes, final: bool) -> tuple[bytes, bytes]:
        """Rewrite every complete part header in ``data``; return (bytes to pass on, bytes to hold back)."""
        out = bytearray()
        pos = 0
        while True:
            start = data.find(delimiter, pos)
            if start < 0:
                keep = 0 if final else min(len(data) - pos, len(delimiter) - 1)  # a delimiter may straddle
                out += data[pos:len(data) - keep]
                return bytes(out), data[len(data) - keep:]
            headers = start + len(delimiter)
            end = data.find(b"\r\n\r\n", headers)
            if end < 0:
                if final or len(data) - start > _HOLD:  # no sane header is this long: let the parser refuse it
                    out += data[pos:]
                    return bytes(out), b""
                out += data[pos:start]
                return bytes(out), data[start:]
            out += data[pos:headers] + _FILENAME.sub(_replace, data[headers:end])
            pos = end

    async def scrubbed() -> Message:
        nonlocal held, finished
        if finished:
            return await receive()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            final = not message.get("more_body", False)
            ready, held = scrub(held + message.get("body", b""), final)
            if final:
                finished = True
                return {**message, "body": ready}
            if ready:
                return {**message, "body": ready, "more_body": True}

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
