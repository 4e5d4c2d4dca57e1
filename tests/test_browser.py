"""A real headless Chromium logs in, uploads an image, asks, and sees the streamed answer saved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import missing_service
from helpers import free_port, png_bytes

from loupe.apps.service import LoupeService
from loupe.apps.web import launch
from loupe.core.config import Settings
from loupe.core.vlm.slot import ModelSlot

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def chromium() -> str:
    path = os.environ.get("LOUPE_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing_service("Debian's chromium is not installed (make test installs it)")
    return path


@pytest.mark.browser
def test_login_upload_ask_in_a_real_browser(tmp_path, tiny_model_dir, chromium):
    from playwright.sync_api import expect, sync_playwright

    settings = Settings(home=tmp_path / "home", database_url=None, model="unused")
    slot = ModelSlot(dtype="fp32")
    slot.load(tiny_model_dir("smolvlm"))
    service = LoupeService.open(settings, slot)
    service.store.add_user("erin", "erin-password")
    app, url = launch(service, port=free_port(), block=False)
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((128, 96), (250, 200, 0)))
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync", "--disable-quic"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_label("username").fill("erin")
            page.get_by_label("password").fill("wrong-password")
            page.get_by_role("button", name="Login").click()
            expect(page.get_by_text("Incorrect Credentials")).to_be_visible(timeout=15_000)
            page.get_by_label("username").fill("erin")
            page.get_by_label("password").fill("erin-password")
            page.get_by_role("button", name="Login").click()

            expect(page.locator("#model-status")).to_contain_text("Demo weights", timeout=30_000)
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.locator("#create-case").click()
            expect(page.locator("#status")).to_contain_text("created.", timeout=30_000)
            page.locator("#question textarea").fill("What colour is the image?")
            page.locator("#ask").click()
            expect(page.locator("#status")).to_contain_text("Answer saved", timeout=60_000)
            expect(page.locator("#chat")).to_contain_text("What colour is the image?")
            page.screenshot(path=str(ARTIFACTS / "browser-ask.png"), full_page=True)
            browser.close()
    finally:
        app.close()

    [case] = service.store.list_cases(service.user("erin"))
    opened = service.store.open_case(service.user("erin"), case.id)
    assert [m.role for m in opened.messages] == ["user", "assistant"]
    assert opened.messages[1].model_run is not None
    assert (ARTIFACTS / "browser-ask.png").stat().st_size > 10_000
