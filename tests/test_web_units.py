"""Web security parts without a server: sessions, login throttle, upload name scrubbing, temp sweeping."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request

from loupe.apps.web.sessions import LoginThrottle, SessionStore
from loupe.apps.web.uploads import (
    _HOLD,
    Message,
    TempSweeper,
    multipart_boundary,
    neutral_name,
    scrub_filenames,
)
from loupe.core.cases.db import open_database
from loupe.core.cases.models import WebSession

PHI_NAME = "SMITH_ANNA_1980-01-01.jpg"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- sessions (in the database: tests/test_sessions_db.py covers several processes) ----------------


@pytest.fixture
def db(db_url: str):
    return open_database(db_url)


def test_session_expires_when_idle_but_activity_keeps_it_alive(db):
    clock = FakeClock()
    sessions = SessionStore(db, idle_s=60, max_age_s=3600, clock=clock)
    token = sessions.create("alice")
    for _ in range(5):
        clock.advance(50)
        assert sessions.get(token).username == "alice"  # each request resets the idle timer
    clock.advance(61)
    assert sessions.get(token) is None
    assert sessions.get(None) is None and sessions.get("") is None
    assert sessions.get("forged-token") is None


def test_session_ends_at_its_absolute_age_even_when_active(db):
    clock = FakeClock()
    sessions = SessionStore(db, idle_s=60, max_age_s=300, clock=clock)
    token = sessions.create("alice")
    for _ in range(10):
        clock.advance(30)
        assert sessions.get(token) is not None
    clock.advance(1)  # 301 s after login, last seen 1 s ago
    assert sessions.get(token) is None


def test_passive_requests_do_not_extend_a_session(db):
    clock = FakeClock()
    sessions = SessionStore(db, idle_s=60, max_age_s=3600, clock=clock)
    token = sessions.create("alice")
    for _ in range(2):
        clock.advance(25)
        assert sessions.get(token, touch=False) is not None  # heartbeats see the session ...
    clock.advance(15)
    assert sessions.get(token) is None  # ... but 65 s without real activity ended it


def test_activity_is_written_at_most_once_a_step(db):
    clock = FakeClock()
    sessions = SessionStore(db, idle_s=600, max_age_s=3600, clock=clock)
    assert sessions.touch_step_s == 30  # a tenth of the idle time, at most 30 s
    token = sessions.create("alice")
    clock.advance(29)
    assert sessions.get(token).last_seen == 1000  # not written: a write per request would load the database
    clock.advance(1)
    assert sessions.get(token).last_seen == 1030
    clock.advance(599)  # idle 599 s since the last write: still alive
    assert sessions.get(token, touch=False).last_seen == 1030


def test_end_and_stopping_a_process(db):
    sessions = SessionStore(db, idle_s=60, max_age_s=3600, clock=FakeClock())
    alice, bob = sessions.create("alice"), sessions.create("bob")
    assert alice != bob
    assert sessions.end(alice).username == "alice"
    assert sessions.get(alice) is None and sessions.end(alice) is None and sessions.end(None) is None
    sessions.get(bob).uploads.update(["/tmp/gradio/abc/upload.jpg"])
    sessions.forget_uploads()  # a process stops: its temp files go, the session stays for the others
    assert sessions.held_uploads() == set()
    assert sessions.get(bob).username == "bob"


def test_expired_removes_and_returns_sessions_with_their_uploads(db):
    clock = FakeClock()
    sessions = SessionStore(db, idle_s=60, max_age_s=3600, clock=clock)
    stale = sessions.create("alice")
    sessions.get(stale).uploads.update(["/tmp/gradio/abc/upload.jpg"])
    assert sessions.held_uploads() == {"/tmp/gradio/abc/upload.jpg"}
    clock.advance(50)
    fresh = sessions.create("bob")
    assert sessions.expired() == []
    clock.advance(20)  # alice idle 70 s, bob 20 s
    [gone] = sessions.expired()
    assert (gone.username, set(gone.uploads)) == ("alice", {"/tmp/gradio/abc/upload.jpg"})
    assert sessions.expired() == [] and sessions.held_uploads() == set()
    assert sessions.get(stale) is None and sessions.get(fresh).username == "bob"


def test_tokens_are_random_and_not_kept_in_clear(db):
    sessions = SessionStore(db, idle_s=60, max_age_s=3600, clock=FakeClock())
    tokens = [sessions.create("alice") for _ in range(20)]
    assert len(set(tokens)) == 20 and all(len(t) >= 40 for t in tokens)
    with db() as s:
        keys = set(s.scalars(select(WebSession.key)))
    assert len(keys) == 20 and not keys & set(tokens)
    assert not any(t in key or key in t for t in tokens for key in keys)


# -- login throttle -----------------------------------------------------------------------------


def test_first_failures_are_free_then_waits_double_up_to_a_cap(db):
    clock = FakeClock()
    throttle = LoginThrottle(db, free=5, max_delay_s=30, clock=clock)
    for _ in range(5):
        throttle.failed("alice", "10.0.0.1")
        assert throttle.wait_s("alice", "10.0.0.1") == 0
    waits = []
    for _ in range(8):
        throttle.failed("alice", "10.0.0.1")
        waits.append(throttle.wait_s("alice", "10.0.0.1"))
        clock.advance(waits[-1])  # the next attempt comes once allowed
        assert throttle.wait_s("alice", "10.0.0.1") == 0
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]


def test_failures_from_one_address_never_lock_the_account_for_another(db):
    clock = FakeClock()
    throttle = LoginThrottle(db, clock=clock)
    for _ in range(30):
        throttle.failed("Admin", "203.0.113.66")  # a stranger hammering the admin account
    assert throttle.wait_s("admin", "10.0.0.5") == 0  # the admin at her own desk is not locked out
    assert throttle.wait_s("admin", "203.0.113.66") > 0  # user names compare case-insensitively
    assert throttle.wait_s("bob", "203.0.113.66") > 0  # ... and the stranger's address is limited as a whole


def test_a_locked_pair_waits_and_the_wait_counts_down(db):
    clock = FakeClock()
    throttle = LoginThrottle(db, clock=clock)
    for _ in range(8):
        throttle.failed("Alice", "10.0.0.1")
    assert throttle.wait_s("alice", "10.0.0.1") == 4
    clock.advance(1.5)
    assert throttle.wait_s("alice", "10.0.0.1") == 2.5
    assert throttle.wait_s("alice", "10.0.0.99") == 0 and throttle.wait_s("bob", "10.0.0.1") == 0


def test_failures_on_many_user_names_lock_the_address(db):
    throttle = LoginThrottle(db, address_free=20, clock=FakeClock())
    for i in range(20):
        throttle.failed(f"user{i}", "10.0.0.1")
    assert throttle.wait_s("someone-new", "10.0.0.1") == 0  # 20 free failures per address, over any names
    throttle.failed("user20", "10.0.0.1")
    throttle.failed("user21", "10.0.0.1")
    assert throttle.wait_s("someone-new", "10.0.0.1") == 2
    assert throttle.wait_s("someone-new", "10.0.0.2") == 0
    assert throttle.wait_s("user0", "10.0.0.2") == 0  # one failure each: the names themselves are not locked


def test_success_clears_the_pair_but_not_the_address(db):
    throttle = LoginThrottle(db, address_free=10, clock=FakeClock())
    for _ in range(9):
        throttle.failed("alice", "10.0.0.1")
    assert throttle.wait_s("alice", "10.0.0.1") == 8
    throttle.succeeded("alice", "10.0.0.1")
    assert throttle.wait_s("alice", "10.0.0.1") == 0
    throttle.failed("mallory", "10.0.0.1")
    throttle.failed("alice", "10.0.0.1")
    assert throttle.wait_s("alice", "10.0.0.1") == 1  # the address keeps counting: 11 failures, 10 free
    throttle.succeeded("mallory", "10.0.0.1")  # logging in to one's own account does not reset the address
    assert throttle.wait_s("bob", "10.0.0.1") == 1


def test_old_failures_are_forgotten(db):
    clock = FakeClock()
    throttle = LoginThrottle(db, free=5, forget_after_s=600, clock=clock)
    for _ in range(5):
        throttle.failed("alice", "10.0.0.1")
    clock.advance(599)
    throttle.failed("alice", "10.0.0.1")  # still remembered: the sixth failure locks
    assert throttle.wait_s("alice", "10.0.0.1") == 1
    clock.advance(601)
    throttle.failed("alice", "10.0.0.1")  # forgotten: this is the first failure again
    assert throttle.wait_s("alice", "10.0.0.1") == 0
    clock.advance(601)
    throttle.forget_old()  # housekeeping drops what is forgotten
    assert throttle.count() == 0


def test_throttle_rows_are_bounded(db):
    clock = FakeClock()
    throttle = LoginThrottle(db, forget_after_s=60, max_rows=40, clock=clock)
    for i in range(20):
        throttle.failed(f"user{i}", f"10.0.0.{i}")
    assert throttle.count() == 40
    clock.advance(61)
    throttle.failed("alice", "10.1.0.1")
    assert throttle.count() == 2  # over the cap: the forgotten rows went
    for _ in range(30):
        throttle.failed("mallory", "10.9.9.9")  # locked: kept whatever the cap
    for i in range(40):
        throttle.failed(f"user{i}", f"10.2.0.{i}")
        clock.advance(0.01)
    assert throttle.count() <= 40 and throttle.wait_s("mallory", "10.9.9.9") > 0


# -- upload file names --------------------------------------------------------------------------


def _multipart(filename: str, data: bytes) -> tuple[bytes, bytes]:
    """A real multipart body, as a browser (here httpx) sends it; returns (content type, body)."""
    request = httpx.Request("POST", "http://loupe/gradio_api/upload",
                            files={"files": (filename, data, "image/jpeg")}, data={"note": "x-ray"})
    return request.headers["content-type"].encode(), request.read()


def _by_hand(disposition: bytes, data: bytes) -> tuple[bytes, bytes]:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; " + disposition
            + b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n--XyZ--\r\n")
    return b"multipart/form-data; boundary=XyZ", body


def _chunks(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)] or [b""]


async def _scrub(chunks: list[bytes], boundary: bytes = b"XyZ") -> list[Message]:
    """What the wrapped app receives when the client sends ``chunks``, then disconnects."""
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    incoming.append({"type": "http.disconnect"})

    async def receive() -> Message:
        return incoming.pop(0)

    scrubbed = scrub_filenames(receive, boundary)
    out = [await scrubbed()]
    while out[-1].get("more_body"):
        out.append(await scrubbed())
    assert (await scrubbed())["type"] == "http.disconnect"  # later messages pass through
    assert all(m["type"] == "http.request" for m in out)
    return out


async def _parse(content_type: bytes, messages: list[Message]) -> tuple[str, bytes, str]:
    """Parse the scrubbed body the way Gradio (Starlette) does: the upload's name and bytes, the text field."""
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type)]}
    form = await Request(scope, receive).form()
    upload = form["files"]
    return upload.filename, await upload.read(), form.get("note", "")


