"""A STAC API as a data source: rustac's server (in-memory backend) on loopback holding a collection of scene
items; searched by collection, date and box; an item opens through the http source (nginx) holding its COG,
so a user must read both, and an item whose picture lies anywhere else is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import free_port
from servers import kill_group, wait_up
from test_browser import ARTIFACTS, CHROMIUM_ARGS, _login, chromium  # noqa: F401 - the fixture is used by name
from test_sources import SIDE, http_root, scenes  # noqa: F401 - fixtures used by name
from webapp import serve

from loupe.apps.cli import cli
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import InputRejected
from loupe.core.sources import credentials
from loupe.core.sources.stac_api import item_ref, search_terms

BOX = [-77.6, 24.9, -77.3, 25.2]


def _item(item_id: str, when: datetime, href: str, cloud: float):  # noqa: ANN202
    import pystac

    west, south, east, north = BOX
    footprint = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                     [west, south]]]}
    item = pystac.Item(item_id, footprint, BOX, when, {"eo:cloud_cover": cloud}, collection="harbour")
    item.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["visual"]))
    item.add_asset("thumbnail", pystac.Asset(href.replace(".tif", ".png"), media_type=pystac.MediaType.PNG))
    return item


@pytest.fixture(scope="module")
def stac_api(http_root, tmp_path_factory):  # noqa: F811
    """(API root, nginx prefix): three items of collection "harbour", two of them on nginx."""
    import pystac

    prefix, _ = http_root
    folder = tmp_path_factory.mktemp("stac-api")
    extent = pystac.Extent(pystac.SpatialExtent([BOX]),
                           pystac.TemporalExtent([[datetime(2024, 1, 1), datetime(2024, 12, 31)]]))
    collection = pystac.Collection("harbour", "Harbour scenes", extent)
    collection.set_self_href(str(folder / "collection.json"))
    collection.save_object(include_self_link=False)
    items = pystac.ItemCollection([
        _item("harbour-2024-05", datetime(2024, 5, 1, 10), prefix + "tiles/scene.tif", 12.0),
        _item("harbour-2024-08", datetime(2024, 8, 1, 10), prefix + "tiles/scene.tif", 71.5),
        _item("elsewhere", datetime(2024, 6, 1, 10), "https://elsewhere.example.org/scene.tif", 3.0)])
    items.save_object(str(folder / "items.json"))
    port = free_port()
    rustac = Path(sys.executable).parent / "rustac"
    process = subprocess.Popen([str(rustac), "serve", str(folder / "collection.json"), str(folder / "items.json"),
                                "--addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_up(root, process, 60, path="/")
        yield root, prefix
    finally:
        kill_group(process)


def test_search_terms_are_checked_before_any_request():
    assert search_terms("harbour 2024-05 -78,24,-77,26") == {
        "collections": ["harbour"], "datetime": "2024-05", "bbox": [-78.0, 24.0, -77.0, 26.0]}
    assert search_terms("date=2024-05-01/.. id=a") == {"datetime": "2024-05-01/..", "ids": ["a"]}
    for bad in ("date=yesterday", "bbox=1,2,3", "bbox=0,50,10,40", "colour=red", "collection=a/b", "id=a?b"):
        with pytest.raises(InputRejected):
            search_terms(bad)
    assert item_ref("sentinel-2-l2a/S2B_13SDV_20240501_0_L2A") == ("sentinel-2-l2a", "S2B_13SDV_20240501_0_L2A")
    for bad in ("no-collection", "/x", "a b/c", "c/" + "x" * 300, "c/a\nb"):
        with pytest.raises(InputRejected):
            item_ref(bad)


def test_a_stac_api_is_searched_and_its_items_open_through_the_source_holding_them(stac_api, tmp_path,
                                                                                   tiny_model_dir):
    root, prefix = stac_api
    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    store = service.store
    store.add_source(None, "s2", "stac-api", root + "/", "remote_sensing", ("role:user",))
    store.add_source(None, "cogs", "http", prefix, "remote_sensing", ("user:ana",))
    ana = store.add_user("ana", "ana-password-12", "user")
    bob = store.add_user("bob", "bob-password-12", "user")  # reads the catalogue, not the COGs

    assert service.source_items(ana, "s2", "harbour 2024-05") == [
        ("harbour-2024-05 · harbour · 2024-05-01 · cloud 12%", "harbour/harbour-2024-05")]
    assert sorted(i for _, i in service.source_items(ana, "s2", "collection=harbour")) == [
        "harbour/elsewhere", "harbour/harbour-2024-05", "harbour/harbour-2024-08"]
    assert service.source_items(ana, "s2", "bbox=10,40,11,41") == []  # the box is elsewhere
    with pytest.raises(InputRejected, match="Search by"):
        service.source_items(ana, "s2", "<script>=1")

    case_id = service.open_item(ana, "s2", "harbour/harbour-2024-05")
    raster, _ = service.case_assets(ana, case_id)
    assert raster.meta["by_reference"] and str(raster.path) == "/vsicurl/" + prefix + "tiles/scene.tif"
    assert (raster.width, raster.height) == (SIDE, SIDE)
    opened = [e.detail["source"] for e in store.audit_events(case_id) if e.action == "source.open"]
    assert opened == ["s2", "cogs"]
    assert store.open_case(ana, case_id).title == "From s2: harbour-2024-05"

    with pytest.raises(InputRejected, match="elsewhere.example.org/…, under no data source you may read"):
        service.open_item(ana, "s2", "harbour/elsewhere")
    with pytest.raises(InputRejected, match="under no data source you may read"):
        service.open_item(bob, "s2", "harbour/harbour-2024-05")
    with pytest.raises(InputRejected, match="No such item"):
        service.open_item(ana, "s2", "harbour/no-such-scene")

    listed = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "sources", "items", "s2", "--search",
                                      "harbour 2024-08"], catch_exceptions=False)
    assert listed.output == "harbour/harbour-2024-08\tharbour-2024-08 · harbour · 2024-08-01 · cloud 72%\n"


def test_a_stac_api_in_a_real_browser_as_admin_reader_and_outsider(stac_api, tmp_path, tiny_model_dir,
                                                                  chromium):  # noqa: F811
    """The admin adds the API in the Admin tab; ana searches it (a hostile search is refused and shown as
    text), opens a scene through the COG source; bob, who may read the API but not the COGs, is told why."""
    from playwright.sync_api import expect, sync_playwright

    root, prefix = stac_api
    users = {"root": "admin", "ana": "user", "bob": "user"}
    hostile = '<img src=x onerror="document.title=1">'
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), users) as served, sync_playwright() as pw:
        served.service.store.add_source(None, "cogs", "http", prefix, "remote_sensing", ("user:ana",))
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, served.url, "root")
        page.get_by_role("tab", name="Admin").click()
        page.get_by_text("Data sources").click()
        page.locator("#admin-source-name textarea, #admin-source-name input").first.fill("s2")
        page.locator("#admin-source-location textarea, #admin-source-location input").first.fill(root)
        page.locator("#admin-source-kind input").click()
        page.get_by_role("option", name="stac-api").click()
        page.locator("#admin-source-domain input").click()
        page.get_by_role("option", name="remote_sensing").click()
        page.locator("#admin-source-readers textarea, #admin-source-readers input").first.fill("role:user")
        page.locator("#admin-source-add").click()
        expect(page.locator("#admin-sources")).to_contain_text("stac-api", timeout=30_000)
        # A token typed in the Admin tab: masked while typed, gone from the page once set, never in its storage.
        token = "stac-token-never-shown-41"
        page.get_by_text("Credentials of the source named above").click()
        box = page.locator("#admin-source-secret textarea")
        box.fill(f"token={token}")
        assert box.evaluate("e => getComputedStyle(e).webkitTextSecurity") == "disc"
        page.locator("#admin-source-secret-set").click()
        expect(page.locator("#admin-status")).to_contain_text("Credentials of s2 set (token)", timeout=30_000)
        expect(box).to_have_value("")
        stored = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
        assert token not in page.content() and token not in stored
        assert json.loads((credentials.folder(served.service.settings.home) / "s2.json").read_text())["values"] == {
            "token": token}
        page.context.clear_cookies()

        for user in ("ana", "bob"):
            _login(page, served.url, user)
            page.get_by_role("tab", name="Remote sensing").click()
            page.get_by_role("tab", name="From a data source").click()
            page.locator("#remote_sensing-source input").click()
            page.get_by_role("option", name="s2").click()
            search = page.locator("#remote_sensing-item-search textarea, #remote_sensing-item-search input").first
            search.fill(hostile)
            page.locator("#remote_sensing-list-items").click()
            expect(page.locator("#remote_sensing-status")).to_contain_text("A collection name is", timeout=30_000)
            assert page.title() == "Loupe"  # shown as text, never run
            search.fill("harbour 2024-05")
            page.locator("#remote_sensing-list-items").click()
            expect(page.locator("#remote_sensing-status")).to_contain_text("1 item found", timeout=30_000)
            page.locator("#remote_sensing-open-item").click()
            if user == "ana":
                expect(page.locator("#remote_sensing-status")).to_contain_text("opened from s2", timeout=60_000)
                expect(page.locator("#remote_sensing-case-header")).to_contain_text("harbour-2024-05")
                expect(page.locator("#remote_sensing-viewer .loupe-map")).to_have_attribute(
                    "data-shown", "1", timeout=30_000)  # the map, its tiles read where the scene lies
                page.screenshot(path=str(ARTIFACTS / "stac-api-opened.png"), full_page=True)
            else:
                expect(page.locator("#remote_sensing-status")).to_contain_text("under no data source you may read",
                                                                               timeout=60_000)
            page.context.clear_cookies()
        browser.close()
        opened = [e.detail.get("source") for e in served.service.store.audit_events() if e.action == "source.open"]
        assert opened == ["s2", "cogs"]
