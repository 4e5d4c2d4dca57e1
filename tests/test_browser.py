"""A real headless Chromium: login, a case from upload to reviewed answers, logout leaving nothing behind,
and the admin page. Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import rasterio
from conftest import missing_service
from helpers import png_bytes
from PIL import Image
from sqlalchemy import select
from webapp import serve

from loupe.core.cases.models import Review
from loupe.core.vlm.base import StreamChunk
from loupe.core.vlm.hf import HFVLM

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
STORAGE = """async () => ({
  local: Object.keys(localStorage).map(k => k + '=' + localStorage.getItem(k)).join('\\n'),
  session: Object.keys(sessionStorage).map(k => k + '=' + sessionStorage.getItem(k)).join('\\n'),
  indexeddb: (await indexedDB.databases()).map(d => d.name).join(','),
})"""


class SlowStreaming(HFVLM):
    """The real tiny model, as slow to start as a real-size one on a CPU, so a reviewer can act meanwhile."""

    def stream(self, messages, options=None, conversation=None) -> Iterator[StreamChunk]:  # noqa: ANN001
        time.sleep(4)
        yield from super().stream(messages, options, conversation)


@pytest.fixture
def chromium() -> str:
    path = os.environ.get("LOUPE_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing_service("Debian's chromium is not installed (make test installs it)")
    return path


def _login(page, url: str, user: str) -> None:
    page.goto(url)
    page.fill("#username", user)
    page.fill("#password", f"{user}-password")
    page.click("button[type=submit]")


def _ask(page, question: str):
    page.locator("#general-question textarea").fill(question)
    page.locator("#general-ask").click()


def _pick_answer(page, number: int) -> None:
    page.locator("#general-answer-choice input").click()
    page.get_by_role("option", name=f"Answer {number}:").click()


@pytest.mark.browser
def test_case_review_logout_and_admin_in_a_real_browser(tmp_path, tiny_model_dir, chromium):
    from playwright.sync_api import expect, sync_playwright
    image = tmp_path / "DOE_JANE_1960-02-03.png"
    image.write_bytes(png_bytes((320, 240), (250, 200, 0)))
    ARTIFACTS.mkdir(exist_ok=True)
    users = {"erin": "user", "root": "admin"}
    model = tiny_model_dir("smolvlm")
    with serve(tmp_path / "home", model, users, SlowStreaming.from_pretrained) as served, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        page.goto(served.url)
        expect(page).to_have_url(f"{served.url}login")
        page.fill("#username", "erin")
        page.fill("#password", "wrong-password")
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_have_text("Incorrect user name or password.")
        _login(page, served.url, "erin")
        expect(page.locator("#model-status")).to_contain_text("Demo weights", timeout=30_000)
        expect(page.get_by_role("tab", name="Admin")).to_have_count(0)  # not for plain users

        page.get_by_role("tab", name="New case").click()
        page.locator("#general-upload input[type=file]").set_input_files(str(image))
        page.get_by_label("Title").fill("left wrist")
        page.locator("#general-create").click()
        expect(page.locator("#general-status")).to_contain_text("created.", timeout=30_000)
        expect(page.locator("#general-viewer img")).to_have_attribute("src", "/case-assets/1")
        # Nothing of the viewer's chrome covers the image's corners (where X-rays carry L/R markers) once the
        # page has settled (on a loaded machine Gradio's progress overlay may still be fading out).
        page.wait_for_function("""() => {
            const img = document.querySelector("#general-viewer img");
            const r = img.getBoundingClientRect();
            return [[r.left + 2, r.top + 2], [r.right - 2, r.top + 2], [r.left + 2, r.bottom - 2],
                    [r.right - 2, r.bottom - 2]].every(([x, y]) => document.elementFromPoint(x, y) === img);
        }""", timeout=30_000)
        _ask(page, "What colour is the image?")
        expect(page.locator("#general-status")).to_contain_text("Answered in", timeout=60_000)
        expect(page.locator("#general-question textarea")).to_have_value("")

        # Review answer 1 while answer 2 is still streaming: the review names the answer on screen.
        _ask(page, "Is anything unusual?")
        expect(page.locator("#general-status")).to_contain_text("Answering", timeout=30_000)
        _pick_answer(page, 1)
        page.locator("#general-verdict").get_by_text("Correct it").click()
        page.locator("#general-corrected textarea").fill("Yellow.")
        page.locator("#general-save-review").click()
        expect(page.locator("#general-review-note")).to_have_text("Review saved: answer 1 corrected.",
                                                                  timeout=30_000)
        streaming_when_saved = "Answering" in page.locator("#general-status").inner_text()
        expect(page.locator("#general-status")).to_contain_text("Answered in", timeout=60_000)
        with served.service.store.sessions() as s:
            review = s.scalar(select(Review))
        case = served.service.store.open_case(served.service.user("erin"), 1)
        assert review.message_id == case.messages[1].id and review.edited_text == "Yellow."
        assert streaming_when_saved  # the review really was saved during streaming

        # Reopen (a fresh page load) by clicking the case in the list; review answer 2 by clicking it.
        page.reload()
        page.get_by_role("tab", name="Cases").click()
        page.locator("#general-cases").get_by_test_id("cell-0-1").click()
        expect(page.locator("#general-case-header")).to_contain_text("Case 1: left wrist", timeout=30_000)
        expect(page.locator("#general-chat")).to_contain_text("Edited by erin")
        page.locator("#general-chat [data-testid=bot]").nth(1).click()
        expect(page.locator("#general-answer-choice input")).to_have_value(re.compile(r"^Answer 2"), timeout=10_000)
        page.locator("#general-verdict").get_by_text("Accept").click()
        page.locator("#general-save-review").click()
        expect(page.locator("#general-review-note")).to_have_text("Review saved: answer 2 accepted.",
                                                                  timeout=30_000)
        expect(page.locator("#general-chat")).to_contain_text("Accepted by erin")
        page.screenshot(path=str(ARTIFACTS / "case-with-reviews.png"), full_page=True)
        page.locator("#general-cases").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "case-list.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 700})

        # Log out: the browser keeps nothing of the case.
        page.locator("#logout").click()
        expect(page.locator("body")).to_have_attribute("data-wiped", "yes", timeout=15_000)
        left = page.evaluate(STORAGE)
        assert left == {"local": "", "session": "", "indexeddb": ""}, left
        page.goto(served.url)
        expect(page).to_have_url(f"{served.url}login")
        assert "left wrist" not in page.content()
        assert not [p for p in served.home.rglob("*DOE_JANE*")] and not served.files()

        # The admin page, for admins only, with a trained adapter listed beside its card's metrics.
        card = tmp_path / "codes-v1" / "adapter_card.json"
        card.parent.mkdir()
        card.write_text('{"steps": 160, "evaluations": [{"step": 160, "eval_loss": 0.07, "exact_match": 1.0}]}')
        served.service.store.register_adapter("codes-v1", "general", "HuggingFaceTB/SmolVLM-256M-Instruct",
                                              str(card.parent / "adapter"),
                                              {"steps": 160, "final_train_loss": 0.068, "best_eval_loss": 0.067,
                                               "trainable_fraction": 0.0108, "adapter_bytes": 9_827_840})
        _login(page, served.url, "root")
        page.get_by_role("tab", name="Admin").click()
        expect(page.locator("#admin-users")).to_contain_text("erin", timeout=30_000)
        page.get_by_text("Fine-tuned adapters").click()
        expect(page.locator("#admin-adapters")).to_contain_text("codes-v1", timeout=30_000)
        expect(page.locator("#admin-adapters")).to_contain_text("9.4 MB")
        page.get_by_text("Audit log (newest 200 events)").click()
        page.locator("#admin-audit-refresh").click()
        expect(page.locator("#admin-audit")).to_contain_text("review", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "admin-page.png"), full_page=True)
        browser.close()

    for name in ("case-with-reviews.png", "case-list.png", "admin-page.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


@contextmanager
def _signed_in(tmp_path: Path, model: Path, user: str, chromium: str, **options: object) -> Iterator:
    """A browser page logged in to a fresh app as ``user`` (role user); ``options`` go to ``serve`` (budgets)."""
    from playwright.sync_api import sync_playwright

    with serve(tmp_path / "home", model, {user: "user"}, **options) as served, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, served.url, user)
        try:
            yield page
        finally:
            browser.close()


def _create_case(page, tab: str, upload: Path, timeout_s: float = 60) -> None:  # noqa: ANN001 - a Playwright page
    """In the tab's New case form: upload the file and create the case (within ``timeout_s``)."""
    from playwright.sync_api import expect

    domain = tab.lower().replace(" ", "_")
    page.get_by_role("tab", name=tab).click()
    page.get_by_role("tab", name="New case").click()
    page.locator(f"#{domain}-upload input[type=file]").set_input_files(str(upload))
    page.locator(f"#{domain}-create").click()
    expect(page.locator(f"#{domain}-status")).to_contain_text("created.", timeout=timeout_s * 1000)


