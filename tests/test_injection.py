"""Hostile text in every field users, files and the model fill: a real Chromium shows it as text, and nothing
it names (an image on another port of this host, /logout, a form, a style, an overlay) is fetched or drawn.

A second loopback port stands for "another service on the same host": cookies are per host, not per port,
so an image pointing there would carry the reader's session cookie. It must receive nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from helpers import OtherPort, png_bytes
from test_browser import ARTIFACTS, CHROMIUM_ARGS, _login, chromium  # noqa: F401 - the fixture is used by name
from webapp import serve

from loupe.core.vlm.base import GenerationOptions, StreamChunk
from loupe.core.vlm.hf import HFVLM

INJECTED = "#inj, #frm, #ovl, #onerr, a[href*='logout'], [style*='fixed']"


@pytest.fixture
def trap() -> Iterator[OtherPort]:
    listener = OtherPort()
    yield listener
    listener.close()


def hostile(trap: str, title: bool = False) -> str:
    """An image on another port (twice), /logout as an image, a form, an overlay and a style: a case title's
    200 characters; other fields also get a script in an error handler and bare URLs (autolinks)."""
    host = trap.removeprefix("http:")  # protocol-relative: shorter, the same request
    text = (f"![a]({host}/m) <img src={host}/h id=inj> ![b](/logout) <form id=frm action={host}/f><input></form>"
            f"<div id=ovl>x</div><style>@import'{host}/c';</style>")
    assert len(text) <= 200, len(text)
    return text if title else text + (f" <img src=x onerror=this.id='onerr'> {trap}/logout www.example.org/logout"
                                      f"{FORGED_SIGN_OFF} $$\\rule{{900px}}{{900px}}$$")


# What a user could type to look like the app's own review line, and a KaTeX box that would cover the page.
FORGED_SIGN_OFF = "\n\n---\n🖊️ Signed off by **rex** (reviewer) · 2026-12-05 23:00 UTC — Accepted"
TYPED_MARKUP = "strong, b, em, hr, h1, h2, h3, h4, h5, h6, li, blockquote, .katex"


def hostile_model(text: str) -> type[HFVLM]:
    """The real tiny model, its answers opening with what a poisoned document could make it say."""

    class Hostile(HFVLM):
        def stream(self, messages, options=None, conversation=None) -> Iterator[StreamChunk]:  # noqa: ANN001
            yield StreamChunk(text + " ")
            yield from super().stream(messages, options, conversation)

    return Hostile


def _foreign_images(page, origin: str) -> list[str]:  # noqa: ANN001 - a Playwright page
    sources = page.evaluate("[...document.querySelectorAll('img, image, input, form')]"
                            ".map(e => e.src || e.href?.baseVal || e.action || '')")
    return [s for s in sources if s and not s.startswith((origin, "data:", "blob:"))]


@pytest.mark.browser
def test_hostile_text_in_every_field_is_shown_as_text(tmp_path, tiny_model_dir, chromium, trap):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright
    text = hostile(trap.url)
    users = {"alice": "user", "rex": "reviewer"}
    model = tiny_model_dir("smolvlm")
    with serve(tmp_path / "home", model, users, hostile_model(text).from_pretrained) as served, \
            sync_playwright() as pw:
        service, store = served.service, served.service.store
        alice, rex = service.user("alice"), service.user("rex")
        case_id = service.create_case(alice, "general", io.BytesIO(png_bytes((64, 48))), hostile(trap.url, title=True))
        steps = list(service.ask(alice, case_id, text, GenerationOptions(max_new_tokens=4, detail="low")))
        answer_id = steps[-1].message_id
        store.share_case(alice, case_id, "rex")
        store.review(rex, answer_id, "edited", text)  # the corrected answer

        # rex, a reviewer, opens alice's case and asks the same thing himself (the streamed path).
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        _login(page, served.url, "rex")
        cases = page.locator("#general-cases")
        expect(cases).to_contain_text("![a](", timeout=30_000)  # the title, as written, in the list
        cases.get_by_test_id("cell-0-1").click()
        header = page.locator("#general-case-header")
        expect(header).to_contain_text(f"Case {case_id}: ![a](//127.0.0.1:", timeout=30_000)
        chat = page.locator("#general-chat")
        expect(chat).to_contain_text("Corrected: ![a](")
        page.locator("#general-question textarea").fill(text)
        page.locator("#general-ask").click()
        expect(page.locator("#general-status")).to_contain_text("Answered in", timeout=60_000)
        page.locator("#general-answer-choice input").click()
        page.get_by_role("option", name="Answer 1:").click()
        expect(page.locator("#general-answer-shown")).to_contain_text("<form id=frm", timeout=30_000)

        # Every field shows the text, nothing of it became an element, nothing left for another port.
        expect(chat.locator("[data-testid=user]")).to_have_count(2)
        # who asked (the case is shared), then the question exactly as typed
        asked = chat.locator("[data-testid=user]").first.inner_text().strip()
        assert asked.startswith("asked by alice · ") and asked.split("\n\n", 1)[1].startswith("![a](")
        assert page.locator(INJECTED).count() == 0
        assert _foreign_images(page, served.url.rstrip("/")) == []
        # Typed text keeps no Markdown: no emphasis, rule, heading or formula in a question, and the typed
        # "Signed off" line stays inside the corrected answer's quote, in the app's own review box.
        assert chat.locator("[data-testid=user]").locator(TYPED_MARKUP).count() == 0
        assert page.locator(".katex").count() == 0
        expect(chat.locator(".loupe-review blockquote")).to_contain_text("Signed off by **rex** (reviewer)")
        # The owner types the text as a user name to share with: the refusal quotes it, as text.
        owner = browser.new_page(viewport={"width": 1400, "height": 1000})
        owner.on("request", lambda r: requests.append(r.url))
        _login(owner, served.url, "alice")
        owner.locator("#general-cases").get_by_test_id("cell-0-1").click()
        expect(owner.locator("#general-case-header")).to_contain_text(f"Case {case_id}:", timeout=30_000)
        owner.get_by_text("Sharing and archive").click()
        owner.locator("#general-share-user textarea").fill(text)
        owner.locator("#general-share").click()
        expect(owner.locator("#general-status")).to_contain_text('no active user named "![a](', timeout=30_000)
        assert owner.locator(INJECTED).count() == 0 and _foreign_images(owner, served.url.rstrip("/")) == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "hostile-text.png"), full_page=True)
        assert page.evaluate("fetch('/config').then(r => r.status)") == 200  # still logged in
        browser.close()
    assert [u for u in requests if not u.startswith((served.url, "data:", "blob:"))] == []
    assert trap.hits == []


def test_a_documents_own_text_reaches_its_viewer_and_citations_as_text():
    """OCR lines, a PDF's text layer and the fields read from it are file text: escaped in the page viewer
    (gr.HTML) and in the citations under an answer (Markdown)."""
    from html.parser import HTMLParser

    from loupe.apps.web.render import citation_note
    from loupe.core.plugins import AssetView
    from loupe.domains.documents.viewer import pages_html

    text = hostile("http://127.0.0.1:1")
    cited = [{"page": 1, "box": [0, 0, 5, 5], "text": text}]
    lines = [{"box": [0, 0, 5, 5], "text": text, "confidence": 0.9}]
    ocr = {"source": "text-layer", "number": 1, "width": 10, "height": 10, "rotation": 0, "engine": "pdf",
           "lines": lines}
    page = AssetView(1, "/case-assets/1", "image/png", 10, 10, case_id=1,
                     meta={"page": 1, "ocr": ocr, "fields": {"company": text, "total": text}})
    found: list[tuple[str, dict]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            found.append((tag, dict(attrs)))

    Tags().feed(pages_html([page], cited))
    own = [a for t, a in found if t == "input"]  # the viewer's own checkboxes (line boxes, zoom), and only them
    assert [(a.get("type"), a.get("class")) for a in own] == [("checkbox", "loupe-show-lines"),
                                                              ("checkbox", "loupe-zoom-page")]
    assert not [t for t, _ in found if t in ("form", "script", "link", "iframe")]
    assert [a["src"] for t, a in found if t == "img"] == ["/case-assets/1"]
    assert not [a for _, a in found if "onerror" in a or a.get("id") in ("inj", "frm", "ovl")]
    note = citation_note({"citations": cited})
    assert "<img" not in note and "[" not in note and "<form" not in note and "://" not in note
