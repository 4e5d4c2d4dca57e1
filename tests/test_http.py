"""HTTP-level access control: every route and every Gradio API endpoint, called anonymously and as a
second user with the first user's ids and file paths. Nothing of another user's case comes back, and
every denial is audited."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from gradio_client import handle_file
from helpers import png_bytes
from starlette.routing import Mount
from webapp import serve

from loupe.core.cases.models import AuditEvent

SECRET_TITLE = "alice-secret-title"
SECRET_QUESTION = "alice secret question about the lesion"
USERS = {"alice": "user", "bob": "user", "root": "admin"}
DENIALS = {"case.denied", "asset.denied", "admin.denied", "route.denied", "signoff.denied"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """alice owns a case with an image, a question and an answer; bob is a second, unrelated user."""
    tmp = tmp_path_factory.mktemp("http")
    with serve(tmp / "home", tiny_model_dir("smolvlm"), USERS) as served:
        alice = served.client("alice")
        image = tmp / "scan.png"
        image_bytes = png_bytes((52, 31), (7, 77, 177))
        image.write_bytes(image_bytes)
        out = alice.predict(handle_file(str(image)), SECRET_TITLE, api_name="/general_create_case")
        case_id = int(out[5].split()[1])
        job = alice.submit(case_id, SECRET_QUESTION, api_name="/general_ask")
        job.result()
        case = served.service.store.open_case(served.service.user("alice"), case_id)
        stored = served.service.store.assets.read(case.assets[0].sha256)
        pending = served.http("alice").post("/gradio_api/upload", files={"files": ("x.png", stored)}).json()[0]
        yield {"served": served, "case_id": case_id, "asset_id": case.assets[0].id,
               "answer_id": case.messages[1].id, "answer": case.messages[1].content, "image": stored,
               "blob_path": str(served.service.store.assets.path_for(case.assets[0].sha256)),
               "upload_path": pending}


def _secrets(world) -> list[bytes]:
    return [SECRET_TITLE.encode(), SECRET_QUESTION.encode(), world["image"], world["answer"][:40].encode()]


def _leaks(world, body: bytes) -> list[bytes]:
    return [s for s in _secrets(world) if s and s in body]


def _routes(app) -> list[tuple[str, str]]:
    """(method, path template) for every route of the app, Gradio's mounted sub-app included."""
    found: list[tuple[str, str]] = []

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's wrapper around an included router
                walk(route.original_router.routes, prefix + route.original_router.prefix)
            elif isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif hasattr(route, "path"):
                for method in sorted(getattr(route, "methods", None) or {"GET"}):
                    found.append((method, prefix + route.path))

    walk(app.routes, "")
    return sorted(set(found))


FILE_ROUTES = ("file", "proxy", "case-assets", "case-export", "case-tiles", "case-stack", "case-map")


def _fill(template: str, world) -> list[str]:
    """Concrete paths for a template, using alice's ids and files wherever a parameter fits."""
    values = {"asset_id": str(world["asset_id"]), "case_id": str(world["case_id"]), "name": "md",
              "api_name": "general_open_case", "size": "64",
              "session_hash": uuid.uuid4().hex, "event_id": uuid.uuid4().hex, "record_id": "1", "id": "1",
              "endpoint": "general_open_case", "run": "1", "component_id": "1", "segment_id": "1", "ext": "ts",
              "environment": "x", "type": "x", "file_name": "x", "url_path": "x"}
    paths = [world["blob_path"], world["upload_path"]]
    if re.search(r"\{[^}]*:path\}", template):
        return [re.sub(r"\{[^}]*:path\}", p.lstrip("/") if template.endswith("/{path:path}") else p, template)
                for p in paths]
    return [re.sub(r"\{(\w+)[^}]*\}", lambda m: values.get(m.group(1), "1"), template)]


def _denials(served, user: str) -> int:
    user_id = served.service.user(user).id
    with served.service.store.sessions() as s:
        return sum(1 for e in s.query(AuditEvent).filter(AuditEvent.user_id == user_id) if e.action in DENIALS)


