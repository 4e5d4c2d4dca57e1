"""The outermost layer of the web app: who is asking, and whether the path may be asked for at all.

Every request except the login page needs a live session (or a trusted proxy's user header). Of Gradio's
routes only those its page and client need are reachable; the rest (its file server, which would hand any
logged-in user any cached file, run history, monitoring, API docs, proxies) answer 404 and are audited.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from starlette.responses import Response

from loupe.core.cases.models import User
from loupe.core.config import Settings
from loupe.core.errors import LoupeError

from ..service import LoupeService
from .apilist import LISTING, listing_for_non_admin
from .basemap import basemap_from
from .guards import (
    SessionBindings,
    content_security_policy,
    cross_site,
    gradio_sessions,
    header,
    is_https,
    needs_body,
    read_body,
    replay,
)
from .sessions import LoginThrottle, Session, SessionStore, session_key
from .uploads import TempSweeper, multipart_boundary, serve_scrubbed

log = logging.getLogger(__name__)
UNAVAILABLE = b'{"detail":"The database is unavailable; try again in a moment."}'

COOKIE = "loupe_session"  # over plain HTTP (a test or a loopback-only install)
SECURE_COOKIE = "__Host-loupe_session"  # over HTTPS: Secure, Path=/, no Domain, so no sibling host can set it
PROXY_SECRET_HEADER = "x-loupe-proxy-secret"  # what the trusted proxy sends along with the user header
MIN_SECRET = 16
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

PUBLIC = re.compile(r"^/(login/?|logout/?|healthz|readyz|metrics)$")  # /metrics checks its own access (metrics.py)
# Gradio routes its page and client use; anything else under Gradio is refused.
# Case and asset ids: positive and within 64 bits (at most 18 digits); any other id is a refused, audited route.
ALLOWED = re.compile(
    r"^/(|config/?|theme\.css|favicon\.ico|robots\.txt|manifest\.json|(assets|static|svelte)/.+"
    r"|case-assets/[1-9]\d{0,17}|case-export/[1-9]\d{0,17}/\w+"
    r"|case-tiles/[1-9]\d{0,17}/(info\.json|\d{1,2}/\d{1,7}_\d{1,7}\.jpg)"
    r"|case-stack/[1-9]\d{0,17}/(stack\.json|\d{1,6}\.bin|\d{1,6}/tags\.json)"
    r"|case-map/[1-9]\d{0,17}/(info\.json|stretch\.json|\d{1,2}/\d{1,7}_\d{1,7}\.jpg|pixel/\d{1,7}_\d{1,7}\.json)"
    r"|vendor/[\w-]+(/[\w.-]+)+"
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
        db = service.store.sessions  # sessions and the throttle live in the database: every process shares them
        self.sessions = SessionStore(db, settings.session_idle_minutes * 60, settings.session_max_hours * 3600)
        self.throttle = LoginThrottle(db)
        self.sweeper = TempSweeper(settings.gradio_tmp_dir, settings.upload_ttl_minutes * 60)
        self.bindings = SessionBindings(settings.session_idle_minutes * 60, settings.session_max_hours * 3600)
        self.proxies = _networks(settings.trusted_proxies)
        self.proxy_secret = _proxy_secret(settings)
        self.basemap = basemap_from(settings)
        self.csp = content_security_policy((self.basemap.origin,) if self.basemap else ()).encode()
        if settings.trusted_user_header and not (self.proxies and self.proxy_secret):
            raise LoupeError("LOUPE_TRUSTED_USER_HEADER needs LOUPE_TRUSTED_PROXIES (the proxy's address) and "
                             f"a proxy secret of at least {MIN_SECRET} characters (LOUPE_TRUSTED_PROXY_SECRET "
                             f"or {settings.trusted_proxy_secret_file})")
        self._stop = threading.Event()

    # -- who is asking -------------------------------------------------------------------------
    def user_for(self, scope: Scope, touch: bool = True) -> User | None:
        """The user a request acts for: the trusted proxy's word if it names one, else the cookie's session.

        A request that carries the user header decides by it alone: believed from a trusted proxy with the
        secret, once; refused otherwise, whatever cookie it also carries. A session made before the user's
        last password, role or active change (its epoch is older) is ended here.
        """
        user_header = self.service.settings.trusted_user_header
        if user_header and (names := _headers(scope, user_header)):
            if len(names) != 1 or not self.from_proxy(scope, with_secret=True):
                return None
            return self.service.store.get_user(names[0].strip())  # never created here: she must exist
        token = session_token(scope)
        session = self.sessions.get(token, touch=touch)
        if session is None:
            return None
        user = self.service.store.get_user(session.username)  # read each time: other processes change users
        if user is None or user.session_epoch != session.epoch:
            self.end_session(token)
            return None
        return user

    def from_proxy(self, scope: Scope, with_secret: bool = False) -> bool:
        """Whether the TCP peer is a trusted proxy (and sent the secret, when one is set or ``with_secret``)."""
        if not _in(_peer(scope), self.proxies):
            return False
        if self.proxy_secret is None:
            return not with_secret
        sent = _headers(scope, PROXY_SECRET_HEADER)
        return len(sent) == 1 and hmac.compare_digest(sent[0].encode("latin-1"), self.proxy_secret)

    def client_address(self, scope: Scope) -> str:
        """The client's address: the last X-Forwarded-For hop (the one our proxy added) or the TCP peer."""
        if self.from_proxy(scope):
            hops = [hop.strip() for value in _headers(scope, "x-forwarded-for") for hop in value.split(",")]
            if hops and hops[-1]:
                return hops[-1][:64]
        return _peer(scope)

    def forwarded_scheme(self, scope: Scope) -> str | None:
        """``https`` or ``http`` as the trusted proxy's X-Forwarded-Proto says (its last value); None if not told."""
        if self.from_proxy(scope):
            protos = [p.strip().lower() for value in _headers(scope, "x-forwarded-proto") for p in value.split(",")]
            if protos and protos[-1] in ("http", "https"):
                return protos[-1]
        return None

    def session_for(self, scope: Scope) -> Session | None:
        return self.sessions.get(session_token(scope), touch=False)

    def upload_of(self, cookie_header: str | None, path: str) -> Path | None:
        """The spooled upload at ``path`` if this request's session uploaded it; None for any other path (one
        a client made up, or another user's upload)."""
        session = self.sessions.get(token_from_cookies(cookie_header), touch=False)
        if session is None:
            return None
        used = _held_as(session, path)
        return Path(used) if used is not None else None

    def release_upload(self, cookie_header: str | None, path: str) -> None:
        """Delete the temp copy of an upload once it is taken in (or refused)."""
        session = self.sessions.get(token_from_cookies(cookie_header), touch=False)
        if session is None:
            return
        used = _held_as(session, path)
        if used is None:
            return
        session.uploads[used] -= 1  # this upload is done with it; another tab's may still wait for it
        if session.uploads[used] <= 0:
            del session.uploads[used]
        self._remove_unheld([used])

    def end_session(self, token: str | None) -> None:
        self.bindings.forget_session(session_key(token))
        session = self.sessions.end(token)
        if session is not None:
            self._remove_unheld(session.uploads)

    def _remove_unheld(self, paths: Iterable[str]) -> None:
        """Delete temp uploads no live session still waits for (identical bytes share one file)."""
        held = self.sessions.held_uploads()
        self.sweeper.remove([p for p in paths if p not in held])

    # -- housekeeping --------------------------------------------------------------------------
    def start_housekeeping(self, every_s: float = 60.0) -> None:
        self.sweeper.wipe()  # leftovers of a previous run that did not shut down cleanly

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.housekeeping()
                except Exception:  # noqa: BLE001 - the sweep must outlive any one failure (it removes PHI)
                    log.exception("housekeeping failed; trying again in %.0f s", every_s)

        threading.Thread(target=loop, daemon=True, name="loupe-housekeeping").start()

    def housekeeping(self) -> None:
        for session in self.sessions.expired():
            self._remove_unheld(session.uploads)
        self.throttle.forget_old()
        self.bindings.prune()
        self.sweeper.sweep()

    def shutdown(self) -> None:
        self._stop.set()
        # The sessions stay in the database (other processes serve them; a restart keeps users signed in);
        # the temp uploads on this machine go.
        self.sessions.forget_uploads()
        self.sweeper.wipe()


