"""Uploads: an original file name never reaches the disk, and Gradio's temp copies do not outlive their use.

Gradio stores an upload as ``<temp>/<sha>/<name the browser sent>``; names like ``SMITH_ANNA_1980-01-01.jpg``
carry PHI. The multipart body is parsed on its way in by python-multipart's streaming parser (the one Gradio
uses) and re-written part by part with headers Loupe builds: a file part is named ``upload.<ext>``, nothing of
the original part headers passes, and a body the parser does not accept never reaches Gradio.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

_EXTENSION = re.compile(r"\.[a-z0-9]{1,5}")
# Extensions that name a file type: Python's built-in table (not the system's files) and the slide and DICOM
# suffixes Loupe's domains accept. Any other "extension" may be part of a name ("SMITH.ANNA") and is dropped.
_TABLE = mimetypes.MimeTypes()
FILE_TYPES = frozenset(ext.lower() for ext in [*_TABLE.types_map[True], *_TABLE.types_map[False],
                                               *_TABLE.encodings_map, ".dcm", ".dicom", ".svs", ".ndpi", ".scn"])
_ANY_FILENAME = re.compile(rb'filename\*?\s*=\s*"?([^";\r\n]*)', re.IGNORECASE)  # for the extension only
_FIELD_NAME = re.compile(rb"[\w.\[\]-]{1,100}")
_MEDIA_TYPE = re.compile(rb"[\w.+-]{1,100}/[\w.+-]{1,100}")
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,./:=?-]{1,70}")  # RFC 2046 bchars (no space: none sends one)
# Longest part-header block accepted; a longer one is refused.
_HOLD = 16 * 1024


def neutral_name(original: str) -> str:
    """``upload`` plus the original extension when it is a plain one that names a file type (Gradio checks
    file types by it)."""
    ext = os.path.splitext(original.strip().rsplit("'", 1)[-1])[1].lower()
    return "upload" + (ext if _EXTENSION.fullmatch(ext) and ext in FILE_TYPES else "")


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, as python-multipart reads it; None otherwise."""
    media_type, options = parse_options_header((content_type or "").encode("latin-1"))
    boundary = options.get(b"boundary", b"")
    return boundary if media_type == b"multipart/form-data" and _BOUNDARY.fullmatch(boundary) else None


def _part_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The headers Loupe writes for a part: its field name, ``upload.<ext>`` for a file, a plain media type."""
    fields = dict(headers)
    disposition = fields.get(b"content-disposition", b"")
    kind, options = parse_options_header(disposition)
    name = options.get(b"name", b"")
    if kind != b"form-data" or not _FIELD_NAME.fullmatch(name):
        raise ValueError("not a form-data part")
    out = b'Content-Disposition: form-data; name="' + name + b'"'
    if b"filename" in disposition.lower():
        found = options.get(b"filename") or (m.group(1) if (m := _ANY_FILENAME.search(disposition)) else b"")
        out += b'; filename="' + neutral_name(found.decode("utf-8", "replace")).encode() + b'"'
    if media_type := fields.get(b"content-type", b"").strip():
        plain = media_type if _MEDIA_TYPE.fullmatch(media_type) else b"application/octet-stream"
        out += b"\r\nContent-Type: " + plain
    return out + b"\r\n\r\n"


class _Refused(Exception):
    pass


async def serve_scrubbed(app: Callable, scope: Message, receive: Receive, send: Callable, boundary: bytes) -> None:
    """Run ``app`` on the scrubbed body; a body the parser refuses gets a 400 (whatever the app made of the
    disconnect it saw instead)."""
    refused = False

    async def watched() -> Message:
        nonlocal refused
        message = await scrubbed()
        refused = refused or message["type"] == "http.disconnect"
        return message

    async def guarded(message: Message) -> None:
        if refused:
            raise _Refused
        await send(message)

    scrubbed = scrub_filenames(receive, boundary)
    try:
        await app(scope, watched, guarded)
    except Exception:
        if not refused:
            raise
    if refused:
        body = b'{"detail":"The upload is not a multipart body Loupe accepts"}'
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def scrub_filenames(receive: Receive, boundary: bytes) -> Receive:
    """Wrap an ASGI ``receive`` so the app gets the multipart body re-written with Loupe's own part headers.

    The files' own bytes pass unchanged (even when they contain ``filename="..."``). A body the parser refuses
    (or a part without a form-data name, or part headers over 16 KiB) ends as ``http.disconnect``: the app
    reads no further and stores nothing of it.
    """
    out = bytearray()
    headers: list[tuple[bytes, bytes]] = []
    field, value = bytearray(), bytearray()
    parts = 0
    header_bytes = 0
    finished = False

    def on_part_begin() -> None:
        nonlocal header_bytes
        headers.clear()
        header_bytes = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        _grow(field, data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        _grow(value, data[start:end])

    def _grow(buffer: bytearray, chunk: bytes) -> None:
        nonlocal header_bytes
        header_bytes += len(chunk)
        if header_bytes > _HOLD:
            raise ValueError("part headers too long")
        buffer += chunk

    def on_header_end() -> None:
        headers.append((bytes(field).strip().lower(), bytes(value).strip()))
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        nonlocal parts
        out.extend((b"\r\n" if parts else b"") + b"--" + boundary + b"\r\n" + _part_headers(headers))
        parts += 1

    def on_part_data(data: bytes, start: int, end: int) -> None:
        out.extend(data[start:end])

    def on_end() -> None:
        nonlocal finished
        out.extend((b"\r\n" if parts else b"") + b"--" + boundary + b"--\r\n")
        finished = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_end": on_end})
    refused = False

    async def scrubbed() -> Message:
        nonlocal refused
        if refused:
            return {"type": "http.disconnect"}
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            more = message.get("more_body", False)
            try:
                parser.write(message.get("body", b""))
                if not more:
                    parser.finalize()
                    if not finished:
                        raise ValueError("incomplete multipart body")
            except Exception:  # noqa: BLE001 - anything the parser (or a part check) refuses
                refused = True
                return {"type": "http.disconnect"}
            ready = bytes(out)
            out.clear()
            if not more:
                return {**message, "body": ready, "more_body": False}
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
