"""End to end through the Gradio API (gradio_client), as the browser's handlers are called."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from helpers import png_bytes, png_header_only
from PIL import Image, PngImagePlugin
from sqlalchemy import func, select
from webapp import serve

from loupe.apps.web import DEMO_BANNER, status_banner
from loupe.core.cases.models import Asset, Case, ChatMessage, ModelRun, Review
from loupe.core.vlm.slot import SlotStatus

# Output positions of /general_create_case and /general_open_case (gr.State outputs are not in the API).
HEADER, VIEWER, CHAT, CHOICE, SHOWN, STATUS = range(6)
USERS = {"alice": "user", "bob": "user", "rita": "reviewer", "root": "admin"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    with serve(tmp_path_factory.mktemp("home"), tiny_model_dir("smolvlm"), USERS) as running:
        yield running


def _counts(served) -> tuple[int, ...]:
    with served.service.store.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Case, Asset, ChatMessage))


def _text(content) -> str:
    """Chatbot content as Gradio 6 returns it: a string or a list of typed parts."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def _create(client, tmp_path, name: str = "scan.png", title: str = "wrist", data: bytes | None = None) -> tuple:
    image = tmp_path / name
    image.write_bytes(data or png_bytes((64, 48)))
    out = client.predict(handle_file(str(image)), title, api_name="/general_create_case")
    assert out[STATUS].startswith("Case ") and "created." in out[STATUS], out[STATUS]
    return int(out[STATUS].split()[1]), out


def _fn_index(admin_client, api_name: str) -> int:
    """An admin endpoint's index, from an admin's config (others are not listed its name)."""
    return next(d["id"] for d in admin_client.config["dependencies"] if d.get("api_name") == api_name)


def _ask(client, question: str, case_id: int) -> tuple:
    job = client.submit(case_id, question, api_name="/general_ask")  # the case on screen, as the page sends it
    steps = list(job)
    return steps, job.result()


def test_wrong_password_is_refused(served):
    with pytest.raises(Exception, match="(?i)login|credentials|auth|401"):
        served.client("alice", "not-her-password")


def test_upload_ask_stream_and_persist(served, tmp_path):
    alice = served.client("alice")
    case_id, out = _create(alice, tmp_path, name="Doe_John_1970-01-01.png")  # an upload name carrying PHI
    assert 'src="/case-assets/' in out[VIEWER] and "gradio_api/file" not in out[VIEWER]
    steps, (chat, question_box, status) = _ask(alice, "What is shown?", case_id)
    assert len(steps) >= 2  # streamed: partial answers before the saved one
    assert question_box == ""  # the question box is cleared
    assert status.startswith("Answered in ") and "demo model (random weights)" in status
    assert "Demo weights: not a meaningful answer" in status and "/tmp" not in status

    case = served.service.store.open_case(served.service.user("alice"), case_id)
    assert [m.role for m in case.messages] == ["user", "assistant"]
    shown = _text(chat[-1]["content"])
    assert shown.startswith(case.messages[1].content) and shown.endswith("demo weights: not a meaningful answer</sub>")
    assert case.messages[1].model_run.visual_tokens > 0 and case.messages[1].model_run.demo_weights
    # The PHI-bearing upload name reached neither the asset store nor Gradio's temp folder.
    assert not [p for p in served.home.rglob("*") if "Doe_John" in str(p)]
    assert not served.files()  # the upload's temp copy is gone once the case exists
    rows = alice.predict("", False, api_name="/general_list_cases")["data"]
    assert case_id in [row[0] for row in rows]