def cookie_name(https: bool) -> str:
    return SECURE_COOKIE if https else COOKIE


def session_token(scope: Scope) -> str | None:
    """The session cookie of this request: over HTTPS only the ``__Host-`` one (a plain one could be planted)."""
    return token_from_cookies(header(scope, "cookie"), cookie_name(is_https(scope)))


def token_from_cookies(raw: str | None, name: str | None = None) -> str | None:
    """The session token in a Cookie header: the named cookie, else the ``__Host-`` one, else the plain one."""
    if not raw:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(raw)
    except Exception:  # a malformed cookie header is just "no session"
        return None
    for candidate in (name,) if name else (SECURE_COOKIE, COOKIE):
        if morsel := cookies.get(candidate):
            return morsel.value
    return None


def _held_as(session: Session, path: str) -> str | None:
    """The session's upload that ``path`` is (the same name, or the same file reached another way)."""
    if path in session.uploads:
        return path
    for held in session.uploads:
        try:
            if os.path.samefile(held, path):
                return held
        except OSError:
            continue
    return None


def _headers(scope: Scope, name: str) -> list[str]:
    """Every value of a header, in order (a repeated header is a different request from a single one)."""
    wanted = name.lower().encode()
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key.lower() == wanted]


def _peer(scope: Scope) -> str:
    """The TCP peer's address (uvicorn runs without proxy_headers: nothing rewrote it)."""
    client = scope.get("client")
    return str(client[0]) if client else "?"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: tuple[str, ...]) -> list[Network]:
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise LoupeError(f"LOUPE_TRUSTED_PROXIES: {exc}") from None