def _check(content_type: bytes, body: bytes, splits: list[list[bytes]], data: bytes, expected: str,
           secret: bytes) -> None:
    async def run_all() -> None:
        for chunks in splits:
            assert b"".join(chunks) == body
            messages = await _scrub(chunks, multipart_boundary(content_type.decode()))
            out = b"".join(m["body"] for m in messages)
            assert secret not in out, f"name leaked with chunks of {[len(c) for c in chunks][:3]}..."
            assert out.count(f'filename="{expected}"'.encode()) == 1
            assert await _parse(content_type, messages) == (expected, data, "x-ray" if b"x-ray" in body else "")

    asyncio.run(run_all())


def test_scrub_replaces_a_quoted_name_at_every_split_position():
    data = bytes(range(256))
    content_type, body = _multipart(PHI_NAME, data)
    splits = [[body[:i], body[i:]] for i in range(len(body) + 1)]
    splits += [_chunks(body, 1), _chunks(body, 7), [body]]
    _check(content_type, body, splits, data, "upload.jpg", b"SMITH")


def test_scrub_handles_bodies_larger_than_the_hold_back():
    data = random.Random(7).randbytes(100 * 1024)
    assert b"filename" not in data and len(data) > 4 * _HOLD
    content_type, body = _multipart(PHI_NAME, data)
    splits = [_chunks(body, 7), _chunks(body, 4096), _chunks(body, 65536), [body]]
    splits += [[body[:i], body[i:]] for i in range(0, 400, 3)]
    _check(content_type, body, splits, data, "upload.jpg", b"SMITH")