def test_review_any_answer_after_reopening(served, tmp_path):
    alice = served.client("alice")
    case_id, _ = _create(alice, tmp_path, title="two answers")
    _ask(alice, "First question?", case_id)
    _ask(alice, "Second question?", case_id)
    reopened = served.client("alice")  # a new session: nothing remembered but the database
    out = reopened.predict(case_id, api_name="/general_open_case")
    choices = out[CHOICE]["choices"]
    assert [label.split(":")[0] for label, _ in choices] == ["Answer 1", "Answer 2"]
    first_answer = choices[0][1]
    # Each answer names the model that gave it, and demo weights stay flagged after reopening.
    footnote = _text(out[CHAT][1]["content"]).rsplit("<sub>", 1)[1]
    assert footnote.startswith("demo model (random weights) · standard detail · ")
    assert " visual tokens · " in footnote and footnote.endswith(" · demo weights: not a meaningful answer</sub>")
    # Nothing is signed off by default: a verdict must be chosen.
    note, _, _ = reopened.predict(first_answer, None, "", False, case_id, api_name="/general_review")
    assert note == "⚠️ Choose a verdict first: accept, correct or reject."
    status, chat, _ = reopened.predict(first_answer, "edited", "A corrected first answer.", False, case_id,
                                       api_name="/general_review")
    assert status == "Review saved: answer 1 corrected."
    with served.service.store.sessions() as s:
        review = s.scalar(select(Review).order_by(Review.id.desc()))
    assert review.message_id == first_answer and review.edited_text == "A corrected first answer."
    shown = [_text(m["content"]) for m in chat if m["role"] == "assistant"]
    assert "Edited by <b>alice</b>" in shown[0] and "A corrected first answer." in shown[0]
    assert "Edited" not in shown[1]
    # Reopened again, the review is still shown under its answer.
    chat = served.client("alice").predict(case_id, api_name="/general_open_case")[CHAT]
    assert "Edited by <b>alice</b>" in _text(chat[1]["content"])


def test_reviewer_signs_off_a_shared_case(served, tmp_path):
    alice, rita = served.client("alice"), served.client("rita")
    case_id, _ = _create(alice, tmp_path, title="for review")
    _ask(alice, "Anything abnormal?", case_id)
    assert case_id not in [r[0] for r in rita.predict("", False, api_name="/general_list_cases")["data"]]
    alice.predict(case_id, api_name="/general_open_case")
    status, header = alice.predict(case_id, "rita", api_name="/general_share")
    assert status == "Case shared with rita." and "Shared with rita" in header
    assert case_id in [r[0] for r in rita.predict("", False, api_name="/general_list_cases")["data"]]
    answer = rita.predict(case_id, api_name="/general_open_case")[CHOICE]["choices"][0][1]
    status, chat, _ = rita.predict(answer, "accepted", "", True, case_id, api_name="/general_review")
    assert status == "Review saved: answer 1 signed off."
    assert "Signed off by <b>rita</b> (reviewer)" in _text(chat[1]["content"])
    # A plain user cannot sign off.
    status, _, _ = alice.predict(answer, "accepted", "", True, case_id, api_name="/general_review")
    assert status == "⚠️ Only users with the reviewer role can sign answers off."


def test_archive_hides_a_case_and_admin_purges_it(served, tmp_path):
    alice, root = served.client("alice"), served.client("root")
    unique = png_bytes((33, 17), (1, 2, 3))
    case_id, _ = _create(alice, tmp_path, title="to purge", data=unique)
    _ask(alice, "What is shown?", case_id)
    assert served.files("cache/features")  # its encoded image is kept for the next question
    status, header, rows = alice.predict(case_id, "", False, api_name="/general_archive")
    assert status.startswith(f"Case {case_id} archived") and "Archived" in header
    assert case_id not in [r[0] for r in rows["data"]]  # the list as filtered (active cases), at once
    assert case_id not in [r[0] for r in alice.predict("", False, api_name="/general_list_cases")["data"]]
    assert case_id in [r[0] for r in alice.predict("", True, api_name="/general_list_cases")["data"]]
    purge = _fn_index(root, "admin_purge_case")  # not listed to alice: called by its index, refused by its handler
    assert alice.predict(case_id, "PURGE", fn_index=purge) == "⚠️ Only administrators can do that."
    blobs = len(served.files("assets"))
    assert root.predict(case_id, "PURGE", api_name="/admin_purge_case") == f"Case {case_id} purged."
    assert len(served.files("assets")) == blobs - 1
    assert not served.files("cache/features")  # nothing derived from its pixels stays behind
    assert f"case-{case_id}" not in served.service.slot.get().conversations._entries
    assert root.predict(case_id, api_name="/general_open_case")[STATUS] == f"⚠️ Case {case_id} not found."
    actions = [e.action for e in served.service.store.audit_events(case_id)]
    assert actions[0] == "case.create" and "case.archive" in actions and actions[-1] == "case.purge"


