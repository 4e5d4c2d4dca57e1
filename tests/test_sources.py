"""Data sources: a COG served over HTTP by nginx (range requests) and a server folder, opened as cases by
reference; only readers see a source; every read is audited; an item never leaves its source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import free_port
from nginxsite import nginx_binary
from test_browser import ARTIFACTS, CHROMIUM_ARGS, _login, chromium  # noqa: F401 - the fixture is used by name
from webapp import serve

from loupe.apps import nginx_site
from loupe.apps.cli import cli
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import AccessDenied, InputRejected, LoupeError
from loupe.core.pyramid.synthetic import random_objects, write_cog
from loupe.core.sources import SourceSpec, check_item, item_location, list_items

SIDE = 4096


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    (root / "tiles").mkdir()
    write_cog(root / "tiles" / "scene.tif", side=SIDE, objects=random_objects(SIDE, 6, 160, seed=3), seed=3)
    return root


@pytest.fixture(scope="module")
def catalogue(scenes) -> Path:
    """A static STAC catalogue beside the scenes: one item with the COG, one whose image lies elsewhere."""
    from datetime import datetime

    import pystac

    catalog = pystac.Catalog(id="scenes", description="Test scenes")
    box = [-77.6, 24.9, -77.3, 25.2]
    footprint = {"type": "Polygon", "coordinates": [[[box[0], box[1]], [box[2], box[1]], [box[2], box[3]],
                                                     [box[0], box[3]], [box[0], box[1]]]]}
    for item_id, href in (("harbour-2024", str(scenes / "tiles" / "scene.tif")),
                          ("elsewhere", "https://elsewhere.example.org/scene.tif")):
        item = pystac.Item(item_id, footprint, box, datetime(2024, 5, 1), {})
        item.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["visual"]))
        item.add_asset("metadata", pystac.Asset("https://elsewhere.example.org/meta.xml", media_type="application/xml"))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(scenes))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return scenes / "catalog.json"


@pytest.fixture(scope="module")
def http_root(scenes, tmp_path_factory):
    """nginx serving the scenes folder; yields (prefix URL, access log)."""
    folder = tmp_path_factory.mktemp("static-nginx")
    port = free_port()
    log = folder / "bytes.log"
    try:
        with nginx_site.running_nginx(nginx_binary(), folder, nginx_site.static_site(port, scenes, log), port) as url:
            yield url + "/", log
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def service(tmp_path, tiny_model_dir) -> LoupeService:
    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    return service


def test_a_cog_over_http_is_answered_by_reference_reading_a_fraction_of_it(service, http_root, scenes):
    prefix, log = http_root
    store = service.store
    store.add_source(None, "scenes", "http", prefix, "remote_sensing", ("role:user",))
    ana = store.add_user("ana", "ana-password-12", "user")
    case_id = service.open_item(ana, "scenes", "tiles/scene.tif", "Harbour")
    before = nginx_site.bytes_served(log, "/tiles/scene.tif")
    raster, view = service.case_assets(ana, case_id)
    assert raster.meta["by_reference"] and raster.data == b"" and str(raster.path).startswith("/vsicurl/http")
    assert (raster.width, raster.height) == (SIDE, SIDE) and view.media_type == "image/png"
    stored = [p.read_bytes()[:8] for p in service.settings.assets_dir.rglob("*") if p.is_file()]
    assert stored == [b"\x89PNG\r\n\x1a\n"]  # the view picture only: the scene itself stays on the server
    size = (scenes / "tiles" / "scene.tif").stat().st_size

    final = list(service.ask(ana, case_id, "Where are the ships?"))[-1]
    assert final.message_id and final.run.extra["focus"]["tiles"]
    requests, fetched = nginx_site.bytes_served(log, "/tiles/scene.tif")
    assert requests > before[0] and 0 < fetched < size / 2  # range requests, not the whole file
    actions = [e.action for e in store.audit_events(case_id)]
    assert actions.count("source.read") >= 2 and "source.open" in actions


@pytest.mark.parametrize("where", ["http", "file"])
def test_a_stac_catalogue_lists_its_items_and_opens_their_image_by_reference(service, http_root, catalogue, where):
    prefix, log = http_root
    location = prefix + "catalog.json" if where == "http" else str(catalogue)
    store = service.store
    store.add_source(None, "stac", "stac", location, "remote_sensing", ("role:user",))
    ana = store.add_user("ana", "ana-password-12", "user")
    assert service.source_items(ana, "stac") == [("elsewhere", "elsewhere"), ("harbour-2024", "harbour-2024")]
    assert service.source_items(ana, "stac", "HARB") == [("harbour-2024", "harbour-2024")]
    case_id = service.open_item(ana, "stac", "harbour-2024")
    raster, _ = service.case_assets(ana, case_id)
    assert raster.meta["by_reference"] and (raster.width, raster.height) == (SIDE, SIDE)
    expected = prefix + "tiles/scene.tif" if where == "http" else str((catalogue.parent / "tiles/scene.tif").resolve())
    assert str(raster.path).removeprefix("/vsicurl/") == expected
    with pytest.raises(InputRejected, match="outside its catalogue"):
        service.open_item(ana, "stac", "elsewhere")
    with pytest.raises(InputRejected, match="No such item"):
        service.open_item(ana, "stac", "no-such-item")
    actions = [e.action for e in store.audit_events()]
    assert actions.count("source.list") == 2 and actions.count("source.open") == 1


def test_only_readers_see_a_source_and_its_cases_tiles(service, http_root):
    prefix, _ = http_root
    store = service.store
    store.add_source(None, "restricted", "http", prefix, "remote_sensing", ("user:ana",))
    ana = store.add_user("ana", "ana-password-12", "user")
    bob = store.add_user("bob", "bob-password-12", "user")
    assert [s.name for s in store.sources(ana)] == ["restricted"] and store.sources(bob) == []
    with pytest.raises(AccessDenied, match="Data source not found"):
        service.open_item(bob, "restricted", "tiles/scene.tif")
    with pytest.raises(AccessDenied, match="Data source not found"):  # the same words as for no such source
        service.open_item(bob, "no-such-source", "tiles/scene.tif")
    case_id = service.open_item(ana, "restricted", "tiles/scene.tif")
    store.share_case(ana, case_id, "bob")  # bob sees the case, but may not read the source
    with pytest.raises(AccessDenied, match="may not read"):
        service.case_assets(bob, case_id)
    denied = [e for e in store.audit_events() if e.action == "source.denied"]
    assert len(denied) == 3 and denied[-1].case_id == case_id
    assert store.remove_source(None, "restricted") == 1  # a case still reads from it: kept as removed
    with pytest.raises(AccessDenied, match="was removed"):
        service.case_assets(ana, case_id)
    with pytest.raises(LoupeError, match="exists"):  # the name is not given to another place
        store.add_source(None, "restricted", "http", prefix, "remote_sensing", ())


def test_a_folder_source_keeps_items_inside_it(tmp_path, scenes):
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"II*\x00")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.tif").write_bytes(b"II*\x00")
    (root / "escape.tif").symlink_to(outside)
    spec = SourceSpec("local", "folder", str(root), "remote_sensing")
    assert item_location(spec, "sub/a.tif") == str((root / "sub" / "a.tif").resolve())
    for hostile in ("../secret.tif", "/etc/passwd", "sub/../../secret.tif", "sub//a.tif", "a\\b", "x\x00y", ""):
        with pytest.raises(InputRejected):
            item_location(spec, hostile)
    with pytest.raises(InputRejected, match="outside"):
        item_location(spec, "escape.tif")
    assert list_items(spec) == ["escape.tif", "sub/a.tif"]
    web = SourceSpec("web", "http", "https://tiles.example.org/cogs/", "remote_sensing")
    assert item_location(web, "a b/c?d#e%.tif") == "/vsicurl/https://tiles.example.org/cogs/a%20b/c%3Fd%23e%25.tif"
    assert check_item("a/b/") == "a/b"


def test_the_cli_adds_lists_opens_and_removes_sources(tmp_path, scenes, tiny_model_dir):
    home = tmp_path / "home"
    runner = CliRunner()
    env = {"LOUPE_HOME": str(home), "LOUPE_MODEL": str(tiny_model_dir("smolvlm"))}

    def run(*args: str):
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    assert run("users", "add", "ana", "--role", "user", "--password", "ana-password-12").exit_code == 0
    added = run("sources", "add", "local", "--kind", "folder", "--location", str(scenes), "--domain",
                "remote_sensing", "--reader", "role:user")
    assert added.exit_code == 0, added.output
    assert run("sources", "list").output.split("\t")[:4] == ["local", "folder", "remote_sensing", "role:user"]
    assert run("sources", "items", "local").output.split() == ["tiles/scene.tif"]
    refused = run("sources", "add", "bad", "--kind", "http", "--location", "https://u:p@example.org/",
                  "--domain", "remote_sensing")
    assert refused.exit_code == 1 and "credentials" in refused.output
    assert run("sources", "add", "x", "--kind", "folder", "--location", str(scenes), "--domain", "remote_sensing",
               "--reader", "role:chief").exit_code == 1
    opened = run("open", "local", "tiles/scene.tif", "--user", "ana")
    assert opened.exit_code == 0, opened.output
    assert int(opened.output.strip()) > 0
    assert run("open", "local", "../etc/passwd", "--user", "ana").exit_code == 1
    assert "1 case(s)" in run("sources", "remove", "local").output
    assert run("sources", "list").output == ""
    assert os.stat(home).st_mode & 0o077 == 0


def _hostile_tiff(path: Path) -> None:
    """A 442-byte-class sparse GeoTIFF header claiming 120,000² pixels and no overviews."""
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=120_000, height=120_000, count=1, dtype="uint8",
                       tiled=True, sparse_ok=True, compress="deflate") as ds:
        ds.write(np.zeros((1, 16, 16), np.uint8), window=rasterio.windows.Window(0, 0, 16, 16))


@pytest.mark.browser
def test_sources_in_a_real_browser_as_admin_reader_and_outsider(tmp_path, scenes, tiny_model_dir,
                                                                chromium):  # noqa: F811
    """The admin adds a source in the Admin tab (a hostile name is refused and shown as text); its reader
    lists and opens an item by reference; a hostile file is refused with a reason; a second user sees no
    source and gets 'not found' from the API for it; a hostile item path is refused."""
    from playwright.sync_api import expect, sync_playwright

    (scenes / "tiles" / "huge.tif").unlink(missing_ok=True)
    _hostile_tiff(scenes / "tiles" / "huge.tif")
    users = {"root": "admin", "ana": "user", "bob": "user"}
    hostile = '<img src=x onerror="document.title=1">'
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), users) as served, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, served.url, "root")
        page.get_by_role("tab", name="Admin").click()
        page.get_by_text("Data sources").click()
        page.locator("#admin-source-name textarea, #admin-source-name input").first.fill(hostile)
        page.locator("#admin-source-location textarea, #admin-source-location input").first.fill(str(scenes))
        page.locator("#admin-source-kind input").click()
        page.get_by_role("option", name="folder").click()
        page.locator("#admin-source-domain input").click()
        page.get_by_role("option", name="remote_sensing").click()
        page.locator("#admin-source-add").click()
        expect(page.locator("#admin-status")).to_contain_text("A source name is", timeout=30_000)
        assert page.title() == "Loupe"  # the hostile name was shown as text, never run
        page.locator("#admin-source-name textarea, #admin-source-name input").first.fill("scenes")
        page.locator("#admin-source-readers textarea, #admin-source-readers input").first.fill("user:ana")
        page.locator("#admin-source-add").click()
        expect(page.locator("#admin-sources")).to_contain_text("user:ana", timeout=30_000)
        page.context.clear_cookies()

        _login(page, served.url, "ana")
        page.get_by_role("tab", name="Remote sensing").click()
        page.get_by_role("tab", name="From a data source").click()
        expect(page.locator("#remote_sensing-source input")).to_have_value("scenes", timeout=30_000)
        page.locator("#remote_sensing-item-search textarea, #remote_sensing-item-search input").first.fill("huge")
        page.locator("#remote_sensing-list-items").click()
        expect(page.locator("#remote_sensing-status")).to_contain_text("1 item found", timeout=30_000)
        page.locator("#remote_sensing-open-item").click()
        expect(page.locator("#remote_sensing-status")).to_contain_text("no overview small enough", timeout=60_000)
        page.locator("#remote_sensing-item input").fill("tiles/scene.tif")
        page.locator("#remote_sensing-source-title textarea, #remote_sensing-source-title input").first.fill(hostile)
        page.locator("#remote_sensing-open-item").click()
        expect(page.locator("#remote_sensing-status")).to_contain_text("opened from scenes", timeout=60_000)
        expect(page.locator("#remote_sensing-case-header")).to_contain_text("onerror")  # the title, as text
        assert page.title() == "Loupe"
        expect(page.locator("#remote_sensing-viewer .loupe-map")).to_have_attribute(
            "data-shown", "1", timeout=30_000)  # the map, its tiles read where the scene lies
        page.screenshot(path=str(ARTIFACTS / "source-opened.png"), full_page=True)
        browser.close()

    with serve(tmp_path / "home", tiny_model_dir("smolvlm")) as served:
        refused = served.client("bob").predict("scenes", "tiles/scene.tif", "", api_name="/remote_sensing_open_item")
        assert refused[5] == "⚠️ Data source not found." and refused[6] == {"__type__": "update"}  # no case shown
        listed = served.client("bob").predict("scenes", "", api_name="/remote_sensing_source_items")
        assert listed[1] == "⚠️ Data source not found."
        escaped = served.client("ana").predict("scenes", "../../etc/passwd", "", api_name="/remote_sensing_open_item")
        assert "relative to its source" in escaped[5] and escaped[6] == {"__type__": "update"}
        actions = [e.action for e in served.service.store.audit_events()]
        assert actions.count("source.open") == 1 and "source.list" in actions and "source.denied" in actions


def test_an_http_source_behind_a_password_is_read_with_its_credentials(service, scenes, tmp_path):
    """nginx asking for HTTP basic authentication: refused without the source's credentials (no case made);
    with them the COG is opened by reference and a question's tiles are read with them."""
    from loupe.core.sources import credentials

    users = tmp_path / "users"
    users.write_text("reader:{PLAIN}cog-secret-4\n")
    port = free_port()
    site = nginx_site.static_site(port, scenes, tmp_path / "bytes.log", users_file=users)
    with nginx_site.running_nginx(nginx_binary(), tmp_path / "nginx", site, port) as url:
        store = service.store
        store.add_source(None, "locked", "http", url + "/", "remote_sensing", ("role:user",))
        ana = store.add_user("ana", "ana-password-12", "user")
        with pytest.raises(InputRejected, match="refused Loupe's credentials"):
            service.open_item(ana, "locked", "tiles/scene.tif")
        assert store.list_cases(ana) == []
        credentials.save(service.settings.home, "locked", "http", url + "/",
                         credentials.parse("http", "username=reader\npassword=cog-secret-4\n"))
        case_id = service.open_item(ana, "locked", "tiles/scene.tif")
        final = list(service.ask(ana, case_id, "Where are the ships?"))[-1]
        assert final.run.extra["focus"]["tiles"]
        statuses = [line.split()[2] for line in (tmp_path / "bytes.log").read_text().splitlines()]
        assert "401" in statuses and statuses.count("206") >= 2  # refused, then range reads with the password
