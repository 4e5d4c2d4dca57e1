"""Behind a reverse proxy: whose word is believed (the trusted user header, X-Forwarded-For), and login
throttling that strangers can neither dodge by rotating X-Forwarded-For nor use to lock someone else out.

The contract (docs/security.md): the user header is believed only on a connection from
LOUPE_TRUSTED_PROXIES that also carries the shared secret, exactly once each; the user must exist. A request
with the header decides by it alone (a cookie does not count). X-Forwarded-For is read only from a trusted
proxy (with the secret, when one is set) and only its last hop, the one the proxy appended.
The last test runs docs/nginx-loupe.conf with Debian's nginx in front of the app."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import httpx
import pytest
from helpers import free_port
from nginxsite import running_nginx, site_config
from webapp import serve

from loupe.apps.web.gate import COOKIE, PROXY_SECRET_HEADER, WebSecurity
from loupe.apps.web.server import ForwardedScheme
from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings
from loupe.core.errors import LoupeError

SECRET = "s3cret-shared-with-the-proxy-0123456789"
USERS = {"root": "admin", "alice": "user", "bob": "user", "carol": "user"}
SSO = dict(trusted_user_header="X-Remote-User", trusted_proxies=("127.0.0.1",), trusted_proxy_secret=SECRET)


def _scope(headers: list[tuple[str, str]], peer: str = "127.0.0.1") -> dict:
    return {"type": "http", "path": "/config", "scheme": "http", "client": (peer, 50000),
            "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]}


def _security(settings: Settings, users: dict[str, str] | None = None, **options: object) -> WebSecurity:
    settings = Settings(home=settings.home, database_url=None, model="unused", **options)
    settings.ensure_dirs()
    store = CaseStore(open_database(settings.db_url), AssetStore(settings.assets_dir))
    for name, role in (users or {}).items():
        store.add_user(name, f"{name}-password", role)
    return WebSecurity(SimpleNamespace(settings=settings, store=store))  # type: ignore[arg-type]


def _who(security: WebSecurity, headers: list[tuple[str, str]], peer: str = "127.0.0.1") -> str | None:
    user = security.user_for(_scope(headers, peer))
    return user.username if user else None


# -- the user header ----------------------------------------------------------------------------


def test_the_user_header_needs_a_trusted_peer_and_the_secret(sqlite_settings):
    security = _security(sqlite_settings, USERS, **SSO)
    proxied = [("X-Loupe-Proxy-Secret", SECRET)]
    assert _who(security, [("X-Remote-User", "alice"), *proxied]) == "alice"
    assert _who(security, [("X-Remote-User", "root")]) is None  # any local process, no secret
    assert _who(security, [("X-Remote-User", "root"), ("X-Loupe-Proxy-Secret", SECRET[:-1] + "x")]) is None
    assert _who(security, [("X-Remote-User", "root"), *proxied], peer="10.1.2.3") is None  # not from the proxy
    assert _who(security, [("X-Remote-User", "root"), *proxied, *proxied]) is None  # the secret twice


def test_a_repeated_user_header_is_refused(sqlite_settings):
    security = _security(sqlite_settings, USERS, **SSO)
    twice = [("X-Remote-User", "alice"), ("X-Remote-User", "root"), (PROXY_SECRET_HEADER, SECRET)]
    assert _who(security, twice) is None
    assert _who(security, [("X-Remote-User", "alice, root"), (PROXY_SECRET_HEADER, SECRET)]) is None


def test_the_header_user_must_already_exist_and_be_active(sqlite_settings):
    security = _security(sqlite_settings, USERS, **SSO)
    store = security.service.store
    assert _who(security, [("X-Remote-User", "mallory"), (PROXY_SECRET_HEADER, SECRET)]) is None
    assert "mallory" not in [u.username for u in store.list_users()]  # never created on the fly
    store.set_active(None, "bob", False)
    assert _who(security, [("X-Remote-User", "bob"), (PROXY_SECRET_HEADER, SECRET)]) is None


def test_the_header_decides_over_a_cookie_session(sqlite_settings):
    security = _security(sqlite_settings, USERS, **SSO)
    bob = security.service.store.authenticate("bob", "bob-password")
    cookie = ("Cookie", f"{COOKIE}={security.sessions.create('bob', bob.session_epoch)}")
    assert _who(security, [cookie]) == "bob"  # no header: the session counts
    assert _who(security, [cookie, ("X-Remote-User", "alice"), (PROXY_SECRET_HEADER, SECRET)]) == "alice"
    assert _who(security, [cookie, ("X-Remote-User", "root")]) is None  # a header the proxy did not vouch for
    assert _who(security, [cookie]) == "bob"  # ... refuses that request and leaves the session alone


def test_single_sign_on_without_a_proxy_or_a_secret_does_not_start(sqlite_settings, monkeypatch):
    for options in (dict(SSO, trusted_proxy_secret=None), dict(SSO, trusted_proxies=()),
                    dict(SSO, trusted_proxy_secret="short")):
        with pytest.raises(LoupeError, match="secret|LOUPE_TRUSTED"):
            _security(sqlite_settings, **options)
    with pytest.raises(LoupeError, match="LOUPE_TRUSTED_PROXIES"):
        _security(sqlite_settings, trusted_proxies=("not-an-address",))
    secret_file = sqlite_settings.trusted_proxy_secret_file  # the secret may live in a file instead
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(SECRET + "\n")
    security = _security(sqlite_settings, USERS, **dict(SSO, trusted_proxy_secret=None))
    assert _who(security, [("X-Remote-User", "alice"), (PROXY_SECRET_HEADER, SECRET)]) == "alice"
    monkeypatch.delenv("LOUPE_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == ()  # no proxy is trusted unless named


# -- the client's address -----------------------------------------------------------------------


def test_the_client_address_is_the_last_hop_and_only_from_a_trusted_proxy(sqlite_settings):
    plain = _security(sqlite_settings, trusted_proxies=("127.0.0.1", "10.8.0.0/16"))
    xff = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")]
    assert plain.client_address(_scope(xff, peer="203.0.113.9")) == "203.0.113.9"  # not a proxy: the peer
    assert plain.client_address(_scope(xff)) == "198.51.100.7"  # the hop the proxy appended
    assert plain.client_address(_scope(xff, peer="10.8.3.4")) == "198.51.100.7"  # a listed network
    assert plain.client_address(_scope(xff, peer="::ffff:127.0.0.1")) == "198.51.100.7"
    two = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "1.1.1.1, 192.0.2.1")]
    assert plain.client_address(_scope(two)) == "192.0.2.1"
    assert plain.client_address(_scope([])) == "127.0.0.1"
    secured = _security(sqlite_settings, **SSO)  # with a secret, only a request carrying it is the proxy's
    assert secured.client_address(_scope(xff)) == "127.0.0.1"
    assert secured.client_address(_scope([*xff, (PROXY_SECRET_HEADER, SECRET)])) == "198.51.100.7"
    assert _security(sqlite_settings).client_address(_scope(xff)) == "127.0.0.1"  # no proxy configured


def test_the_scheme_comes_from_a_trusted_proxy_only(sqlite_settings):
    security = _security(sqlite_settings, trusted_proxies=("127.0.0.1",))
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["scheme"])

    wrapped = ForwardedScheme(app, security)  # type: ignore[arg-type]
    for peer, proto in (("127.0.0.1", "https"), ("203.0.113.9", "https"), ("127.0.0.1", "gopher"),
                        ("127.0.0.1", None)):
        headers = [("X-Forwarded-Proto", proto)] if proto else []
        asyncio.run(wrapped(_scope(headers, peer), None, None))
    assert seen == ["https", "http", "http", "http"]


# -- throttling through the real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("proxy") / "home", None, USERS, **SSO) as app:
        yield app


@pytest.fixture(autouse=True)
def _fresh_throttle(request):
    if "served" in request.fixturenames:
        request.getfixturevalue("served").app.security.throttle.clear()


def _login(client: httpx.Client, name: str, password: str, headers: dict[str, str] | None = None) -> int:
    return client.post("/login", data={"username": name, "password": password}, headers=headers).status_code


def test_rotating_x_forwarded_for_does_not_dodge_the_address_limit(served):
    client = served.http()
    codes = [_login(client, f"guess{i}", "wrong-password", {"X-Forwarded-For": f"198.51.100.{i}"})
             for i in range(25)]
    assert codes[:20] == [401] * 20 and 429 in codes[20:]  # one address (the peer) for all of them


def test_a_stranger_cannot_lock_the_account_for_its_owner(served):
    client = served.http()
    proxy = {PROXY_SECRET_HEADER: SECRET}
    stranger = [_login(client, "carol", f"wrong-{i}", {**proxy, "X-Forwarded-For": "203.0.113.66"})
                for i in range(12)]
    assert stranger[:5] == [401] * 5 and stranger[-1] == 429
    assert _login(client, "carol", "carol-password", {**proxy, "X-Forwarded-For": "203.0.113.66"}) == 429
    assert _login(client, "carol", "carol-password", {**proxy, "X-Forwarded-For": "10.0.0.5"}) == 200


def test_password_checks_run_off_the_event_loop(served, monkeypatch):
    store = served.service.store
    real = store.authenticate
    on_loop: list[bool] = []

    def authenticate(username: str, password: str):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(username, password)

    monkeypatch.setattr(store, "authenticate", authenticate)
    assert _login(served.http(), "alice", "alice-password") == 200
    assert _login(served.http(), "alice", "wrong-password") == 401
    assert on_loop == [False, False]


# -- nginx in front -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx(served, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nginx")
    (folder / "htpasswd").write_text("alice:{PLAIN}alice-sso-password\nmallory:{PLAIN}mallory-sso-password\n")
    app_port, port = int(served.url.rsplit(":", 1)[1].strip("/")), free_port()
    site = site_config(port, (app_port, app_port), folder / "htpasswd", SECRET)  # both upstream lines: this app
    with running_nginx(folder, site, port) as url:
        yield url


def _browser(nginx: str, name: str | None = "alice") -> httpx.Client:
    """A client on "another machine": 127.0.0.2, so nginx's X-Forwarded-For names an address Loupe does not trust."""
    return httpx.Client(base_url=nginx, auth=(name, f"{name}-sso-password") if name else None, timeout=60,
                        transport=httpx.HTTPTransport(local_address="127.0.0.2"))