def test_multi_frame_upload_says_what_is_analysed(served, tmp_path):
    frames = [Image.new("L", (20, 20), v) for v in range(0, 250, 10)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    _, out = _create(served.client("alice"), tmp_path, name="clip.gif", data=gif.getvalue())
    assert "This file has 25 frames; Loupe analyses the first frame only." in out[STATUS]
    assert "25 frames" in out[VIEWER]


def test_served_image_carries_no_metadata(served, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "MRN 99887766 ROE JANE")
    out = io.BytesIO()
    Image.new("RGB", (30, 20), (9, 9, 9)).save(out, format="PNG", pnginfo=info)
    case_id, _ = _create(served.client("alice"), tmp_path, data=out.getvalue())
    asset = served.service.store.open_case(served.service.user("alice"), case_id).assets[0]
    body = served.http("alice").get(f"/case-assets/{asset.id}")
    assert body.status_code == 200 and body.headers["cache-control"] == "no-store"
    assert b"MRN" not in body.content and Image.open(io.BytesIO(body.content)).size == (30, 20)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "The file is empty"),
    (b"just some text, not an image", "not an image"),
    (png_header_only(4000, 4000), "4,000 × 4,000 pixels, is 16.0 megapixels; Loupe accepts up to 1.0 megapixels (an "
     "administrator can raise LOUPE_MAX_IMAGE_PIXELS)"),
])
def test_bad_uploads_show_a_reason_and_write_nothing(served, tmp_path, content, message):
    client = served.client("alice")
    before, blobs_before = _counts(served), len(served.files("assets"))
    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    out = client.predict(handle_file(str(bad)), "bad", api_name="/general_create_case")
    assert out[STATUS].startswith("⚠️") and message in out[STATUS]
    assert _counts(served) == before
    assert len(served.files("assets")) == blobs_before
    assert not served.files()  # no temp file left behind, 0-byte or otherwise


def test_status_banner_is_honest_about_demo_weights(served):
    banner = served.client("bob").predict(api_name="/model_status")
    assert DEMO_BANNER in banner and "demo model (random weights)" in banner
    hub_error = ("cannot load model 'HuggingFaceTB/SmolVLM-256M-Instruct': We couldn't connect to "
                 "'https://huggingface.co' to load the files, and couldn't find them in the cached files.")
    failed = status_banner(SlotStatus("failed", "x", error=hub_error))
    assert "No model is available" in failed and "demo model" in failed
    assert "no connection to the model hub and no local copy" in failed and "huggingface.co" not in failed
    ready = status_banner(SlotStatus("ready", "HuggingFaceTB/SmolVLM-256M-Instruct"))
    assert ready == "Model: **SmolVLM-256M-Instruct** is ready."


def test_model_runs_are_counted_once_per_answer(served):
    with served.service.store.sessions() as s:
        runs = s.scalar(select(func.count()).select_from(ModelRun))
        answers = s.scalar(select(func.count()).select_from(ChatMessage).where(ChatMessage.role == "assistant"))
    assert runs == answers > 0