@pytest.mark.browser
def test_documents_tab_shows_the_lines_read_on_each_page(tmp_path, tiny_model_dir, chromium):
    from playwright.sync_api import expect
    scan = Path(__file__).resolve().parent.parent / "data" / "documents" / "ocr_test_rotated_90.pdf"
    ARTIFACTS.mkdir(exist_ok=True)
    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "dora", chromium) as page:
        _create_case(page, "Documents", scan)
        viewer = page.locator("#documents-viewer")
        expect(viewer.locator("img")).to_have_attribute("src", "/case-assets/1")
        expect(viewer.locator("svg rect")).to_have_count(3)  # the three lines of the turned scan, read upright
        expect(viewer).to_contain_text("Page 1 · 3 lines · read by OCR")
        assert "Docling bundles PDF" in viewer.locator("svg rect").first.inner_html()
        # Readable: the page as wide as the viewer, no line boxes until asked for.
        image, column = viewer.locator("img").first.bounding_box(), viewer.bounding_box()
        assert image["width"] >= 0.9 * column["width"], (image, column)
        stroke = "e => getComputedStyle(e).stroke"
        assert viewer.locator("svg rect").first.evaluate(stroke) == "none"
        page.screenshot(path=str(ARTIFACTS / "documents-page-readable.png"), full_page=True)
        viewer.get_by_text("Show the box of every line read").click()
        assert viewer.locator("svg rect").first.evaluate(stroke) != "none"
        viewer.get_by_text("Zoom ×3").click()  # small print: the page three times as wide, in its own scroll box
        zoomed = viewer.locator("img").first.bounding_box()
        assert zoomed["width"] >= 2.9 * image["width"] and viewer.locator(".loupe-page-scroll").first.evaluate(
            "e => e.scrollWidth > e.clientWidth")
        page.screenshot(path=str(ARTIFACTS / "documents-page-zoomed.png"), full_page=True)
        viewer.get_by_text("Zoom ×3").click()
        page.locator("#documents-question textarea").fill("What does the page say?")
        page.locator("#documents-ask").click()
        expect(page.locator("#documents-status")).to_contain_text("Answered", timeout=60_000)
        expect(page.locator("#documents-chat")).to_contain_text("Pages read: 1")  # said even when nothing is quoted
        page.screenshot(path=str(ARTIFACTS / "documents-page-boxes.png"), full_page=True)
        # The downloads: named for the case, with the format's extension and media type.
        for link, name, media in (("Markdown", "case-1.md", "text/markdown"), ("JSON", "case-1.json",
                                                                              "application/json")):
            with page.expect_download() as download:
                viewer.get_by_role("link", name=link).click()
            assert download.value.suggested_filename == name
            response = page.request.get(urljoin(page.url, f"/case-export/1/{name.split('.')[1]}"))
            assert response.headers["content-type"].startswith(media)