def test_scrub_replaces_rfc5987_and_unquoted_names():
    data = b"\x89PNG fake image bytes"
    for disposition, secret in ((b"filename*=UTF-8''M%C3%BCLLER%20ANNA%201980.png", b"ANNA"),
                                (b"filename=MULLER_ANNA_1980.png", b"ANNA"),
                                (b"filename=MULLER_ANNA_1980.png; size=21", b"ANNA"),
                                (b'FileName="MULLER_ANNA_1980.PNG"', b"ANNA")):
        content_type, body = _by_hand(disposition, data)
        splits = [[body[:i], body[i:]] for i in range(len(body) + 1)] + [_chunks(body, 1), _chunks(body, 7)]
        _check(content_type, body, splits, data, "upload.png", secret)


def test_scrub_leaves_the_files_own_bytes_alone():
    # A file that happens to contain a part-header-like text (a PDF, a text file, metadata) is not touched.
    data = b'%PDF-1.7 ... Content-Disposition: form-data; filename="SMITH_ANNA.pdf"\r\n\r\n ... %%EOF'
    content_type, body = _multipart(PHI_NAME, data)
    for chunks in [[body[:i], body[i:]] for i in range(len(body) + 1)] + [_chunks(body, 3)]:
        messages = asyncio.run(_scrub(chunks, multipart_boundary(content_type.decode())))
        assert asyncio.run(_parse(content_type, messages)) == ("upload.jpg", data, "x-ray")