def test_admin_lists_adapters_with_their_cards_and_switches_a_domain(served, tmp_path):
    """The Admin tab's adapter panel: the registry with metrics, the card, the switch (admins only, audited)."""
    import json

    store = served.service.store
    folder = tmp_path / "codes-v1"
    (folder / "adapter").mkdir(parents=True)
    card = {"domain": "general", "base_model": "HuggingFaceTB/SmolVLM-256M-Instruct", "steps": 40,
            "evaluations": [{"step": 40, "eval_loss": 0.01, "exact_match": 0.9375}]}
    (folder / "adapter_card.json").write_text(json.dumps(card))
    store.register_adapter("codes-v1", "general", card["base_model"], str(folder / "adapter"),
                           {"steps": 40, "final_train_loss": 0.02, "best_eval_loss": 0.01,
                            "trainable_fraction": 0.0108, "adapter_bytes": 3 * 2**20})
    alice, root = served.client("alice"), served.client("root")
    try:
        assert alice.predict(fn_index=_fn_index(root, "admin_adapters"))[0]["data"] == []
        assert alice.predict("codes-v1", "general", fn_index=_fn_index(root, "admin_adapter_use"))[0].startswith(
            "⚠️ Only admin")
        assert alice.predict("codes-v1", fn_index=_fn_index(root, "admin_adapter_card")) == ""
        assert store.active_adapter("general") is None
        (row,) = root.predict(api_name="/admin_adapters")[0]["data"]
        assert row[:3] == ["codes-v1", "general", ""] and row[3] == "SmolVLM-256M-Instruct"
        assert row[7:] == ["94%", "1.08%", "3.0 MB"]
        assert json.loads(root.predict("codes-v1", api_name="/admin_adapter_card"))["steps"] == 40
        status, table, _ = root.predict("codes-v1", None, api_name="/admin_adapter_use")
        assert status == "general now answers with codes-v1." and table["data"][0][2] == "✅"
        assert store.active_adapter("general").name == "codes-v1"
        status, table, _ = root.predict(None, "general", api_name="/admin_adapter_base")
        assert status == "general now answers with the base model." and table["data"][0][2] == ""
        assert store.active_adapter("general") is None
        events = [e for e in store.audit_events() if e.action in ("adapter.activate", "admin.denied")]
        assert [e.detail.get("name", e.detail.get("action")) for e in events[-5:]] == [
            "adapter.list", "adapter.activate", "adapter.card", "codes-v1", None]  # alice refused, then root
    finally:
        store.activate_adapter(None, "general")
        store.remove_adapter("codes-v1")


def test_identical_uploads_of_two_users_keep_their_shared_temp_copy_until_both_are_done(served):
    """Gradio names a temp copy by its content's hash: alice's logout must not delete bob's pending upload."""
    from pathlib import Path

    data = png_bytes((24, 24))
    alice, bob = served.http("alice"), served.http("bob")
    [first] = alice.post("/gradio_api/upload", files={"files": ("a.png", data)}).json()
    [second] = bob.post("/gradio_api/upload", files={"files": ("b.png", data)}).json()
    assert first == second  # one file for both
    assert alice.post("/logout").status_code in (200, 303)
    assert Path(second).is_file(), "alice's logout deleted bob's pending upload"
    bob_cookie = f"loupe_session={bob.cookies.get('loupe_session')}"
    served.app.security.release_upload(bob_cookie, second)
    assert not Path(second).exists()  # the last one done with it: gone