def test_anonymous_requests_to_every_route_are_refused(world):
    served = world["served"]
    anonymous = served.http()
    public = {"/login", "/login/", "/logout", "/healthz", "/readyz", "/metrics"}  # /metrics: loopback or token
    checked = 0
    for method, template in _routes(served.app.routes_app):
        for path in _fill(template, world):
            response = anonymous.request(method, path, headers={"accept": "application/json"})
            assert not _leaks(world, response.content), (method, path)
            if template not in public:
                assert response.status_code == 401, (method, path, response.status_code)
                checked += 1
    assert checked > 60  # Gradio's routes really were enumerated
    page = anonymous.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_second_user_gets_nothing_from_any_route(world):
    served = world["served"]
    bob = served.http("bob")
    before = _denials(served, "bob")
    file_routes = 0
    for method, template in _routes(served.app.routes_app):
        if template in ("/logout", "/login", "/login/"):
            continue
        for path in _fill(template, world):
            response = bob.request(method, path, headers={"accept": "application/json"})
            assert not _leaks(world, response.content), (method, path, response.status_code)
            if any(part in template for part in FILE_ROUTES):
                assert response.status_code == 404, (method, path, response.status_code)
                file_routes += 1
    assert file_routes >= 14  # the tiles, frames and map routes among them
    # Each refused file read left an audit event naming bob.
    assert _denials(served, "bob") - before >= file_routes


def test_owner_reads_her_image_only_through_the_checked_route(world):
    served = world["served"]
    alice = served.http("alice")
    assert alice.get(f"/case-assets/{world['asset_id']}").content == world["image"]
    # Gradio's own file server is closed even to the owner: case bytes have exactly one way out.
    for path in (world["blob_path"], world["upload_path"]):
        assert alice.get(f"/gradio_api/file={path}").status_code == 404
    reads = [e for e in served.service.store.audit_events(world["case_id"]) if e.action == "asset.read"]
    assert reads and reads[-1].detail == {"asset_id": world["asset_id"]}


def _argument(name: str, world, tmp_path) -> object:
    if name in ("case_id",):
        return world["case_id"]
    if name in ("message_id",):
        return world["answer_id"]
    if name in ("read_id",):  # a report version: alice's case has none, and bob may not sign any
        return 1
    if name in ("data", "path", "upload"):
        image = tmp_path / "bob.png"
        image.write_bytes(png_bytes((8, 8)))
        return handle_file(str(image))
    if name in ("show_archived", "signing", "with_model"):
        return False
    if name == "confirmation":
        return "PURGE"
    if name == "verdict_value":
        return "accepted"
    if name == "keep_share":
        return 1.0
    if name == "detail_level":
        return "low"
    if name == "username":
        return "bob"
    if name == "role_value":
        return "admin"
    if name == "report_text":
        return "FINDINGS: Left effusion.\nIMPRESSION: Right effusion."
    if name == "preset_name":
        return "lung"
    if name == "band_preset":
        return "true colour"
    if name in ("frame_number", "center_value", "width_value", "zoom_value", "x_value", "y_value"):
        return 1
    return ""