@pytest.mark.browser
def test_medical_tab_shows_a_study_with_its_windows(tmp_path, tiny_model_dir, chromium):
    from playwright.sync_api import expect
    study = Path(__file__).resolve().parent.parent / "data" / "medical" / "dicom" / "MR_enhanced_10frame.dcm"
    ARTIFACTS.mkdir(exist_ok=True)
    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "mia", chromium) as page:
        _create_case(page, "Medical", study)
        viewer = page.locator("#medical-viewer")
        stack = viewer.locator(".loupe-stack")  # every frame of the enhanced MR in the series viewer
        expect(stack).to_have_attribute("data-shown", "1", timeout=30_000)
        status = stack.locator(".loupe-stack-status")
        expect(status).to_contain_text(re.compile(r"^Image 1 of 10 · MR · window -?\d+/\d+$"))
        assert viewer.locator("figure").count() == 0  # no thumbnails: no frame has text in its pixels
        choices = stack.locator(".loupe-stack-window option").all_inner_texts()
        assert choices == ["as stored", "full range"]  # Hounsfield presets: a CT's only
        before = status.inner_text()
        stack.locator(".loupe-stack-window").select_option(label="full range")
        expect(status).not_to_have_text(before)  # the main view itself is windowed
        page.locator("#medical-question textarea").fill("Describe the findings.")
        page.locator("#medical-ask").click()
        expect(page.locator("#medical-status")).to_contain_text("Answered", timeout=60_000)
        page.locator("#medical-report textarea").fill(
            "FINDINGS: There is a small right pleural effusion.\nIMPRESSION: Small left pleural effusion.")
        page.locator("#medical-check-report").click()
        flags = page.locator("#medical-report-flags")
        expect(flags.locator("mark.loupe-flag")).to_have_count(2, timeout=30_000)  # the side, in both sections
        expect(flags).to_contain_text("laterality in the impression")
        # The sign-off carries the version on screen (sent by the page with the click): mia may not sign it.
        page.locator("#medical-sign-report").click()
        expect(flags).to_contain_text("reviewer role", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "medical-study-windows.png"), full_page=True)
    assert (ARTIFACTS / "medical-study-windows.png").stat().st_size > 10_000