def test_a_case_is_created_only_from_an_upload_of_the_same_session(served):
    """The handler is given a path: one this session did not upload (another user's, a made-up one) is never
    read."""
    alice, bob = served.http("alice"), served.http("bob")
    [mine] = alice.post("/gradio_api/upload", files={"files": ("a.png", png_bytes((24, 20)))}).json()
    security = served.app.security
    assert security.upload_of(f"loupe_session={alice.cookies.get('loupe_session')}", mine) is not None
    assert security.upload_of(f"loupe_session={bob.cookies.get('loupe_session')}", mine) is None
    assert security.upload_of(f"loupe_session={bob.cookies.get('loupe_session')}", "/etc/passwd") is None
    before = _counts(served)
    # bob's page sends alice's upload path (a client library would upload the file again as bob's own)
    fn_index = served.client("bob")._infer_fn_index("/general_create_case", None)
    joined = bob.post("/gradio_api/queue/join", json={
        "data": [{"path": mine, "meta": {"_type": "gradio.FileData"}}, "stolen"], "fn_index": fn_index,
        "session_hash": "bobsession", "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with bob.stream("GET", "/gradio_api/queue/data", params={"session_hash": "bobsession"}) as stream:
        events = ""
        for line in stream.iter_lines():
            events += line
            if "process_completed" in line:
                break
    assert "no longer here" in events and _counts(served) == before
    security.release_upload(f"loupe_session={alice.cookies.get('loupe_session')}", mine)
    assert not Path(mine).exists()


def test_a_scene_over_the_whole_file_budget_streams_from_the_upload_to_the_store(served, tmp_path):
    """The app's budget for files read whole is 1 MiB here; a 113 MB GeoTIFF still becomes a remote-sensing
    case: the web process passes the spooled upload's path to a worker, which writes the clean copy the
    store moves into place. The web process's memory does not grow by the file's size (sampled while it
    runs); the same bytes as a photo in the general tab are refused by the whole-file budget."""
    import rasterio
    from rasterio.transform import from_origin

    from loupe.apps.bench_pyramid import RssWatch

    scene = tmp_path / "scene.tif"
    pixels = np.random.default_rng(1).integers(0, 255, (3, 6144, 6144), dtype=np.uint8)
    with rasterio.open(scene, "w", driver="GTiff", width=6144, height=6144, count=3, dtype="uint8", tiled=True,
                       crs="EPSG:32618", transform=from_origin(300_000, 4_700_000, 1, 1)) as ds:
        ds.write(pixels)
    del pixels
    size = scene.stat().st_size
    assert size > 100 * 2**20 > served.service.limits.max_bytes
    client = served.client("alice")
    with RssWatch() as watch:
        out = client.predict(handle_file(str(scene)), "big scene", api_name="/remote_sensing_create_case")
    assert out[STATUS].startswith("Case ") and "created" in out[STATUS], out[STATUS]
    grown = (watch.peak - watch.start) * 2**20  # about 40 MiB whatever the size (1 GB: 36 MiB, bench sources)
    assert grown < size / 2, f"the web process grew {grown / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB upload"
    case_id = int(out[STATUS].split()[1])
    raster = served.service.store.open_case(served.service.user("alice"), case_id).assets[0]
    stored = served.service.store.assets.path_for(raster.sha256)
    assert raster.size_bytes == stored.stat().st_size > 0
    assert not [p for p in served.files() if p.suffix == ".tif"]  # the upload's spooled copy is gone
    refused = client.predict(handle_file(str(scene)), "as a photo", api_name="/general_create_case")
    assert refused[STATUS].startswith("⚠️") and "Loupe accepts up to 1 MiB" in refused[STATUS]


def test_only_admins_set_a_sources_credentials_in_the_admin_tab_and_they_are_never_shown(served):
    """Credentials typed in the Admin tab go to the owner-only secrets file only: the box is emptied, the table
    and the audit say which keys, never their values; a user calling the handler is refused."""
    import stat

    from loupe.core.sources import credentials

    store, home = served.service.store, served.service.settings.home
    store.add_source(None, "vault", "http", "https://imagery.example.org/cogs/", "remote_sensing", ())
    alice, root = served.client("alice"), served.client("root")
    index = _fn_index(root, "admin_source_credentials")
    status, _, _ = alice.predict("vault", "username=alice\npassword=taken-by-alice", fn_index=index)
    assert status == "⚠️ Only administrators can do that." and not credentials.has(home, "vault")
    hostile = '<img src=x onerror="document.title=1">=1'
    status, _, box = root.predict("vault", hostile, api_name="/admin_source_credentials")
    assert status.startswith("⚠️ line 1: give key=value") and box == "" and not credentials.has(home, "vault")
    secret = "pass-word-never-shown-93"
    status, table, box = root.predict("vault", f"username=reader\npassword={secret}\n",
                                      api_name="/admin_source_credentials")
    assert status == "Credentials of vault set (password, username)." and box == ""
    assert [r[-1] for r in table["data"] if r[0] == "vault"] == ["set"] and secret not in json.dumps(table)
    path = credentials.folder(home) / "vault.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["values"] == {"username": "reader", "password": secret}
    events = [e for e in store.audit_events() if e.action == "source.credentials"]
    assert [e.detail.get("keys") for e in events] == [["password", "username"]]
    assert secret not in json.dumps([e.detail for e in store.audit_events()])
    status, table, _ = root.predict("vault", api_name="/admin_source_credentials_clear")
    assert status == "Credentials of vault removed." and not path.exists()
    assert [r[-1] for r in table["data"] if r[0] == "vault"] == ["none"]


def test_deep_zoom_tiles_are_checked_for_every_tile_and_audited_once_per_view(served):
    """/case-tiles: the owner gets the description and full-resolution JPEG tiles; another user and a visitor
    get nothing; a tile outside the image is not found; a view is one audit entry, its tiles none; the vendored
    viewer's files are served, nothing beside them."""
    from pathlib import Path

    store = served.service.store
    alice_user = served.service.user("alice")
    scene = Path(__file__).resolve().parents[1] / "data" / "remote_sensing" / "cogeo.tif"
    case_id = served.service.create_case(alice_user, "remote_sensing", scene, "scene")
    raster = next(a for a in store.open_case(alice_user, case_id).assets if a.meta.get("kind") == "raster")
    alice, bob, anonymous = served.http("alice"), served.http("bob"), served.http()
    info = alice.get(f"/case-tiles/{raster.id}/info.json")
    assert info.status_code == 200 and info.json() == {"width": 1024, "height": 1024, "tile": 256, "max_level": 10}
    tile = alice.get(f"/case-tiles/{raster.id}/10/3_2.jpg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert "no-store" in tile.headers["cache-control"] and Image.open(io.BytesIO(tile.content)).size == (256, 256)
    assert alice.get(f"/case-tiles/{raster.id}/0/0_0.jpg").status_code == 200  # the whole scene in one pixel
    assert alice.get(f"/case-tiles/{raster.id}/10/4_0.jpg").status_code == 404  # beyond the image
    for path in (f"/case-tiles/{raster.id}/info.json", f"/case-tiles/{raster.id}/10/3_2.jpg"):
        assert bob.get(path).status_code == 404 and anonymous.get(path).status_code in (401, 303, 307)
    views = [e for e in store.audit_events(case_id) if e.action == "asset.view"]
    assert [e.user_id for e in views] == [alice_user.id]  # one view; its tiles and bob's refusals are not views
    assert "asset.denied" in [e.action for e in store.audit_events()]
    assert alice.get("/vendor/openseadragon/openseadragon.min.js").status_code == 200
    assert alice.get("/vendor/openseadragon/../deepzoom.py").status_code == 404


def _two_level_dicom_slide() -> tuple[bytes, np.ndarray]:
    """A zip of a DICOM slide stored as two files, full resolution (the tiny 50 × 50 test slide) and half of it."""
    import copy
    import math
    import zipfile

    import pydicom

    full = pydicom.dcmread(Path(__file__).resolve().parents[1] / "data" / "medical" / "pathology"
                           / "SM_wsi_tiny_25frames.dcm")
    tiles = full.pixel_array.reshape(5, 5, 10, 10, 3).transpose(0, 2, 1, 3, 4).reshape(50, 50, 3)
    half = np.asarray(Image.fromarray(tiles).resize((25, 25), Image.Resampling.BOX))
    level = copy.deepcopy(full)
    level.TotalPixelMatrixColumns = level.TotalPixelMatrixRows = 25
    padded = np.zeros((30, 30, 3), np.uint8)
    padded[:25, :25] = half
    level.NumberOfFrames = math.ceil(25 / 10) ** 2
    level.PixelData = padded.reshape(3, 10, 3, 10, 3).transpose(0, 2, 1, 3, 4).tobytes()
    level.SOPInstanceUID = level.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, ds in (("full.dcm", full), ("half.dcm", level)):
            buffer = io.BytesIO()
            ds.save_as(buffer)
            archive.writestr(name, buffer.getvalue())
    return out.getvalue(), tiles


def test_an_uploaded_dicom_slides_level_files_zoom_as_one_image(served):
    """A DICOM slide uploaded as a file per level opens in the deep-zoom viewer as one image: its full
    resolution tile is the slide's own pixels, a second user gets nothing."""
    upload, pixels = _two_level_dicom_slide()
    alice_user = served.service.user("alice")
    case_id = served.service.create_case(alice_user, "medical", io.BytesIO(upload), "biopsy")
    levels = [a for a in served.service.store.open_case(alice_user, case_id).assets
              if a.meta.get("kind") == "slide_level"]
    assert len(levels) == 2 and levels[0].meta["level_of"] == 2
    alice = served.http("alice")
    info = alice.get(f"/case-tiles/{levels[1].id}/info.json").json()
    assert (info["width"], info["height"], info["max_level"]) == (50, 50, 6)
    tile = Image.open(io.BytesIO(alice.get(f"/case-tiles/{levels[1].id}/6/0_0.jpg").content)).convert("RGB")
    assert tile.size == (50, 50) and np.abs(np.asarray(tile, dtype=int) - pixels).mean() < 6  # JPEG
    assert served.http("bob").get(f"/case-tiles/{levels[1].id}/6/0_0.jpg").status_code == 404
