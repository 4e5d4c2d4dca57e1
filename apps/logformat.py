"""Log lines as human text (the default) or one JSON object per line (``LOUPE_LOG_FORMAT=json``) for a log
collector. A JSON line carries the request id and route template of the web request it was written for.

JSON lines leave out exception messages (they may quote a file's contents): the exception's type and the
stack's frames are kept. Kept light (no web imports): the CLI configures logging before any command runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO

from loupe.core.errors import LoupeError

FORMATS = ("text", "json")
FORMAT_ENV = "LOUPE_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "loupe.access"  # one line per web request (method, route template, status, time): JSON only

request_id: ContextVar[str | None] = ContextVar("loupe_request_id", default=None)
route: ContextVar[str | None] = ContextVar("loupe_route", default=None)

_state: dict[str, object] = {"format": "text", "handler": None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id, route."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if (rid := request_id.get()) is not None:
            entry["request_id"] = rid
        if (template := route.get()) is not None:
            entry["route"] = template
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (as logging's last resort does)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def format_from_env() -> str:
    return os.environ.get(FORMAT_ENV, "").strip().lower() or "text"


def configure(fmt: str, level: int, stream: IO[str] | None = None) -> logging.Handler:
    """Send log records of ``level`` and above to ``stream`` (stderr) as ``fmt``; returns the handler.

    Replaces the handler an earlier call installed; handlers others added to the root logger stay.
    """
    if fmt not in FORMATS:
        raise LoupeError(f"{FORMAT_ENV}/--log-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    reset()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if fmt == "json" else logging.WARNING)
    _state.update(format=fmt, handler=handler)
    return handler


def reset() -> None:
    """Remove the handler :func:`configure` installed (tests)."""
    old = _state["handler"]
    if isinstance(old, logging.Handler):
        logging.getLogger().removeHandler(old)
    _state.update(format="text", handler=None)


def active_format() -> str:
    return str(_state["format"])
