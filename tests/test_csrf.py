"""Requests a user's browser sends on behalf of another page, and Gradio sessions replayed by another user.

The hostile pages are served from another loopback port: to a browser that is another origin but the same
site, so a SameSite=Strict cookie still goes along. Only Loupe's own origin may log in, log out, upload or read;
a Gradio session hash is its first user's. Non-browser clients (no Origin header) work as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from helpers import OtherPort, png_bytes
from starlette.testclient import TestClient
from test_browser import CHROMIUM_ARGS, _login, chromium  # noqa: F401 - the fixture is used by name
from webapp import serve

from loupe.apps.web.server import create_app
from loupe.core.cases.models import AuditEvent

USERS = {"alice": "user", "bob": "user", "mallory": "user"}


def _evil_pages(app: str) -> dict[str, str]:
    login = (f'<form method="post" action="{app}login"><input name="username" value="mallory">'
             '<input name="password" value="mallory-password"></form><script>document.forms[0].submit()</script>')
    return {
        "/login": f"<!doctype html><html><body>{login}</body></html>",
        "/logout-image": f'<!doctype html><html><body><img src="{app}logout"><img src="{app}logout/"></body></html>',
        "/logout-form": (f'<!doctype html><html><body><form method="post" action="{app}logout"></form>'
                         "<script>document.forms[0].submit()</script></body></html>"),
        "/blank": "<!doctype html><html><body>another app on this host</body></html>",
    }


@pytest.fixture
def served(tmp_path) -> Iterator:
    with serve(tmp_path / "home", None, USERS) as running:
        yield running


def _denials(served, reason: str) -> int:  # noqa: ANN001
    with served.service.store.sessions() as s:
        events = s.query(AuditEvent).filter(AuditEvent.action == "route.denied").all()
    return sum(1 for e in events if reason in str((e.detail or {}).get("reason", "")))


@pytest.mark.browser
def test_pages_on_another_port_cannot_log_in_log_out_read_or_upload(served, chromium):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright
    evil = OtherPort(_evil_pages(served.url))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context()
            page = context.new_page()
            # Login CSRF: the auto-submitted form does not sign this browser in as mallory.
            page.goto(f"{evil.url}/login")
            page.wait_for_url(f"{served.url}login")
            assert not context.cookies(served.url)
            page.goto(served.url)
            expect(page).to_have_url(f"{served.url}login")

            _login(page, served.url, "alice")
            expect(page.locator("#whoami")).to_contain_text("alice", timeout=30_000)
            # Logout CSRF: an image and an auto-submitted form on the other port leave alice signed in.
            other = context.new_page()
            other.goto(f"{evil.url}/logout-image")  # returns once the images are loaded or failed
            other.goto(f"{evil.url}/logout-form")
            other.wait_for_url(f"{served.url}logout")
            # The other port cannot read /config or upload into alice's session either.
            other.goto(f"{evil.url}/blank")
            read = other.evaluate("""app => fetch(app + 'config', {credentials: 'include'})
                .then(r => r.text()).then(t => 'read ' + t.length, () => 'refused')""", served.url)
            upload = other.evaluate("""app => { const form = new FormData();
                form.append('files', new Blob(['x'.repeat(64)], {type: 'image/png'}), 'x.png');
                return fetch(app + 'gradio_api/upload', {method: 'POST', body: form, credentials: 'include'})
                .then(r => r.text()).then(t => 'uploaded ' + t, () => 'refused'); }""", served.url)
            assert (read, upload) == ("refused", "refused")
            assert not served.files()
            page.reload()
            expect(page.locator("#whoami")).to_contain_text("alice", timeout=30_000)
            # The app's own Log out button still works: a POST from this origin.
            page.locator("#logout").click()
            expect(page.locator("body")).to_have_attribute("data-wiped", "yes", timeout=15_000)
            page.goto(served.url)
            expect(page).to_have_url(f"{served.url}login")
            browser.close()
    finally:
        evil.close()
    assert _denials(served, "origin") >= 3


def test_login_and_logout_need_the_apps_own_origin(served):
    own, other = served.url.rstrip("/"), "http://127.0.0.1:1"
    client = served.http()
    form = {"username": "alice", "password": "alice-password"}
    for headers in ({"origin": other}, {"origin": "null"}, {"origin": own, "sec-fetch-site": "same-site"},
                    {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}):
        response = client.post("/login", data=form, headers=headers)
        assert response.status_code == 403 and "set-cookie" not in response.headers, headers
    assert client.post("/login", data=form, headers={"origin": own, "sec-fetch-site": "same-origin"}).status_code == 200
    assert client.get("/config").status_code == 200
    # A link to /logout only asks; a POST from elsewhere is refused; the app's own POST logs out.
    page = client.get("/logout", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert page.status_code == 200 and 'method="post"' in page.text and "clear-site-data" not in page.headers
    assert client.post("/logout", headers={"origin": other}).status_code == 403
    assert client.get("/logout", headers={"sec-fetch-site": "same-site", "sec-fetch-dest": "image",
                                          "sec-fetch-mode": "no-cors"}).status_code == 403
    assert client.get("/config").status_code == 200
    assert client.post("/logout", headers={"origin": own}).headers["clear-site-data"] == '"cache", "storage"'
    assert client.get("/config").status_code == 401
    # Clients that are not browsers send no Origin: unaffected.
    assert served.http("bob").get("/config").status_code == 200


def test_other_origins_get_no_cors_and_every_response_a_strict_csp(served):
    alice = served.http("alice")
    other = {"origin": "http://localhost:1", "accept": "text/html"}
    for path in ("/config", "/gradio_api/info", "/"):
        response = alice.get(path, headers=other)
        assert response.status_code == 403, path
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], path
    preflight = alice.options("/gradio_api/upload", headers={**other, "access-control-request-method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in alice.get("/config").headers
    anonymous = httpx.Client(base_url=served.url)
    responses = [alice.get("/"), alice.get("/config"), alice.get("/login"), alice.get("/no-such-route"),
                 anonymous.get("/config"), anonymous.get("/login"), alice.get("/theme.css"),
                 alice.post("/gradio_api/upload", files={"files": ("x.png", png_bytes((8, 8)))})]
    for response in responses:
        assert len(response.headers.get_list("content-security-policy")) == 1, response.url  # set once
        csp = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
        assert csp["img-src"] == "'self' data: blob:" and csp["connect-src"] == "'self'", response.url
        assert csp["form-action"] == "'self'" and csp["frame-ancestors"] == "'none'"
        assert csp["object-src"] == "'none'" and csp["default-src"] == "'self'"


def test_session_cookie_is_host_only_and_secure_over_https(tmp_path):
    from loupe.apps.service import LoupeService
    from loupe.core.config import Settings
    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    service.store.add_user("alice", "alice-password", "user")
    gate, security = create_app(service)
    form = {"username": "alice", "password": "alice-password"}
    with TestClient(gate, base_url="http://127.0.0.1") as plain:
        cookie = plain.post("/login", data=form).headers["set-cookie"].lower()
        assert cookie.startswith("loupe_session=") and "httponly" in cookie and "samesite=strict" in cookie
        assert "path=/" in cookie and "secure" not in cookie and "domain" not in cookie
    with TestClient(gate, base_url="https://loupe.example") as tls:
        response = tls.post("/login", data=form, headers={"origin": "https://loupe.example"})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-loupe_session=")
        lowered = cookie.lower()
        assert "secure" in lowered and "path=/" in lowered and "httponly" in lowered and "domain" not in lowered
        token = cookie.split(";")[0].split("=", 1)[1]
        tls.cookies.clear()
        # Over HTTPS only the __Host- cookie counts: a plain one could have been planted by another port or host.
        assert tls.get("/config", cookies={"loupe_session": token}).status_code == 401
        assert tls.get("/config", cookies={"__Host-loupe_session": token}).status_code == 200
        out = tls.post("/logout", cookies={"__Host-loupe_session": token}, headers={"origin": "https://loupe.example"})
        assert "__Host-loupe_session=" in out.headers["set-cookie"] and "secure" in out.headers["set-cookie"].lower()
    security.shutdown()


def test_a_gradio_session_is_its_first_users_only(served):
    alice = served.client("alice")
    alice.predict(api_name="/model_status")
    stolen = alice.session_hash
    bob = served.client("bob")
    bob.session_hash = stolen
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises whatever the failed join gives
        bob.predict(api_name="/model_status")
    http = served.http("bob")
    config = http.get("/config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "model_status")
    join = {"data": [], "fn_index": fn_index, "session_hash": stolen, "event_data": None, "trigger_id": None}
    assert http.post("/gradio_api/queue/join", json=join).status_code == 403  # would overwrite her state
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": stolen}) as stream:
        assert stream.status_code == 403  # would read her results
    with http.stream("GET", f"/gradio_api/heartbeat/{stolen}") as stream:
        assert stream.status_code == 403
    cancel = {"session_hash": stolen, "fn_index": fn_index, "event_id": "x"}
    assert http.post("/gradio_api/cancel", json=cancel).status_code == 403  # would cancel her job
    assert http.post("/gradio_api/queue/join", content=b"{" + b" " * 5 * 2**20 + b"}",
                     headers={"content-type": "application/json"}).status_code == 413
    # alice's tab goes on; bob's own session works; each refusal is audited.
    assert alice.predict(api_name="/model_status")
    assert served.client("bob").predict(api_name="/model_status")
    assert _denials(served, "gradio session of another user") >= 5
    # Her uploads' progress ids are hers too.
    upload = served.http("alice").post("/gradio_api/upload", params={"upload_id": "alice-upload"},
                                       files={"files": ("x.png", png_bytes((8, 8)))})
    assert upload.status_code == 200
    assert http.get("/gradio_api/upload_progress", params={"upload_id": "alice-upload"}).status_code == 403
