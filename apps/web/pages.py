"""Routes outside Gradio: login, logout, and case images served through an access check."""

from __future__ import annotations

import html
import mimetypes

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from loupe.core.cases.models import User
from loupe.core.errors import AccessDenied, InputRejected, LoupeError
from loupe.core.jobs import JobFailed, QueueFull

from .gate import WebSecurity, cookie_name, is_https, session_token

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;min-height:100vh;
align-items:center;justify-content:center;color:#1f2328}
main{background:#fff;padding:2rem 2.5rem;border-radius:10px;box-shadow:0 2px 12px #0002;width:20rem}
h1{margin:0 0 .2rem;font-size:1.6rem}p.sub{margin:0 0 1.5rem;color:#57606a}
label{display:block;margin:.8rem 0 .3rem;font-weight:600}
input{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #c8ccd1;border-radius:6px;font-size:1rem}
button{margin-top:1.4rem;width:100%;padding:.6rem;border:0;border-radius:6px;background:#e8590c;color:#fff;
font-size:1rem;font-weight:600;cursor:pointer}
.error{background:#fff1f0;border:1px solid #ffa39e;padding:.6rem;border-radius:6px;margin-bottom:.5rem}
"""

_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in to Loupe</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{style}</style></head>
<body><main><h1>Loupe</h1><p class="sub">Log in to continue.</p>{error}
<form method="post" action="/login" autocomplete="off">
<label for="username">User name</label><input id="username" name="username" required autofocus
 autocapitalize="none" spellcheck="false" value="{username}">
<label for="password">Password</label><input id="password" name="password" type="password" required
 autocomplete="current-password">
<button type="submit">Log in</button></form></main></body></html>"""

_LOGOUT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log out of Loupe</title>
<style>{style}</style></head><body><main><h1>Log out?</h1><p class="sub">End your Loupe session on this browser.</p>
<form method="post" action="/logout"><button type="submit" id="logout">Log out</button></form>
<p><a href="/">Back to Loupe</a></p></main></body></html>"""

# Logging out also wipes what the browser kept for this site (storage, caches), so the next person at the
# machine finds no case data. Clear-Site-Data does it where supported; the script covers the rest.
_LOGGED_OUT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Logged out</title>
<style>{style}</style></head><body><main><h1>Logged out</h1><p class="sub">You can close this tab.</p>
<a href="/login">Log in again</a></main><script>
try {{ localStorage.clear(); sessionStorage.clear(); }} catch (e) {{}}
(async () => {{
  try {{ for (const db of await indexedDB.databases()) indexedDB.deleteDatabase(db.name); }} catch (e) {{}}
  try {{ for (const key of await caches.keys()) await caches.delete(key); }} catch (e) {{}}
  document.body.dataset.wiped = "yes";
}})();
</script></body></html>"""


def _login_page(error: str = "", username: str = "", status: int = 200) -> HTMLResponse:
    box = f'<div class="error" role="alert">{html.escape(error)}</div>' if error else ""
    page = _LOGIN.format(style=_STYLE, error=box, username=html.escape(username))
    return HTMLResponse(page, status_code=status)


LOGIN_BODY_MAX = 16 * 1024  # a user name and a password; anything larger is refused before it is parsed


async def _bounded_body(request: Request, limit: int) -> bool:
    """Read the body (kept for ``request.form()``) unless it is longer than ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return False
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return False
    request._body = bytes(body)  # Starlette's form() reads the cached body
    return True


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def build_router(security: WebSecurity) -> APIRouter:
    router = APIRouter()
    service = security.service
    store = service.store

    @router.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        if security.user_for(request.scope) is not None:
            return RedirectResponse("/", status_code=303)
        return _login_page()

    kdf = anyio.CapacityLimiter(4)

    def check_password(username: str, password: str, address: str) -> tuple[User | None, float]:
        """The user if the password is right, else None; or the wait when this name and address are throttled."""
        wait = security.throttle.wait_s(username, address)
        if wait > 0:
            store.audit(None, "login.throttled", detail={"username": username})
            return None, wait
        user = store.authenticate(username, password)  # same cost whether or not the user exists
        if user is None:
            security.throttle.failed(username, address)
        else:
            security.throttle.succeeded(username, address)
        return user, 0.0

    @router.post("/login", include_in_schema=False)
    @router.post("/login/", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not await _bounded_body(request, LOGIN_BODY_MAX):
            return JSONResponse({"detail": "The request is too large."}, status_code=413)
        form = await request.form()
        username = str(form.get("username", ""))[:64]
        password = str(form.get("password", ""))[:1024]
        address = security.client_address(request.scope)  # the trusted proxy's last X-Forwarded-For hop, or the peer
        # scrypt (and the database) off the event loop, a few at a time: a login flood cannot stall other requests
        user, wait = await anyio.to_thread.run_sync(check_password, username, password, address, limiter=kdf)
        if wait > 0:
            message = f"Too many failed attempts. Try again in {int(wait) + 1} s."
            if _wants_html(request):
                return _login_page(message, username, status=429)
            return JSONResponse({"detail": message}, status_code=429, headers={"retry-after": str(int(wait) + 1)})
        if user is None:
            if _wants_html(request):
                return _login_page("Incorrect user name or password.", username, status=401)
            return JSONResponse({"detail": "Incorrect user name or password."}, status_code=401)
        security.end_session(session_token(request.scope))  # a fresh token on every login
        token = security.sessions.create(user.username, user.session_epoch)  # ends at her next account change
        response: Response = (RedirectResponse("/", status_code=303) if _wants_html(request)
                              else JSONResponse({"success": True}))
        https = is_https(request.scope)  # over HTTPS the __Host- name: Secure, Path=/ and no Domain, enforced
        response.set_cookie(cookie_name(https), token, httponly=True, samesite="strict", path="/", secure=https)
        return response

    @router.get("/logout", include_in_schema=False)
    def logout_form() -> Response:
        # A link or an image can reach a GET: it only asks. Logging out is a POST from this origin (the gate).
        return HTMLResponse(_LOGOUT.format(style=_STYLE))

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        user = security.user_for(request.scope, touch=False)
        security.end_session(session_token(request.scope))
        if user is not None:
            store.audit(user, "logout")
        response = HTMLResponse(_LOGGED_OUT.format(style=_STYLE))
        https = is_https(request.scope)
        response.delete_cookie(cookie_name(https), path="/", secure=https, httponly=True, samesite="strict")
        response.headers["clear-site-data"] = '"cache", "storage"'
        return response

    @router.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return JSONResponse({"status": "ok"})  # the process serves HTTP; /readyz (metrics.py) asks more

    @router.get("/case-assets/{asset_id}", include_in_schema=False)
    def case_asset(asset_id: int, request: Request) -> Response:
        user = security.user_for(request.scope)
        if user is None:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            asset, data = store.read_asset(user, asset_id)  # audited: asset.read / asset.denied
        except AccessDenied:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        extension = mimetypes.guess_extension(asset.media_type) or ""
        return Response(data, media_type=asset.media_type,
                        headers={"content-disposition": f'inline; filename="case-image-{asset_id}{extension}"'})

    @router.get("/case-export/{case_id}/{name}", include_in_schema=False)
    def case_export(case_id: int, name: str, request: Request) -> Response:
        user = security.user_for(request.scope)
        if user is None:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            data, media_type = service.export_case(user, case_id, name)  # audited: case.export / denial
        except (JobFailed, QueueFull) as exc:  # the worker's limits, or the user's queue: say which, retry later
            return JSONResponse({"detail": str(exc)}, status_code=503)
        except InputRejected as exc:  # the case is the user's, and has nothing in this format: say why
            return JSONResponse({"detail": str(exc)}, status_code=409)
        except LoupeError:  # no access, no such case, or no such format: the same answer for all
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        # The format's name is its file extension (checked by export_case against the domain's formats).
        return Response(data, media_type=media_type,
                        headers={"content-disposition": f'attachment; filename="case-{case_id}.{name}"'})

    return router
