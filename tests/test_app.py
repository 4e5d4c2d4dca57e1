"""End to end: the real Gradio app on a loopback port, driven with gradio_client."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from helpers import free_port, png_bytes, png_header_only
from sqlalchemy import func, select

from loupe.apps.service import LoupeService
from loupe.apps.web import DEMO_BANNER, launch, status_banner
from loupe.core.cases.models import Asset, Case, ChatMessage, ModelRun
from loupe.core.vlm.slot import ModelSlot


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("home")
    from loupe.core.config import Settings

    settings = Settings(home=home, database_url=None, model="unused", max_upload_bytes=2**20,
                        max_image_pixels=1_000_000)
    slot = ModelSlot(dtype="fp32")
    slot.load(tiny_model_dir("smolvlm"))
    service = LoupeService.open(settings, slot)
    service.store.add_user("alice", "alice-password")
    service.store.add_user("bob", "bob-password")
    app, url = launch(service, port=free_port(), block=False)
    yield service, url, home
    app.close()


def _counts(service: LoupeService) -> tuple[int, int, int]:
    with service.store.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Case, Asset, ChatMessage))


def _text(content) -> str:
    """Chatbot content as Gradio 6 returns it: a string or a list of typed parts."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def _files(path) -> list:
    return [p for p in path.rglob("*") if p.is_file()]


def test_wrong_password_is_refused(served):
    _, url, _ = served
    with pytest.raises(Exception, match="(?i)login|credentials|auth|401"):
        Client(url, auth=("alice", "not-her-password"), verbose=False)


def test_upload_ask_stream_and_persist(served, tmp_path):
    service, url, home = served
    client = Client(url, auth=("alice", "alice-password"), verbose=False)
    image = tmp_path / "Doe_John_1970-01-01.png"  # an upload name carrying PHI
    image.write_bytes(png_bytes((64, 48)))
    status, *_ = client.predict(handle_file(str(image)), "general", "wrist", api_name="/create_case")
    assert status.startswith("Case ") and status.endswith("created.")
    case_id = int(status.split()[1])

    job = client.submit("What is shown?", [], api_name="/ask")
    outputs = list(job)
    final_chat, final_note, message_id = job.result()
    assert len(outputs) >= 2  # streamed: partial answers before the saved one
    assert final_note.startswith(f"Answer saved (message {message_id})") and "demo weights" in final_note
    assert final_chat[-1]["role"] == "assistant"

    case = service.store.open_case(service.user("alice"), case_id)
    assert [m.role for m in case.messages] == ["user", "assistant"]
    assert case.messages[0].content == "What is shown?"
    answer = case.messages[1]
    assert answer.id == message_id and answer.content == _text(final_chat[-1]["content"])
    assert answer.model_run.visual_tokens > 0 and answer.model_run.demo_weights

    assert client.predict(message_id, "accepted", "", api_name="/review").startswith("Review ")
    bob = Client(url, auth=("bob", "bob-password"), verbose=False)
    assert bob.predict(message_id, "accepted", "", api_name="/review") == f"⚠️ case {case_id} not found"
    # The PHI-bearing upload name reached neither the asset store nor Gradio's cache.
    assert not [p for p in _files(home) if "Doe_John" in str(p)]

    tables = client.predict(api_name="/list_cases")
    assert [row[0] for row in tables["data"]] == [case_id]


def test_other_users_case_is_invisible(served, tmp_path):
    service, url, _ = served
    alice = Client(url, auth=("alice", "alice-password"), verbose=False)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes((40, 40), (0, 0, 0)))
    status, *_ = alice.predict(handle_file(str(image)), "general", "private", api_name="/create_case")
    case_id = int(status.split()[1])

    bob = Client(url, auth=("bob", "bob-password"), verbose=False)
    assert bob.predict(api_name="/list_cases")["data"] == []
    viewer, chat, note = bob.predict(case_id, api_name="/open_case")
    assert viewer is None and chat == [] and note == f"⚠️ case {case_id} not found"
    _, _, note = alice.predict(case_id, api_name="/open_case")
    assert note == f"Case {case_id}: private"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "The file is empty"),
    (b"just some text, not an image", "not an image"),
    (png_header_only(4000, 4000), "16,000,000 pixels; the limit is 1,000,000"),
])
def test_bad_uploads_show_a_reason_and_write_nothing(served, tmp_path, content, message):
    service, url, home = served
    client = Client(url, auth=("alice", "alice-password"), verbose=False)
    before, blobs_before = _counts(service), len(_files(home / "assets"))
    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    status, *_ = client.predict(handle_file(str(bad)), "general", "bad", api_name="/create_case")
    assert status.startswith("⚠️") and message in status
    assert _counts(service) == before
    assert len(_files(home / "assets")) == blobs_before


def test_status_banner_is_honest_about_demo_weights(served):
    service, url, _ = served
    client = Client(url, auth=("bob", "bob-password"), verbose=False)
    banner = client.predict(api_name="/model_status")
    assert DEMO_BANNER in banner  # the tiny model has random weights
    from loupe.core.vlm.slot import SlotStatus

    failed = status_banner(SlotStatus("failed", "x", error="cannot load model 'x': offline"))
    assert "No model is available" in failed and "offline" in failed and "Use demo model" in failed
    assert DEMO_BANNER not in status_banner(SlotStatus("ready", "real/model"))


def test_model_runs_are_counted_once_per_answer(served):
    service, _, _ = served
    with service.store.sessions() as s:
        runs = s.scalar(select(func.count()).select_from(ModelRun))
        answers = s.scalar(select(func.count()).select_from(ChatMessage).where(ChatMessage.role == "assistant"))
    assert runs == answers
