"""The outermost layer of the web app: who is asking, and whether the path may be asked for at all.

Every request except the login page needs a live session (or a trusted proxy's user header). Of Gradio's
routes only those its page and client need are reachable; the rest (its file server, which would hand any
logged-in user any cached file, run history, monitoring, API docs, proxies) answer 404 and are audited.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from loupe.core.cases.models import User

from ..service import LoupeService
from .sessions import LoginThrottle, Session, SessionStore
from .uploads import TempSweeper, multipart_boundary, scrub_filenames

COOKIE = "loupe_session"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

PUBLIC = re.compile(r"^/(login/?|logout/?|healthz)$")
# Gradio routes its page and client use; anything else under Gradio is refused.
ALLOWED = re.compile(
    r"^/(|config/?|theme\.css|favicon\.ico|robots\.txt|manifest\.json|(assets|static|svelte)/.+"
    r"|case-assets/\d+|case-export/\d+/\w+"
    r"|gradio_api/(info/?|app_id/?|user/?|login_check/?|startup-events|queue/(join|data)|heartbeat/[\w-]+"
    r"|upload|upload_progress|cancel|reset/?))$")
UPLOAD = "/gradio_api/upload"
# Paths that keep a session alive; background polling (heartbeat, queue stream) does not count as activity.
PASSIVE = re.compile(r"^/gradio_api/(heartbeat/|queue/data|upload_progress)")


class WebSecurity:
    """Sessions, login throttling and temp-file hygiene for one running app."""

    def __init__(self, service: LoupeService) -> None:
        settings = service.settings
        self.service = service
        self.sessions = SessionStore(settings.session_idle_minutes * 60, settings.session_max_hours * 3600)
        self.throttle = LoginThrottle()
        self.sweeper = TempSweeper(settings.gradio_tmp_dir, settings.upload_ttl_minutes * 60)
        self._stop = threading.Event()

    # -- who is asking -------------------------------------------------------------------------
    def user_for(self, scope: Scope, touch: bool = True) -> User | None:
        settings = self.service.settings
        client = (scope.get("client") or ("", 0))[0]
        if settings.trusted_user_header and client in settings.trusted_proxies:
            name = _header(scope, settings.trusted_user_header)
            if name:
                return self.service.store.get_user(name)
        session = self.sessions.get(session_token(scope), touch=touch)
        return self.service.store.get_user(session.username) if session else None

    def session_for(self, scope: Scope) -> Session | None:
        return self.sessions.get(session_token(scope), touch=False)

    def release_upload(self, cookie_header: str | None, data: bytes) -> None:
        """Delete the temp copies of an upload once its bytes are taken (or refused)."""
        session = self.sessions.get(token_from_cookies(cookie_header), touch=False)
        if session is None:
            return
        used = [p for p in session.uploads if _holds(p, data)]
        session.uploads.difference_update(used)
        self.sweeper.remove(used)

    def end_session(self, token: str | None) -> None:
        session = self.sessions.end(token)
        if session is not None:
            self.sweeper.remove(session.uploads)

    # -- housekeeping --------------------------------------------------------------------------
    def start_housekeeping(self, every_s: float = 60.0) -> None:
        self.sweeper.wipe()  # leftovers of a previous run that did not shut down cleanly

        def loop() -> None:
            while not self._stop.wait(every_s):
                self.housekeeping()

        threading.Thread(target=loop, daemon=True, name="loupe-housekeeping").start()

    def housekeeping(self) -> None:
        for session in self.sessions.expired():
            self.sweeper.remove(session.uploads)
        self.sweeper.sweep()

    def shutdown(self) -> None:
        self._stop.set()
        self.sessions.end_all()
        self.sweeper.wipe()


def session_token(scope: Scope) -> str | None:
    return token_from_cookies(_header(scope, "cookie"))


def token_from_cookies(raw: str | None) -> str | None:
    if not raw:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(raw)
    except Exception:  # a malformed cookie header is just "no session"
        return None
    morsel = cookies.get(COOKIE)
    return morsel.value if morsel else None


def _holds(path: str, data: bytes) -> bool:
    try:
        file = Path(path)
        return file.stat().st_size == len(data) and file.read_bytes() == data
    except OSError:
        return False


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


class Gate:
    """ASGI middleware applying :class:`WebSecurity` to every request."""

    def __init__(self, app: ASGIApp, security: WebSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if PUBLIC.match(path):
            return await self.app(scope, receive, _hardened(send, path))
        user = self.security.user_for(scope, touch=not PASSIVE.match(path))
        if user is None:
            return await _refuse_anonymous(scope, send)
        if not ALLOWED.match(path):
            self.security.service.store.audit(user, "route.denied", detail={"path": path[:200]})
            return await _respond(send, 404, b'{"detail":"Not Found"}', "application/json")
        scope["loupe.user"] = user.username
        if path == UPLOAD and scope.get("method") == "POST":
            # Without a boundary this is no multipart body: Gradio refuses it, there is no name to scrub.
            if boundary := multipart_boundary(_header(scope, "content-type")):
                receive = scrub_filenames(receive, boundary)
            # A plain (uncompressed) reply lets us note which temp files this session owns.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
            send = _note_uploads(send, self.security.session_for(scope))
        await self.app(scope, receive, _hardened(send, path))


def _hardened(send: Callable, path: str) -> Callable:
    """Security headers on every response; nothing but Gradio's static bundle may be cached."""
    cacheable = path.startswith(("/assets/", "/static/", "/svelte/"))

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control" or cacheable]
            headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY")]
            if not cacheable:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _note_uploads(send: Callable, session: Session | None) -> Callable:
    body: list[bytes] = []

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and session is not None:
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                try:
                    paths = json.loads(b"".join(body))
                except ValueError:
                    paths = []
                if isinstance(paths, list):
                    session.uploads.update(p for p in paths if isinstance(p, str))
        await send(message)

    return wrapped


async def _refuse_anonymous(scope: Scope, send: Callable) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4401})
        return
    accepts_html = "text/html" in (_header(scope, "accept") or "")
    if scope.get("method") == "GET" and accepts_html:
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/login"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await _respond(send, 401, b'{"detail":"Not authenticated"}', "application/json")


async def _respond(send: Callable, status: int, body: bytes, media_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