def test_second_user_gets_nothing_from_any_gradio_endpoint(world, tmp_path):
    served = world["served"]
    bob = served.client("bob")
    endpoints = bob.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert len(endpoints) >= 15
    before = _denials(served, "bob")
    model_before = served.service.slot.status
    off_screen = 0
    for name, spec in endpoints.items():
        args = [_argument(p["parameter_name"], world, tmp_path) for p in spec["parameters"]]
        result = bob.predict(*args, api_name=name)
        body = repr(result).encode()
        # A write names its case (as the page sends it): alice's is never on bob's screen, so it is refused there.
        off_screen += f"This was sent for case {world['case_id']}, but the screen shows" in repr(result)
        assert not _leaks(world, body), name
        # ann's case header ("Case 1: ...") never shows (a bare "1:" would match clock times like 21:02)
        assert f"Case {world['case_id']}:" not in repr(result) or name.endswith("create_case"), name
    # The admin-only endpoints were refused: the model did not change and bob is no admin.
    assert served.service.slot.status == model_before
    assert served.service.user("bob").role == "user"
    assert off_screen >= 6  # ask, review, share, unshare, archive, restore (and the report panel's writes)
    assert _denials(served, "bob") - before >= 4  # every domain's open
    assert bob.predict(world["case_id"], api_name="/general_open_case")[5] == f"⚠️ Case {world['case_id']} not found."
    # With no case on his screen (as his page would send it), alice's answer id reaches the store: not found.
    status = bob.predict(world["answer_id"], "accepted", "", False, None, api_name="/general_review")[0]
    assert status == "⚠️ Answer not found."  # and nothing about which case the answer belongs to


def test_api_docs_monitoring_and_run_history_are_off(world):
    served = world["served"]
    root = served.http("root")
    for path in ("/openapi.json", "/docs", "/redoc", "/monitoring", "/monitoring/summary", "/gradio_api/runs",
                 "/gradio_api/openapi.json", "/gradio_api/run-history/records"):
        assert root.get(path).status_code == 404, path
    config = root.get("/config").json()
    assert config["footer_links"] == [] and not config.get("run_history")


def test_responses_are_not_cached_and_carry_security_headers(world):
    alice = world["served"].http("alice")
    for path in ("/", "/config", f"/case-assets/{world['asset_id']}"):
        response = alice.get(path, headers={"accept": "text/html"})
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"


def test_logout_ends_the_session_and_clears_the_browser(world):
    served = world["served"]
    alice = served.http("alice")
    assert alice.get("/config").status_code == 200
    upload = alice.post("/gradio_api/upload", files={"files": ("Roe_Jane.png", png_bytes((9, 9)))}).json()[0]
    assert upload.endswith("/upload.png")  # the browser's file name never reached the disk
    response = alice.post("/logout")  # a GET only asks (tests/test_csrf.py)
    assert response.headers["clear-site-data"] == '"cache", "storage"'
    assert "localStorage.clear()" in response.text
    assert alice.get("/config").status_code == 401
    assert not any(str(p) == upload for p in served.files())  # its pending upload is gone too


def test_sessions_expire_when_idle(world):
    served = world["served"]
    alice = served.http("alice")
    sessions = served.app.security.sessions
    idle = sessions.idle_s
    sessions.idle_s = 0.2
    try:
        assert alice.get("/config").status_code == 200
        time.sleep(0.5)
        assert alice.get("/config").status_code == 401
    finally:
        sessions.idle_s = idle


def test_abandoned_uploads_are_swept(world):
    served = world["served"]
    bob = served.http("bob")
    path = bob.post("/gradio_api/upload", files={"files": ("SMITH_ANNA_1980-01-01.jpg", b"\xff\xd8 not much")})
    assert "SMITH" not in path.text and not [p for p in served.home.rglob("*SMITH*")]
    sweeper = served.app.security.sweeper
    ttl = sweeper.max_age_s
    sweeper.max_age_s = -1  # everything counts as abandoned
    try:
        served.app.security.housekeeping()
    finally:
        sweeper.max_age_s = ttl
    assert not served.files()


def test_login_is_rate_limited_per_user_and_address(tmp_path):
    with serve(tmp_path / "home", None, {"carol": "user"}) as served:
        client = served.http()
        codes = [client.post("/login", data={"username": "carol", "password": f"wrong-{i}"}).status_code
                 for i in range(30)]
        assert codes[:5] == [401] * 5 and 429 in codes
        right = client.post("/login", data={"username": "carol", "password": "carol-password"})
        assert right.status_code == 429 and "Try again in" in right.json()["detail"]
        actions = [e.action for e in served.service.store.audit_events()]
        assert actions.count("login.failed") <= 10 and "login.throttled" in actions

