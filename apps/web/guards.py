"""Request guards the gate applies before Gradio sees a request: same-origin only, and one user per Gradio session.

* A browser names the page that sent a request (``Origin``, ``Sec-Fetch-Site``). Only Loupe's own origin may
  send anything but a top-level navigation: a page on another site, or on another port of the same host
  (cookies are shared across ports), cannot log a user in or out, upload, or read ``/config``. Clients that
  are not browsers send neither header and are not affected.
* Gradio keys a tab's state, queue stream, heartbeat and cancellation by a ``session_hash`` the browser
  chooses. The first user to use a hash owns it; anyone else naming it is refused.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]

# What Gradio 6's page needs, and no more (found in Chromium): inline scripts and styles, and eval (gr.HTML
# renders its template through `new Function`). No other origin, no other port of this host: an injected image,
# style, form or fetch has nowhere to go, and no page may frame Loupe.
def content_security_policy(image_origins: tuple[str, ...] = ()) -> str:
    """The policy; ``image_origins``: other origins images may come from (a configured basemap, basemap.py)."""
    return "; ".join([
        "default-src 'self'", "script-src 'self' 'unsafe-inline' 'unsafe-eval'", "style-src 'self' 'unsafe-inline'",
        " ".join(["img-src 'self' data: blob:", *image_origins]), "media-src 'self' data: blob:",
        "font-src 'self' data:", "connect-src 'self'", "worker-src 'self' blob:", "frame-src 'none'",
        "object-src 'none'", "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'"])


# Gradio requests naming a session: the hash is in the JSON body, the query string or the path.
SESSION_BODY = re.compile(r"^/gradio_api/(queue/join|cancel)$")
SESSION_QUERY = re.compile(r"^/gradio_api/queue/data$")
SESSION_PATH = re.compile(r"^/gradio_api/heartbeat/([\w-]+)$")
UPLOAD_QUERY = re.compile(r"^/gradio_api/(upload|upload_progress)$")
BODY_LIMIT = 4 * 2**20  # a queue/join body holds form values; files go through /upload


def header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def is_https(scope: Scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def app_origin(scope: Scope, public_origin: str | None) -> str:
    """The origin the browser shows for Loupe: the configured one, else the scheme and Host of this request."""
    if public_origin:
        return public_origin.rstrip("/").lower()
    scheme = "https" if is_https(scope) else "http"
    return f"{scheme}://{(header(scope, 'host') or '').lower()}"


def cross_site(scope: Scope, public_origin: str | None) -> str | None:
    """Why a request comes from another origin (None: it does not, or it is a plain link being followed)."""
    origin = header(scope, "origin")
    if origin is not None and origin.lower() != app_origin(scope, public_origin):
        return "origin"
    site = header(scope, "sec-fetch-site")
    if site in (None, "same-origin", "none"):
        return None
    navigation = (scope.get("method") in ("GET", "HEAD") and header(scope, "sec-fetch-mode") == "navigate"
                  and header(scope, "sec-fetch-dest") in ("document", None))
    return None if navigation else f"sec-fetch-site {site}"[:40]


async def read_body(receive: Callable, limit: int = BODY_LIMIT) -> bytes | None:
    """The whole request body, or None when it is longer than ``limit``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that hands the app the body already read, then whatever the client sends next."""
    sent = False

    async def wrapped() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


def needs_body(scope: Scope) -> bool:
    return scope.get("method") == "POST" and bool(SESSION_BODY.match(scope.get("path", "")))


def gradio_sessions(scope: Scope, body: bytes | None) -> list[str]:
    """The Gradio session hashes (and upload ids) a request names, as binding keys."""
    path = scope.get("path", "")
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    keys: list[str] = []
    if body is not None and SESSION_BODY.match(path):
        try:
            value = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            keys.append(f"s:{value}")
    elif SESSION_QUERY.match(path):
        keys += [f"s:{v}" for v in query.get("session_hash", [])]
    elif match := SESSION_PATH.match(path):
        keys.append(f"s:{match.group(1)}")
    elif UPLOAD_QUERY.match(path):
        keys += [f"u:{v}" for v in query.get("upload_id", [])]
    return keys


@dataclass
class _Owner:
    username: str
    session: str | None  # SHA-256 of the login token; None for a trusted proxy's user
    since: float
    seen: float


class SessionBindings:
    """Gradio session hash -> the user who first used it; kept while used, bounded in number."""

    def __init__(self, idle_s: float, max_age_s: float, limit: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.max_age_s, self.limit, self.clock = idle_s, max_age_s, limit, clock
        self._owners: OrderedDict[str, _Owner] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, keys: list[str], username: str, session: str | None) -> bool:
        """True when every key is free or already this user's (free keys become this user's)."""
        now = self.clock()
        with self._lock:
            owners = [self._live(key, now) for key in keys]
            if any(o is not None and o.username != username for o in owners):
                return False
            for key, owner in zip(keys, owners, strict=True):
                if owner is None:
                    self._owners[key] = _Owner(username, session, now, now)
                else:
                    owner.seen = now
                    self._owners.move_to_end(key)
            while len(self._owners) > self.limit:
                self._owners.popitem(last=False)  # the least recently used
            return True

    def forget_session(self, session: str | None) -> None:
        """Free every hash bound under a login session that has ended."""
        if session is None:
            return
        with self._lock:
            for key in [k for k, o in self._owners.items() if o.session == session]:
                del self._owners[key]

    def prune(self) -> None:
        now = self.clock()
        with self._lock:
            for key in list(self._owners):  # _live removes what has expired
                self._live(key, now)

    def __len__(self) -> int:
        return len(self._owners)

    def _live(self, key: str, now: float) -> _Owner | None:
        owner = self._owners.get(key)
        if owner is not None and (now - owner.seen > self.idle_s or now - owner.since > self.max_age_s):
            del self._owners[key]
            return None
        return owner