def ip_of(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as an IP (an IPv4-mapped IPv6 one as its IPv4), None when it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _in(address: str, networks: list[Network]) -> bool:
    ip = ip_of(address)
    return ip is not None and any(ip in network for network in networks)


def _proxy_secret(settings: Settings) -> bytes | None:
    secret = settings.trusted_proxy_secret
    if secret is None:
        try:
            secret = settings.trusted_proxy_secret_file.read_text().strip()
        except OSError:
            return None
    if len(secret) < MIN_SECRET:
        raise LoupeError(f"the trusted proxy secret needs at least {MIN_SECRET} characters")
    return secret.encode("latin-1")


class Gate:
    """ASGI middleware applying :class:`WebSecurity` to every request."""

    def __init__(self, app: ASGIApp, security: WebSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            return await self._checked(scope, receive, watched)
        except OperationalError:  # the gate's own queries (sessions, audit): the routes' go to the handler below
            if started:
                raise
            _note_database_unavailable()
            return await _respond(_hardened(watched, scope.get("path", ""), self.security.csp), 503, UNAVAILABLE,
                                  "application/json", scope)

    async def _checked(self, scope: Scope, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        send = _hardened(send, path, self.security.csp)
        store = self.security.service.store
        if reason := cross_site(scope, self.security.service.settings.public_origin):
            # Another site or port: no login, logout, upload or read on the user's behalf.
            store.audit(self.security.user_for(scope, touch=False), "route.denied",
                        detail={"path": path[:200], "reason": reason})
            return await _respond(send, 403, b'{"detail":"Cross-origin request refused"}', "application/json",
                                  scope)
        if PUBLIC.match(path):
            return await self.app(scope, receive, send)
        user = self.security.user_for(scope, touch=not PASSIVE.match(path))
        if user is None:
            return await _refuse_anonymous(scope, send)
        if not ALLOWED.match(path):
            store.audit(user, "route.denied", detail={"path": path[:200]})
            return await _respond(send, 404, b'{"detail":"Not Found"}', "application/json", scope)
        scope["loupe.user"] = user.username
        body = None
        if needs_body(scope):
            if (body := await read_body(receive)) is None:
                return await _respond(send, 413, b'{"detail":"Request too large"}', "application/json")
            receive = replay(body, receive)
        keys = gradio_sessions(scope, body)
        if keys and not self.security.bindings.claim(keys, user.username, session_key(session_token(scope))):
            # Another user's Gradio session: its state, results and jobs stay hers.
            store.audit(user, "route.denied", detail={"path": path[:200], "reason": "gradio session of another user"})
            return await _respond(send, 403, b'{"detail":"Not your session"}', "application/json")
        if path == UPLOAD and scope.get("method") == "POST":
            # Only a multipart body python-multipart accepts reaches Gradio, re-written with Loupe's part headers
            # under the one boundary the parser read (no decoy parameter left for another reader).
            if (boundary := multipart_boundary(header(scope, "content-type"))) is None:
                return await _respond(send, 400, b'{"detail":"Not a multipart upload"}', "application/json")
            # A plain (uncompressed) reply lets us note which temp files this session owns.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"accept-encoding",
                                                                                          b"content-type")]
            scope["headers"].append((b"content-type", b"multipart/form-data; boundary=" + boundary))
            send = _note_uploads(send, self.security.session_for(scope))
            return await serve_scrubbed(self.app, scope, receive, send, boundary)
        if not user.is_admin and LISTING.match(path):  # the admin endpoints' names are for admins (apilist.py)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
            send = listing_for_non_admin(send)
        await self.app(scope, receive, send)


def _hardened(send: Callable, path: str, csp: bytes) -> Callable:
    """Security headers on every response; nothing but Gradio's static bundle may be cached."""
    cacheable = path.startswith(("/assets/", "/static/", "/svelte/"))

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            # Gradio's CORS answers (any localhost origin, with credentials) are dropped: same origin only.
            headers = [(k, v) for k, v in message.get("headers", [])
                       if (k.lower() != b"cache-control" or cacheable) and not k.lower().startswith(b"access-control-")
                       and k.lower() != b"content-security-policy"]
            headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                        (b"x-frame-options", b"DENY"), (b"content-security-policy", csp),
                        (b"cross-origin-opener-policy", b"same-origin"),
                        (b"cross-origin-resource-policy", b"same-origin")]
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
    accepts_html = "text/html" in (header(scope, "accept") or "")
    if scope.get("method") == "GET" and accepts_html:
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/login"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await _respond(send, 401, b'{"detail":"Not authenticated"}', "application/json")


def _note_database_unavailable() -> None:
    # Without the driver's text: it names hosts and may quote values.
    log.warning("database unavailable: request answered 503")


async def database_unavailable(request: object, exc: Exception | None) -> Response:
    """The database went away (a restart, a failover): 503, logged once per request; pool_pre_ping reconnects
    once it is back."""
    _note_database_unavailable()
    return Response(UNAVAILABLE, status_code=503, media_type="application/json", headers={"cache-control": "no-store"})


async def _respond(send: Callable, status: int, body: bytes, media_type: str, scope: Scope | None = None) -> None:
    if scope is not None and scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4403 if status == 403 else 4404})
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