def test_scrub_refuses_a_body_the_multipart_parser_does_not_accept():
    body = b'{"data": ["a question about a wrist"], "fn_index": 3}'
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return incoming.pop(0)

    assert asyncio.run(scrub_filenames(receive, b"XyZ")())["type"] == "http.disconnect"


@pytest.mark.parametrize(("original", "neutral"), [
    ("SMITH_ANNA_1980-01-01.jpg", "upload.jpg"),
    ("scan.JPEG", "upload.jpeg"),
    ("  chest.png  ", "upload.png"),
    ("UTF-8''M%C3%BCLLER.tif", "upload.tif"),
    ("archive.tar.gz", "upload.gz"),
    ("no extension", "upload"),
    ("SMITH.ANNA 1980", "upload"),  # "extension" with a space
    ("report.doc_x", "upload"),
    ("photo.jpg%00.exe", "upload.exe"),
    ("C:\\fakepath\\SMITH ANNA.jpg", "upload.jpg"),
    ("../../SMITH/ANNA", "upload"),
    ("x.superlong", "upload"),
    (".bashrc", "upload"),
    ("", "upload"),
])
def test_neutral_name_keeps_only_plain_extensions(original, neutral):
    assert neutral_name(original) == neutral


# -- temp files ---------------------------------------------------------------------------------