def test_signed_in_through_nginx(nginx, served):
    sso = _browser(nginx)
    assert sso.get("/config").status_code == 200
    assert sso.get("/gradio_api/user").json() == "alice"
    # What the client says about itself is replaced by nginx, never passed on.
    spoofed = {"X-Remote-User": "root", PROXY_SECRET_HEADER: "guess", "X-Forwarded-Proto": "https"}
    assert sso.get("/gradio_api/user", headers=spoofed).json() == "alice"
    assert _browser(nginx, None).get("/config").status_code == 401  # nginx asks for credentials
    # mallory passes nginx but has no Loupe account: not created, refused.
    mallory = _browser(nginx, "mallory")
    assert mallory.get("/config").status_code == 401
    assert "mallory" not in [u.username for u in served.service.store.list_users()]


def test_going_around_nginx_without_the_secret_is_refused(nginx, served):
    direct = served.http()
    assert direct.get("/config", headers={"X-Remote-User": "alice"}).status_code == 401
    assert direct.get("/config", headers={"X-Remote-User": "root", PROXY_SECRET_HEADER: "guess"}).status_code == 401


def test_rotating_x_forwarded_for_through_nginx_does_not_dodge_the_throttle(nginx, served):
    sso = _browser(nginx)
    codes = [_login(sso, f"guess{i}", "wrong-password", {"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(25)]
    assert codes[:20] == [401] * 20 and 429 in codes[20:]  # nginx appended the real address: one address
    assert re.search(r"Try again in \d+ s", sso.post("/login", data={"username": "x", "password": "y"}).text)
    assert _login(served.http(), "carol", "carol-password") == 200  # 127.0.0.1 is another address: not locked
