"""A question, a review, a share or an archive reaches the case on screen or nothing: never another case.

Issue 18 §2. While a case is being created or opened the actions that write to a case are off in the page and
refused by the server; an action sent for a case other than the one the server last put on that screen is refused.
After a new answer the review panel and the viewer's highlights follow it, unless the user picked another.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import handle_file
from helpers import png_bytes
from sqlalchemy import select
from test_browser import CHROMIUM_ARGS, chromium  # noqa: F401 - the fixture is used by name
from webapp import Served, serve

from loupe.core.cases.models import CaseShare, ChatMessage, Review
from loupe.core.plugins import AssetView, DomainTab, IngestedAsset, VisualContext
from loupe.core.vlm.base import StreamChunk
from loupe.core.vlm.hf import HFVLM
from loupe.domains.general import GeneralDomain

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
QUESTION = "Is the fracture displaced?"
STATUS = 5  # position of the status in /general_create_case's outputs


@contextmanager
def _held(owner: object, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> Iterator[tuple]:
    """Calls of ``owner.name`` matching ``when`` wait (once) until released: a slow upload or a slow database."""
    started, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def held(*args: object, **kwargs: object) -> object:
        if not started.is_set() and when(*args, **kwargs):
            started.set()
            release.wait(120)
        return original(*args, **kwargs)

    setattr(owner, name, held)
    try:
        yield started, release
    finally:
        release.set()
        delattr(owner, name)


def _stored(served: Served, text: str) -> list[int]:
    """The cases holding a question with this text."""
    with served.service.store.sessions() as s:
        return list(s.scalars(select(ChatMessage.case_id).where(ChatMessage.content == text)))


def _handler(served: Served, api_name: str) -> Callable:
    """The Python function behind a named Gradio endpoint of the running app."""
    for route in served.app.routes_app.routes:
        blocks = getattr(getattr(route, "app", None), "blocks", None)
        if blocks is not None:
            return next(fn.fn for fn in blocks.fns.values() if fn.api_name == api_name)
    raise LookupError(api_name)


def _create(client, tmp_path: Path, name: str) -> int:  # noqa: ANN001 - a gradio_client Client
    image = tmp_path / f"{name}.png"
    image.write_bytes(png_bytes((64, 48), (len(name) * 40 % 256, 90, 30)))
    out = client.predict(handle_file(str(image)), name, api_name="/general_create_case")
    assert "created." in out[STATUS], out[STATUS]
    return int(out[STATUS].split()[1])


# -- the server refuses what is not for the case on screen ---------------------------------------------------------

def test_actions_for_a_case_not_on_screen_are_refused_and_change_nothing(tmp_path, tiny_model_dir):
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"alice": "user", "bob": "user"}) as served:
        alice = served.client("alice")
        first = _create(alice, tmp_path, "first")
        alice.submit(first, "What is shown?", api_name="/general_ask").result()
        answer = served.service.store.open_case(served.service.user("alice"), first).messages[1].id
        second = _create(alice, tmp_path, "second")  # alice's screen shows case 2 now
        screen = gr.Request(username="alice", session_hash=alice.session_hash)

        # Sent for case 1 (as a page that had not caught up would): refused, stored nowhere.
        steps = list(_handler(served, "general_ask")(first, QUESTION, "low", 1.0, screen))
        assert steps[-1][2] == ("⚠️ This was sent for case 1, but the screen shows case 2: nothing was done. "
                                "Check the case on screen and try again.")
        assert steps[-1][1] == QUESTION  # left in the question box
        assert _stored(served, QUESTION) == []

        review = _handler(served, "general_review")
        assert review(answer, "rejected", "", False, first, screen)[0].startswith("⚠️ This was sent for case 1")
        # The review names the case on screen, but the answer is case 1's: refused too.
        note = review(answer, "rejected", "", False, second, screen)[0]
        assert note == "⚠️ That answer is not in the case on screen: nothing was saved."
        assert _handler(served, "general_share")(first, "bob", screen)[0].startswith("⚠️ This was sent for case 1")
        assert _handler(served, "general_archive")(first, "", False, screen)[0].startswith("⚠️ This was sent for case 1")
        with served.service.store.sessions() as s:
            assert s.scalars(select(Review)).all() == [] and s.scalars(select(CaseShare)).all() == []
        assert served.service.store.open_case(served.service.user("alice"), first).archived_at is None

        # The same calls for the case on screen go through.
        steps = list(_handler(served, "general_ask")(second, QUESTION, "low", 1.0, screen))
        assert steps[-1][2].startswith("Answered in"), steps[-1][2]
        assert _stored(served, QUESTION) == [second]


def test_a_question_sent_while_a_case_is_being_created_is_refused(tmp_path, tiny_model_dir):
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"alice": "user"}) as served:
        alice = served.client("alice")
        first = _create(alice, tmp_path, "first")
        image = tmp_path / "second.png"
        image.write_bytes(png_bytes((40, 40)))
        with _held(served.service, "create_case") as (started, release):
            creating = alice.submit(handle_file(str(image)), "second", api_name="/general_create_case")
            assert started.wait(60)
            chat, box, status = alice.submit(first, QUESTION, api_name="/general_ask").result()
            release.set()
            assert "created." in creating.result()[STATUS]
        assert status == "⚠️ A case is being opened: nothing was done. Try again once it is on screen."
        assert box == QUESTION
        assert _stored(served, QUESTION) == []
        assert first == 1


# -- in a real browser --------------------------------------------------------------------------------------------

@contextmanager
def _browser(served: Served, chromium_path: str, user: str) -> Iterator:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(served.url)
        page.fill("#username", user)
        page.fill("#password", f"{user}-password")
        page.click("button[type=submit]")
        expect(page.locator("#model-status")).to_contain_text("ready", timeout=60_000)
        try:
            yield page
        finally:
            browser.close()


def _create_in_page(page, tab: str, image: Path, title: str, wait: bool = True) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.get_by_role("tab", name="New case").click()
    page.locator(f"#{tab}-upload input[type=file]").set_input_files(str(image))
    page.get_by_label("Title").fill(title)
    page.locator(f"#{tab}-create").click()
    if wait:
        expect(page.locator(f"#{tab}-status")).to_contain_text(f"Case {title[-1]} created.", timeout=60_000)


def _try_to_ask(page) -> bool:  # noqa: ANN001 - a Playwright page
    """Click Ask as a hurried user would (whether or not it is enabled); True if the click could do anything."""
    from playwright.sync_api import expect

    enabled = page.locator("#general-ask").is_enabled()
    page.locator("#general-ask").click(force=True)
    if enabled:  # the question went to the server: wait for its answer or its refusal
        expect(page.locator("#general-status")).to_contain_text(re.compile("Answered in|⚠️"), timeout=60_000)
    return enabled


def _case_on_screen(page) -> int:  # noqa: ANN001
    return int(re.search(r"Case (\d+):", page.locator("#general-case-header").inner_text()).group(1))


@pytest.mark.browser
def test_in_the_browser_a_question_asked_while_a_case_is_created_never_lands_in_the_old_case(
        tmp_path, tiny_model_dir, chromium):  # noqa: F811 - the fixture
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    image = tmp_path / "scan.png"
    image.write_bytes(png_bytes((120, 90), (30, 160, 200)))
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"erin": "user"}) as served, \
            _browser(served, chromium, "erin") as page:
        _create_in_page(page, "general", image, "wrist 1")  # case 1 is on screen
        page.locator("#general-question textarea").fill(QUESTION)
        with _held(served.service, "create_case") as (started, release):
            _create_in_page(page, "general", image, "wrist 2", wait=False)
            assert started.wait(60)  # case 2 is being created; case 1 is still on screen
            page.screenshot(path=str(ARTIFACTS / "case-binding-creating.png"), full_page=True)
            sent = _try_to_ask(page)
            release.set()
            expect(page.locator("#general-case-header")).to_contain_text("Case 2: wrist 2", timeout=60_000)
        expect(page.locator("#general-ask")).to_be_enabled(timeout=30_000)  # on again once case 2 is shown
        stored = _stored(served, QUESTION)
        assert 1 not in stored, "the question went to case 1 while case 2 was opening"
        assert set(stored) <= {_case_on_screen(page)}
        assert not sent or "⚠️ A case is being opened" in page.locator("#general-status").inner_text() or stored

        # Asked now, it lands in case 2, the case on screen.
        page.locator("#general-question textarea").fill(QUESTION)
        page.locator("#general-ask").click()
        expect(page.locator("#general-status")).to_contain_text("Answered in", timeout=60_000)
        assert _stored(served, QUESTION) == [2]
        page.screenshot(path=str(ARTIFACTS / "case-binding-created.png"), full_page=True)


@pytest.mark.browser
def test_in_the_browser_a_question_asked_while_switching_cases_never_lands_in_the_case_left(
        tmp_path, tiny_model_dir, chromium):  # noqa: F811 - the fixture
    from playwright.sync_api import expect

    image = tmp_path / "scan.png"
    image.write_bytes(png_bytes((120, 90), (200, 60, 30)))
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"erin": "user"}) as served, \
            _browser(served, chromium, "erin") as page:
        _create_in_page(page, "general", image, "knee 1")
        _create_in_page(page, "general", image, "knee 2")  # case 2 is on screen
        page.locator("#general-question textarea").fill(QUESTION)
        page.get_by_role("tab", name="Cases").click()
        store = served.service.store
        with _held(store, "open_case", lambda user, case_id: case_id == 1) as (started, release):
            page.locator("#general-cases").get_by_text("knee 1").click()
            assert started.wait(60)  # case 1 is being opened; case 2 is still on screen
            sent = _try_to_ask(page)
            release.set()
            expect(page.locator("#general-case-header")).to_contain_text("Case 1: knee 1", timeout=60_000)
        expect(page.locator("#general-ask")).to_be_enabled(timeout=30_000)
        stored = _stored(served, QUESTION)
        assert 2 not in stored, "the question went to case 2 while case 1 was opening"
        assert set(stored) <= {_case_on_screen(page)}
        assert not sent or "⚠️ A case is being opened" in page.locator("#general-status").inner_text() or stored
        page.screenshot(path=str(ARTIFACTS / "case-binding-switched.png"), full_page=True)


# -- the review panel and the viewer follow the newest answer ------------------------------------------------------

class HeldStreaming(HFVLM):
    """The real tiny model; while ``gate`` is clear an answer waits before its first word."""

    gate = threading.Event()
    waiting = threading.Event()  # an answer has reached the gate

    def stream(self, messages, options=None, conversation=None) -> Iterator[StreamChunk]:  # noqa: ANN001
        self.waiting.set()
        self.gate.wait(120)
        yield from super().stream(messages, options, conversation)


class MarkedDomain(GeneralDomain):
    """General images whose answers each cite a place named after their question, shown on the viewer as the
    remote-sensing and slide viewers show the tiles an answer read."""

    name = "marked"
    title = "Marked"

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        context = super().context(assets, question)
        context.meta["asked"] = question
        return context

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict) -> list[dict]:
        return [{"box": [0, 0, 10, 10], "text": f"place read for {context_meta['asked']}"}]

    def build_tab(self, tab: DomainTab) -> None:
        def render(assets: list[AssetView], highlights: list[dict]) -> str:
            read = "".join(f"<li>{cited['text']}</li>" for cited in highlights)
            return f'<p>{len(assets)} image(s)</p><p>Read for this answer:</p><ol class="read">{read}</ol>'

        tab.set_viewer(render)


@pytest.mark.browser
def test_in_the_browser_review_and_viewer_follow_the_newest_answer_unless_one_is_picked(
        tmp_path, tiny_model_dir, chromium):  # noqa: F811 - the fixture
    from playwright.sync_api import expect

    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes((120, 90), (90, 140, 60)))
    HeldStreaming.gate.set()
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"erin": "user"}, HeldStreaming.from_pretrained,
               domains={"marked": MarkedDomain()}) as served, _browser(served, chromium, "erin") as page:
        page.get_by_role("tab", name="Marked").click()
        _create_in_page(page, "marked", image, "field 1")
        choice, read = page.locator("#marked-answer-choice input"), page.locator("#marked-viewer ol.read")

        def ask(question: str) -> None:
            page.locator("#marked-question textarea").fill(question)
            page.locator("#marked-ask").click()

        ask("Where is the river?")
        expect(page.locator("#marked-status")).to_contain_text("Answered in", timeout=60_000)
        expect(choice).to_have_value(re.compile(r"^Answer 1"), timeout=30_000)
        expect(read).to_have_text("place read for Where is the river?", timeout=30_000)

        ask("Where is the bridge?")
        expect(page.locator("#marked-status")).to_contain_text("Answered in", timeout=60_000)
        expect(choice).to_have_value(re.compile(r"^Answer 2"), timeout=30_000)  # the newest answer
        expect(read).to_have_text("place read for Where is the bridge?", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "case-binding-newest-answer.png"), full_page=True)

        # A reviewer who picks answer 1 while answer 3 is on its way keeps answer 1 in the panel and on the viewer.
        HeldStreaming.gate.clear()
        ask("Where is the road?")
        expect(page.locator("#marked-status")).to_contain_text("Answering", timeout=30_000)
        choice.click()
        page.get_by_role("option", name="Answer 1:").click()
        expect(read).to_have_text("place read for Where is the river?", timeout=30_000)
        HeldStreaming.gate.set()
        expect(page.locator("#marked-status")).to_contain_text("Answered in", timeout=60_000)
        expect(page.locator("#marked-chat")).to_contain_text("place read for Where is the road?", timeout=30_000)
        choice.click()  # the panel has caught up: answer 3 is listed...
        expect(page.get_by_role("option", name=re.compile("^Answer 3:"))).to_be_visible(timeout=30_000)
        page.keyboard.press("Escape")
        expect(choice).to_have_value(re.compile(r"^Answer 1"))  # ...and the pick is kept
        expect(read).to_have_text("place read for Where is the river?")
        page.screenshot(path=str(ARTIFACTS / "case-binding-picked-answer.png"), full_page=True)


@pytest.mark.browser
def test_in_the_browser_an_answer_arriving_after_a_switch_stays_in_its_case_and_off_the_new_screen(
        tmp_path, tiny_model_dir, chromium):  # noqa: F811 - the fixture
    from playwright.sync_api import expect

    image = tmp_path / "scan.png"
    image.write_bytes(png_bytes((120, 90), (60, 60, 200)))
    HeldStreaming.gate.set()
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"erin": "user"}, HeldStreaming.from_pretrained) \
            as served, _browser(served, chromium, "erin") as page:
        _create_in_page(page, "general", image, "hip 1")
        _create_in_page(page, "general", image, "hip 2")
        HeldStreaming.gate.clear()  # case 2's answer waits
        page.locator("#general-question textarea").fill(QUESTION)
        page.locator("#general-ask").click()
        expect(page.locator("#general-status")).to_contain_text("Answering", timeout=30_000)
        page.get_by_role("tab", name="Cases").click()
        page.locator("#general-cases").get_by_text("hip 1").click()
        expect(page.locator("#general-case-header")).to_contain_text("Case 1: hip 1", timeout=60_000)
        HeldStreaming.gate.set()
        expect(page.locator("#general-status")).to_have_text(
            "The answer to your question about case 2 is stored in case 2.", timeout=60_000)
        assert _stored(served, QUESTION) == [2]
        expect(page.locator("#general-case-header")).to_contain_text("Case 1: hip 1")
        expect(page.locator("#general-chat")).not_to_contain_text("fracture")  # case 1's conversation is empty
        page.screenshot(path=str(ARTIFACTS / "case-binding-answer-after-switch.png"), full_page=True)


@pytest.mark.browser
def test_in_the_browser_a_question_queued_behind_another_users_answer_is_refused_if_another_case_opens_meanwhile(
        tmp_path, tiny_model_dir, chromium):  # noqa: F811 - the fixture
    """The second-user probe: Ask waits in the queue (one answer at a time) while bob's answer is generating; erin
    opens another case meanwhile. Her question carries the case of her click, so it is refused, never stored in
    the case opened since (a gr.State would have been read when the job ran: the new case)."""
    from playwright.sync_api import expect

    image = tmp_path / "scan.png"
    image.write_bytes(png_bytes((120, 90), (120, 30, 160)))
    HeldStreaming.gate.set()
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"erin": "user", "bob": "user"},
               HeldStreaming.from_pretrained) as served, _browser(served, chromium, "erin") as page:
        _create_in_page(page, "general", image, "ankle 1")
        _create_in_page(page, "general", image, "ankle 2")  # case 2 is on screen
        bob = served.client("bob")
        bobs = _create(bob, tmp_path, "bob")
        HeldStreaming.gate.clear()
        HeldStreaming.waiting.clear()
        bobs_answer = bob.submit(bobs, "What does bob see?", api_name="/general_ask")
        try:
            assert HeldStreaming.waiting.wait(60)  # bob's answer holds the model
            page.locator("#general-question textarea").fill(QUESTION)
            page.locator("#general-ask").click()  # for case 2: it waits behind bob's answer
            expect(page.get_by_text(re.compile(r"queue: \d+/\d+")).first).to_be_visible(timeout=30_000)
            page.get_by_role("tab", name="Cases").click()
            page.locator("#general-cases").get_by_text("ankle 1").click()
            expect(page.locator("#general-case-header")).to_contain_text("Case 1: ankle 1", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "case-binding-queued-question.png"), full_page=True)
        finally:
            HeldStreaming.gate.set()
        bobs_answer.result()
        expect(page.locator("#general-status")).to_contain_text(re.compile("⚠️|Answered in"), timeout=60_000)
        stored = _stored(served, QUESTION)
        assert 1 not in stored, "the question typed for case 2 was stored in case 1, opened while it waited"
        assert stored == []
        expect(page.locator("#general-status")).to_have_text(
            "⚠️ This was sent for case 2, but the screen shows case 1: nothing was done. "
            "Check the case on screen and try again.")
        expect(page.locator("#general-question textarea")).to_have_value(QUESTION)  # kept for the user
        expect(page.locator("#general-case-header")).to_contain_text("Case 1: ankle 1")
        page.screenshot(path=str(ARTIFACTS / "case-binding-queued-question-refused.png"), full_page=True)


WRITES = ["general_ask", "general_review", "general_share", "general_unshare", "general_archive", "general_restore",
          "medical_check_report", "medical_sign_off_report"]


def test_every_action_that_writes_to_a_case_takes_the_case_id_the_page_sent_with_the_click(tmp_path):
    """A gr.State is read when a queued job runs, a component's value is sent by the page with the click: the case
    id of every write is the component shown with the header, never the server-side state."""
    import inspect

    with serve(tmp_path / "home", None, {"rita": "reviewer"}) as served:
        mounted = (getattr(getattr(route, "app", None), "blocks", None) for route in served.app.routes_app.routes)
        blocks = next(b for b in mounted if b is not None)
        fns = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name in WRITES}
        assert set(fns) == set(WRITES)
        for name, fn in fns.items():
            params = [p for p in inspect.signature(fn.fn).parameters if p != "request"]
            case_input = fn.inputs[params.index("case_id")]
            assert not isinstance(case_input, gr.State), f"{name} reads its case id when it runs, not at the click"
            assert isinstance(case_input, gr.Number) and case_input.elem_id.endswith("-shown-case"), name
            if "read_id" in params:  # a sign-off signs the report version on screen at the click
                assert not isinstance(fn.inputs[params.index("read_id")], gr.State), name


def test_a_report_check_queued_behind_another_users_is_refused_if_another_case_opens_meanwhile(tmp_path):
    """The report panel's race: rita's Check report waits behind ann's; she opens another case; her report, sent
    for the first case, is refused, and is saved in neither case."""
    study = Path(__file__).resolve().parent.parent / "data" / "medical" / "dicom" / "DX_chest_MONOCHROME1.dcm"
    upload = tmp_path / "dx.dcm"
    upload.write_bytes(study.read_bytes())
    report = "FINDINGS: Small right pleural effusion.\nIMPRESSION: Small right pleural effusion."
    with serve(tmp_path / "home", None, {"rita": "reviewer", "ann": "user"}) as served:
        rita, ann = served.client("rita"), served.client("ann")
        first = int(rita.predict(handle_file(str(upload)), "first", api_name="/medical_create_case")[STATUS].split()[1])
        second = int(rita.predict(handle_file(str(upload)), "second", api_name="/medical_create_case")[STATUS]
                     .split()[1])
        anns = int(ann.predict(handle_file(str(upload)), "ann's", api_name="/medical_create_case")[STATUS].split()[1])
        rita.predict(first, api_name="/medical_open_case")
        store = served.service.store
        with _held(store, "save_report", lambda user, *a, **k: user.username == "ann") as (started, release):
            anns_check = ann.submit(anns, report, False, None, api_name="/medical_check_report")
            assert started.wait(60)  # ann's check holds the report checker's one slot
            ritas_check = rita.submit(first, report, False, None, api_name="/medical_check_report")  # waits behind it
            rita.predict(second, api_name="/medical_open_case")  # opening runs at once
            release.set()
            assert "Saved" in anns_check.result()[0]
            shown = ritas_check.result()[0]
        assert f"This was sent for case {first}, but the screen shows case {second}" in shown
        user = served.service.user("rita")
        assert store.latest_report(user, second) is None, "the report written for the first case reached the second"
        assert store.latest_report(user, first) is None


def test_a_report_is_saved_and_signed_off_only_for_the_case_on_screen(tmp_path):
    study = Path(__file__).resolve().parent.parent / "data" / "medical" / "dicom" / "DX_chest_MONOCHROME1.dcm"
    upload = tmp_path / "dx.dcm"
    upload.write_bytes(study.read_bytes())
    with serve(tmp_path / "home", None, {"rita": "reviewer"}) as served:
        rita = served.client("rita")
        out = rita.predict(handle_file(str(upload)), "first", api_name="/medical_create_case")
        report = "FINDINGS: Small right pleural effusion.\nIMPRESSION: Small right pleural effusion."
        shown, _ = rita.predict(int(out[STATUS].split()[1]), report, False, None, api_name="/medical_check_report")
        assert "Saved" in shown
        rita.predict(handle_file(str(upload)), "second", api_name="/medical_create_case")  # on screen now
        user, store = served.service.user("rita"), served.service.store
        first = next(c.id for c in store.list_cases(user, domain="medical") if c.title == "first")
        version = store.latest_report(user, first)
        screen = gr.Request(username="rita", session_hash=rita.session_hash)

        shown, _ = _handler(served, "medical_check_report")(first, "FINDINGS: None.\nIMPRESSION: Normal.", False,
                                                            version.id, screen)
        assert f"This was sent for case {first}, but the screen shows case" in shown
        shown = _handler(served, "medical_sign_off_report")(first, version.id, screen)
        assert f"This was sent for case {first}, but the screen shows case" in shown
        latest = store.latest_report(user, first)
        assert latest.id == version.id and latest.signed_off_by is None  # no new version, no sign-off