def _file(path: Path, age_s: float = 0, now: float = 1_000_000.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_sweep_removes_only_stale_files_and_prunes_empty_folders(tmp_path):
    root = tmp_path / "gradio"
    old = _file(root / "aaa" / "upload.jpg", age_s=3601)
    new = _file(root / "bbb" / "upload.jpg", age_s=10)
    old_nested = _file(root / "ccc" / "ddd" / "upload.png", age_s=7200)
    sweeper = TempSweeper(root, max_age_s=3600)
    assert sweeper.sweep(now=1_000_000.0) == 2
    assert not old.exists() and not old_nested.exists() and new.exists()
    assert sorted(p.name for p in root.iterdir()) == ["bbb"]  # emptied folders are gone, the root stays
    assert sweeper.sweep(now=1_000_000.0) == 0


def test_remove_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "gradio"
    inside = _file(root / "aaa" / "upload.jpg")
    outside = _file(tmp_path / "secret.db")
    (root / "aaa" / "link.jpg").symlink_to(outside)
    sweeper = TempSweeper(root, max_age_s=3600)
    attempts = [str(outside), str(root / ".." / "secret.db"), str(root / "aaa" / "link.jpg"), str(root),
                str(root / "aaa"), str(root / "missing.jpg")]
    assert sweeper.remove(attempts) == 0
    assert outside.exists() and inside.exists()
    assert sweeper.remove([str(inside)]) == 1
    assert not inside.exists() and root.is_dir()


def test_wipe_empties_the_root(tmp_path):
    root = tmp_path / "gradio"
    for name in ("aaa/upload.jpg", "bbb/ccc/upload.png", "loose.txt"):
        _file(root / name)
    (root / "empty").mkdir()
    outside = _file(tmp_path / "keep.txt")
    (root / "link").symlink_to(tmp_path)
    sweeper = TempSweeper(root, max_age_s=3600)
    assert sweeper.wipe() == 3  # the linked folder is not followed
    assert root.is_dir() and list(root.iterdir()) == []
    assert outside.exists()
    assert TempSweeper(tmp_path / "never-created", max_age_s=1).wipe() == 0
    assert TempSweeper(tmp_path / "never-created", max_age_s=1).sweep() == 0


def test_citations_are_listed_under_their_answer_with_the_text_escaped():
    from loupe.apps.web.render import citation_note

    note = citation_note({"citations": [{"page": 2, "box": [1, 2, 3, 4], "text": "TOTAL <b>11.50</b>"}]})
    assert "p. 2" in note and "&lt;b&gt;11.50" in note and "<b>" not in note
    assert citation_note({}) == citation_note({"citations": []}) == ""


def test_markdown_text_is_shown_as_written():
    import html

    from loupe.apps.web.render import md_text, quoted

    hostile = "![x](//127.0.0.1:1/x) <img src=x> [a](/logout) http://a.org WWW.b.org c@d.org `e`\n    code\n\tf"
    escaped = md_text(hostile)
    assert not set(escaped) & set("<>[]`@\\") and "://" not in escaped and "WWW." not in escaped
    assert html.unescape(escaped) == hostile  # the reader sees what was written
    assert md_text("Size: 3.5 mm (left), *not* urgent.") == "Size: 3.5 mm (left), *not* urgent."  # copies as is
    assert quoted("one\ntwo").splitlines() == ["> one", "> two"]


def test_cancel_stops_only_the_case_switch_in_flight_on_its_own_screen() -> None:
    from types import SimpleNamespace

    from loupe.apps.web.screen import Screens

    screens = Screens()
    mine, other = SimpleNamespace(session_hash="a", username="ann"), SimpleNamespace(session_hash="b", username="ann")
    assert not screens.request_stop(mine)  # nothing being read: nothing to stop
    with screens.switch(mine) as reading, screens.switch(other) as theirs:
        assert screens.request_stop(mine)
        assert screens.stop_requested(mine, reading) and not screens.stop_requested(other, theirs)
    with screens.switch(mine) as next_upload:  # the next upload starts afresh
        assert not screens.stop_requested(mine, next_upload)


def test_pruning_expired_gradio_bindings_keeps_the_live_ones() -> None:
    from loupe.apps.web.guards import SessionBindings

    now = [0.0]
    bindings = SessionBindings(idle_s=10, max_age_s=100, clock=lambda: now[0])
    bindings.claim(["old-1", "old-2"], "ann", "s1")
    now[0] = 8
    bindings.claim(["fresh"], "bob", "s2")
    now[0] = 15  # the first two idle past 10 s; the housekeeping thread used to die here
    bindings.prune()
    assert len(bindings) == 1 and bindings.claim(["fresh"], "bob", "s2") and not bindings.claim(["fresh"], "ann", "s1")


def test_a_basemap_url_is_checked_and_only_its_origin_may_serve_images(tmp_path):
    from loupe.apps.web.basemap import basemap_from
    from loupe.apps.web.guards import content_security_policy
    from loupe.core.config import Settings
    from loupe.core.errors import LoupeError

    def settings(url: str | None, attribution: str = "") -> Settings:
        return Settings(home=tmp_path, basemap_url=url, basemap_attribution=attribution)

    assert basemap_from(settings(None)) is None
    good = basemap_from(settings("https://Tiles.Example.org:8443/osm/{z}/{x}/{y}.png", "<b>OSM</b> contributors"))
    assert good.origin == "https://tiles.example.org:8443"
    assert good.as_json()["attribution"] == "&lt;b&gt;OSM&lt;/b&gt; contributors"  # OpenLayers writes HTML
    for bad in ("file:///srv/tiles/{z}/{x}/{y}.png", "https://tiles.example.org/{z}/{x}.png",
                "javascript:alert(1)//{z}{x}{y}", "https://tiles.example.org/{z}/{x}/{y}.png; script-src *"):
        with pytest.raises(LoupeError):
            basemap_from(settings(bad))
    policy = content_security_policy((good.origin,))
    assert "img-src 'self' data: blob: https://tiles.example.org:8443;" in policy
    others = [part for part in policy.split("; ") if not part.startswith("img-src")]
    assert "connect-src 'self'" in others and not any("tiles.example.org" in part for part in others)