@pytest.mark.browser
def test_remote_sensing_tab_shows_the_scene_on_a_map_with_the_tiles_an_answer_read(tmp_path, tiny_model_dir,
                                                                                   chromium):
    from playwright.sync_api import expect
    scene = Path(__file__).resolve().parent.parent / "data" / "remote_sensing" / "cogeo.tif"
    ARTIFACTS.mkdir(exist_ok=True)
    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "rita", chromium) as page:
        tiles: list[str] = []  # the map's tile requests, answered
        page.on("response", lambda r: tiles.append(r.url) if "/case-map/" in r.url and r.ok else None)
        _create_case(page, "Remote sensing", scene)
        viewer = page.locator("#remote_sensing-viewer")
        expect(viewer).to_contain_text("GeoTIFF 3 bands uint8, EPSG:3857 · 1,024 × 1,024 px")
        mapped = viewer.locator(".loupe-map")  # OpenLayers (vendored), in the scene's own CRS
        expect(mapped).to_have_attribute("data-shown", "1", timeout=30_000)
        expect(mapped.locator(".ol-scale-line")).to_have_count(1)
        assert mapped.get_attribute("data-basemap") is None  # none configured: nothing fetched from elsewhere
        assert any(url.endswith("info.json") for url in tiles)
        # The scene's own values: no stretch, then down to full resolution.
        expect(mapped.locator(".loupe-map-stretch-range")).to_contain_text(re.compile(r"^Black to white: band 1 "))
        mapped.locator(".loupe-map-stretch").select_option("min–max")
        expect(mapped.locator(".loupe-map-stretch-range")).to_have_text(  # 8-bit values as they are
            "Black to white: band 1 0–255 · band 2 0–255 · band 3 0–255")
        histogram = mapped.locator(".loupe-map-histogram")  # the bands' histograms, drawn with the cut-offs
        expect(histogram).to_be_visible()
        expect(histogram).to_have_attribute("aria-label", re.compile(r"^Histogram of each band over the scene"))
        inked = histogram.evaluate("c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                                   ".filter((v, i) => i % 4 === 3 && v > 0).length")
        assert inked > 300  # three curves and six dashed lines
        top = 10  # 1,024 px: levels 0..10, 10 full resolution
        mapped.evaluate(f"el => el.loupeMap.map.getView().setZoom({top})")
        deadline = time.monotonic() + 30
        pattern = rf"/case-map/\d+/{top}/\d+_\d+\.jpg\?view=true%20colour&stretch=min%E2%80%93max$"
        while not (full := [url for url in tiles if re.search(pattern, url)]):
            assert time.monotonic() < deadline, tiles
            page.wait_for_timeout(200)
        col, row = map(int, re.search(r"/(\d+)_(\d+)\.jpg", full[0]).groups())
        got = np.asarray(Image.open(io.BytesIO(page.request.get(full[0]).body())).convert("RGB"), dtype=np.int16)
        with rasterio.open(scene) as ds:
            want = ds.read([1, 2, 3], window=rasterio.windows.Window(col * 256, row * 256, 256, 256))
        assert got.shape == (256, 256, 3) and np.abs(got - want.transpose(1, 2, 0)).mean() < 4
        # The pointer's pixel and coordinates; a click's band values, as rasterio reads them there.
        screen = mapped.locator(".loupe-map-screen").bounding_box()
        x, y = screen["x"] + screen["width"] / 2, screen["y"] + screen["height"] / 2
        page.mouse.move(x, y)
        readout = mapped.locator(".loupe-map-readout")
        expect(readout).to_contain_text(re.compile(r"^Pixel x \d+, y \d+ · EPSG:3857 -?[\d.]+, -?[\d.]+$"))
        page.mouse.click(x, y)
        values = mapped.locator(".loupe-map-values")
        expect(values).to_contain_text(re.compile(r"° [NS], [\d.]+° [EW]$"), timeout=10_000)
        pc, pr = map(int, re.search(r"Pixel x (\d+), y (\d+):", values.inner_text()).groups())
        with rasterio.open(scene) as ds:
            want = ds.read(window=rasterio.windows.Window(pc, pr, 1, 1))[:, 0, 0].tolist()
        assert f"band 1 {want[0]}, band 2 {want[1]}, band 3 {want[2]}" in values.inner_text()
        page.screenshot(path=str(ARTIFACTS / "remote-sensing-map.png"), full_page=True)
        back = mapped.evaluate("""el => new Promise((done) => {  // and back to the whole scene
            const map = el.loupeMap.map;
            map.once("rendercomplete", () => done(map.getView().getZoom()));
            map.getView().fit(map.getView().getProjection().getExtent());
        })""")
        assert back <= top - 1.5  # the whole 1,024² scene in a ~340 px wide map: a coarser level than full
        page.locator("#remote_sensing-question textarea").fill("Is there a road in this scene?")
        page.locator("#remote_sensing-ask").click()
        expect(page.locator("#remote_sensing-status")).to_contain_text("Answered", timeout=120_000)
        expect(viewer.locator("ol.loupe-tiles li").first).to_contain_text("° N", timeout=30_000)
        expect(viewer.locator(".loupe-map")).to_have_attribute("data-shown", "1", timeout=30_000)
        drawn = viewer.locator(".loupe-map").evaluate(
            "el => el.loupeMap.map.getLayers().item(1).getSource().getFeatures().length")
        assert drawn == viewer.locator("ol.loupe-tiles li").count() >= 1  # the tiles read, outlined on the map
        expect(viewer.locator("a[href$='/geojson']")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "remote-sensing-tiles.png"), full_page=True)
    assert (ARTIFACTS / "remote-sensing-tiles.png").stat().st_size > 10_000
