"""The field's viewers in a real browser (Chromium): the DICOM series viewer (Cornerstone3D) on a generated
phantom of known values and spacing."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from test_browser import ARTIFACTS, _create_case, _signed_in, chromium  # noqa: F401 - the fixture is used by name

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
SPACING_MM = 0.5
LEFT_HU, RIGHT_HU = 0, 100  # the phantom: two halves of known Hounsfield values


def ct_phantom(slices: int = 12, size: int = 128) -> list[pydicom.Dataset]:
    """A CT series: each slice's left half 0 HU, right half 100 HU, 0.5 mm pixels, window 40/400; a name in
    the header and a hostile string in its description and maker."""
    from loupe.domains.medical.synthetic import ct_series

    def slice_hu(n: int) -> np.ndarray:
        hu = np.full((size, size), LEFT_HU)
        hu[:, size // 2:] = RIGHT_HU
        hu[:4, :4 + n] = 2000  # each slice differs
        return hu

    out = list(ct_series((slice_hu(n) for n in range(slices)), spacing_mm=SPACING_MM, thickness_mm=2.5))
    for ds in out:
        ds.PatientName, ds.PatientID = "DOE^JANE", "PID-4711"
        ds.SeriesDescription, ds.Manufacturer = HOSTILE, HOSTILE  # the description is removed, the maker kept
    return out


def series_zip(folder: Path, datasets: list[pydicom.Dataset]) -> Path:
    path = folder / "series.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for n, ds in enumerate(datasets):
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            archive.writestr(f"{n:03d}.dcm", buffer.getvalue())
    return path


def _grey(page, selector: str, x: float, y: float) -> int:  # noqa: ANN001 - a Playwright page
    """The grey level on screen at page position (x, y) inside ``selector``."""
    box = page.locator(selector).bounding_box()
    shot = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L")
    scale = shot.width / box["width"]
    return shot.getpixel((int((x - box["x"]) * scale), int((y - box["y"]) * scale)))


def _expected_grey(hu: float, lower: float, upper: float) -> float:
    return float(np.clip((hu - lower) / (upper - lower), 0, 1) * 255)


@pytest.mark.browser
def test_dicom_viewer_scrolls_windows_measures_and_plays(tmp_path, tiny_model_dir, chromium):  # noqa: F811
    from playwright.sync_api import expect

    upload = series_zip(tmp_path, ct_phantom())
    ARTIFACTS.mkdir(exist_ok=True)
    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "rita", chromium) as page:
        _create_case(page, "Medical", upload)
        stack = page.locator("#medical-viewer .loupe-stack")
        expect(stack).to_have_attribute("data-shown", "1", timeout=30_000)
        status = stack.locator(".loupe-stack-status")
        expect(status).to_have_text("Image 1 of 12 · CT · window 40/400")
        screen = stack.locator(".loupe-stack-screen")
        view = "el => el.loupeViewer.viewport"

        def on_screen(column: float, row: float) -> tuple[float, float]:
            x, y = stack.evaluate(f"el => el.loupeViewer.toScreen({column}, {row})")
            box = screen.bounding_box()
            return box["x"] + x, box["y"] + y

        # The phantom on screen in the file's window: 0 HU and 100 HU at their expected grey.
        for hu, column in ((LEFT_HU, 32), (RIGHT_HU, 96)):
            assert abs(_grey(page, ".loupe-stack-screen", *on_screen(column, 64)) - _expected_grey(hu, -160, 240)) <= 12

        # Scrolling with the wheel moves through the series.
        page.mouse.move(*on_screen(64, 64))
        for _ in range(3):
            page.mouse.wheel(0, 120)
            page.wait_for_timeout(150)
        expect(status).to_contain_text(re.compile(r"Image [2-9]\d? of 12"), timeout=10_000)
        assert stack.evaluate(f"el => ({view})(el).getCurrentImageIdIndex()") >= 1

        # Window/level by dragging (the default tool): the range changes, and the screen follows it.
        page.mouse.move(*on_screen(64, 64))
        page.mouse.down()
        page.mouse.move(*on_screen(64, 40), steps=8)
        page.mouse.move(*on_screen(20, 40), steps=8)
        page.mouse.up()
        lower, upper = stack.evaluate(f"el => {{ const r = ({view})(el).getProperties().voiRange; "
                                      "return [r.lower, r.upper]; }")
        assert (lower, upper) != (-160.0, 240.0)
        for hu, column in ((LEFT_HU, 32), (RIGHT_HU, 96)):
            shown = _grey(page, ".loupe-stack-screen", *on_screen(column, 64))
            assert abs(shown - _expected_grey(hu, lower, upper)) <= 12, (hu, lower, upper, shown)
        expect(status).to_contain_text(re.compile(r"window -?\d+/\d+"))

        # A length in mm from Pixel Spacing: 80 pixels at 0.5 mm.
        stack.get_by_role("button", name="Length (mm)").click()
        page.mouse.move(*on_screen(20, 100))
        page.mouse.down()
        page.mouse.move(*on_screen(100, 100), steps=10)
        page.mouse.up()
        measured = stack.locator(".loupe-stack-measurements li").first  # 40 mm, within half a pixel each end
        expect(measured).to_have_text(re.compile(r"Length (39\.[5-9]|40\.[0-4]) mm"), timeout=10_000)

        # A rectangle inside the right half: its mean in HU.
        stack.get_by_role("button", name="ROI mean").click()
        page.mouse.move(*on_screen(75, 50))
        page.mouse.down()
        page.mouse.move(*on_screen(115, 90), steps=10)
        page.mouse.up()
        roi = stack.locator(".loupe-stack-measurements li", has_text="ROI mean")
        expect(roi).to_have_count(1, timeout=10_000)
        mean = float(re.search(r"ROI mean (-?[\d.]+) HU", roi.inner_text()).group(1))
        assert abs(mean - RIGHT_HU) <= 0.5, mean
        page.screenshot(path=str(ARTIFACTS / "medical-series-viewer.png"), full_page=True)

        # Cine: the frames advance by themselves (however busy the machine: the frames it reaches are read as it
        # goes), and stop when paused.
        stack.evaluate("""el => { el.seen = new Set();
            el.querySelector('.loupe-stack-screen').addEventListener('CORNERSTONE_STACK_NEW_IMAGE',
                (event) => el.seen.add(event.detail.imageIdIndex)); }""")
        stack.locator(".loupe-stack-fps").fill("20")
        stack.get_by_role("button", name="▶ Play").click()
        page.wait_for_function("document.querySelector('#medical-viewer .loupe-stack').seen.size >= 4",
                               timeout=60_000)
        stack.get_by_role("button", name="⏸ Pause").click()
        page.wait_for_timeout(600)  # a frame asked for before the pause may still arrive
        stopped = stack.evaluate(f"el => ({view})(el).getCurrentImageIdIndex()")
        page.wait_for_timeout(600)
        assert stack.evaluate(f"el => ({view})(el).getCurrentImageIdIndex()") == stopped

        # The tag browser: the de-identified header, its text shown as text.
        stack.get_by_role("button", name="DICOM tags").click()
        table = stack.locator(".loupe-stack-tag-table")
        expect(table).to_contain_text("(0008,0060)", timeout=10_000)
        expect(table).to_contain_text("PixelSpacing")
        assert "DOE^JANE" not in table.inner_text() and "PID-4711" not in table.inner_text()
        expect(table.locator("tr", has_text="Manufacturer")).to_contain_text(HOSTILE)  # shown as text
        assert page.title() != "pwned" and stack.locator("img[src=x]").count() == 0
        page.screenshot(path=str(ARTIFACTS / "medical-series-tags.png"), full_page=True)


@pytest.mark.browser
def test_a_giant_slide_zooms_to_full_resolution_and_shows_the_tiles_an_answer_read(tmp_path, tiny_model_dir,
                                                                                  chromium):  # noqa: F811
    """A generated 8,192² slide (`loupe bench viewer` times a 20,000² one) in the deep-zoom viewer: tiles of
    the full-resolution level on demand, home again, and after a question the tiles the answer read outlined
    and numbered; a click zooms to one."""
    from playwright.sync_api import expect

    from loupe.core.pyramid.synthetic import write_svs

    slide = write_svs(tmp_path / "slide.svs", 8_192)
    ARTIFACTS.mkdir(exist_ok=True)
    from loupe.core.budgets import Budgets

    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "pia", chromium, budgets=Budgets()) as page:
        tiles: list[str] = []
        page.on("response", lambda r: tiles.append(r.url) if "/case-tiles/" in r.url and r.ok else None)
        _create_case(page, "Medical", slide, timeout_s=240)  # re-written in parts: slower beside other tests
        deep = page.locator("#medical-viewer .loupe-deepzoom")
        expect(deep).to_have_attribute("data-shown", "1", timeout=30_000)
        viewer = "document.querySelector('#medical-viewer .loupe-deepzoom').loupeViewer"
        home = page.evaluate(f"{viewer}.viewport.getHomeZoom()")
        page.evaluate(f"{viewer}.viewport.zoomTo({viewer}.viewport.getMaxZoom(), null, true)")
        top = 13  # 8,192 px: levels 0..13, 13 full resolution
        page.wait_for_function(f"{viewer}.world.getItemAt(0).getFullyLoaded()", timeout=30_000)
        assert any(re.search(rf"/case-tiles/\d+/{top}/\d+_\d+\.jpg$", url) for url in tiles)
        page.screenshot(path=str(ARTIFACTS / "medical-slide-full-resolution.png"), full_page=True)
        page.evaluate(f"{viewer}.viewport.goHome(true)")
        assert page.evaluate(f"{viewer}.viewport.getZoom()") == pytest.approx(home)

        page.locator("#medical-question textarea").fill("Where is the tumour, if there is one?")
        page.locator("#medical-ask").click()
        expect(page.locator("#medical-status")).to_contain_text("Answered", timeout=120_000)
        boxes = page.locator("#medical-viewer .loupe-dz-box")
        expect(boxes.first).to_be_visible(timeout=30_000)
        expect(boxes.first).to_have_text("1")
        page.wait_for_function(f"{viewer}.world.getItemAt(0).getFullyLoaded()", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "medical-slide-answer-tiles.png"), full_page=True)
        boxes.first.click()
        page.wait_for_function(f"{viewer}.viewport.getZoom() > 2 * {viewer}.viewport.getHomeZoom()",
                               timeout=10_000)


class _TileServer:
    """A site's own XYZ tile server: every tile a solid blue PNG; the paths asked for are kept."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        buffer = io.BytesIO()
        Image.new("RGB", (256, 256), (0, 0, 255)).save(buffer, "PNG")
        tile, asked = buffer.getvalue(), []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                asked.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(tile)))
                self.end_headers()
                self.wfile.write(tile)

            def log_message(self, *args: object) -> None:
                pass

        self.asked = asked
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tile_of(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The Web Mercator (XYZ) tile holding a point."""
    import math

    n = 2 ** zoom
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


@pytest.mark.browser
def test_a_configured_basemap_lies_reprojected_under_a_utm_scene(tmp_path, tiny_model_dir, chromium):  # noqa: F811
    """LOUPE_BASEMAP_URL names the site's tile server: the page may load images from it (and nowhere else), the
    map asks it for the Web Mercator tiles under the scene (a UTM scene: reprojected in the browser), shows it
    through the scene at opacity 0 and its attribution as text."""
    import rasterio
    from playwright.sync_api import expect
    from pyproj import Transformer

    scene = Path(__file__).resolve().parent.parent / "data" / "remote_sensing" / "rgbn_suba.tif"
    with rasterio.open(scene) as ds:
        centre = ds.xy(ds.height // 2, ds.width // 2)
        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(*centre)
    tiles = _TileServer()
    try:
        with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "rita", chromium,
                        basemap_url=tiles.origin + "/osm/{z}/{x}/{y}.png",
                        basemap_attribution=f"Site tiles {HOSTILE}") as page:
            policy = page.request.get(page.url).headers["content-security-policy"]
            assert f"img-src 'self' data: blob: {tiles.origin};" in policy and "connect-src 'self';" in policy
            _create_case(page, "Remote sensing", scene)
            mapped = page.locator("#remote_sensing-viewer .loupe-map")
            expect(mapped).to_have_attribute("data-shown", "1", timeout=30_000)
            expect(mapped).to_have_attribute("data-basemap", "1")
            zoom_tiles = {}
            for path in tiles.asked:
                z, x, y = map(int, re.match(r"^/osm/(\d+)/(\d+)/(\d+)\.png$", path).groups())
                zoom_tiles.setdefault(z, set()).add((x, y))
            assert zoom_tiles and all(_tile_of(lon, lat, z) in asked for z, asked in zoom_tiles.items()), (
                lon, lat, zoom_tiles)
            expect(mapped.locator(".ol-attribution")).to_contain_text(f"Site tiles {HOSTILE}")  # as text
            assert page.evaluate("document.title") != "pwned"
            # The scene's no-data border is clear (PNG tiles there): the basemap shows through it, opaque scene.
            with rasterio.open(scene) as ds:
                clear = ds.dataset_mask() == 0
            border = [(r, c) for r, c in np.argwhere(clear) if c >= 3 and 3 <= r < ds.height - 3
                      and clear[r - 3:r + 4, c - 3:c + 4].all()]  # well inside the border, off the scene's edge
            row, col = border[len(border) // 2]
            mapped.evaluate("""el => new Promise((done) => {
                el.loupeMap.map.once("rendercomplete", done);
                el.loupeMap.map.render();
            })""")
            screen = mapped.locator(".loupe-map-screen")
            shot = Image.open(io.BytesIO(screen.screenshot())).convert("RGB")
            scale = shot.width / screen.bounding_box()["width"]
            x, y = mapped.evaluate(f"el => el.loupeMap.toScreen({col} + 0.5, {row} + 0.5)")
            r, g, b = shot.getpixel((int(x * scale), int(y * scale)))
            assert b > 200 and r < 60 and g < 60, (row, col, (r, g, b))
            mapped.locator(".loupe-map-opacity").fill("0")  # the scene transparent: the basemap shows
            page.wait_for_timeout(500)
            shot = Image.open(io.BytesIO(screen.screenshot())).convert("RGB")
            r, g, b = shot.getpixel((shot.width // 2, shot.height // 2))
            assert b > 200 and r < 60 and g < 60, (r, g, b)
            mapped.locator(".loupe-map-opacity").fill("70")  # and the land around the scene, zoomed out
            mapped.evaluate("""el => new Promise((done) => {
                el.loupeMap.map.once("rendercomplete", done);
                const view = el.loupeMap.map.getView();
                view.setZoom(view.getZoom() - 1);
            })""")
            page.screenshot(path=str(ARTIFACTS / "remote-sensing-basemap.png"), full_page=True)
            # Drawn in Web Mercator now: a click still reads the scene pixel under it, as rasterio does.
            col, row = 150, 90
            x, y = mapped.evaluate(f"el => el.loupeMap.toScreen({col} + 0.5, {row} + 0.5)")
            box = screen.bounding_box()
            page.mouse.click(box["x"] + x, box["y"] + y)
            values = mapped.locator(".loupe-map-values")
            expect(values).to_contain_text(f"Pixel x {col}, y {row}:", timeout=10_000)
            with rasterio.open(scene) as ds:
                want = ds.read(window=rasterio.windows.Window(col, row, 1, 1))[:, 0, 0].tolist()
            assert ", ".join(f"band {n} {v}" for n, v in enumerate(want, 1)) in values.inner_text()
    finally:
        tiles.close()


@pytest.mark.browser
def test_a_scene_that_is_not_a_whole_number_of_tiles_is_drawn_unstretched(tmp_path, tiny_model_dir,
                                                                            chromium):  # noqa: F811
    """A 276 × 212 scene: its tiles at the right and bottom edges come at their true size (20 px, 212 px);
    drawn as whole tiles they were stretched (rows 1.21 times too tall, the last rows lost). Top half black,
    bottom half white: on screen the change from one to the other is at row 106, not at row 128."""
    import rasterio
    from playwright.sync_api import expect
    from rasterio.transform import from_origin

    path = tmp_path / "halves.tif"
    values = np.zeros((3, 212, 276), dtype=np.uint8)
    values[:, 106:, :] = 255
    with rasterio.open(path, "w", driver="GTiff", width=276, height=212, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(1_000_000, 2_000_000, 10, 10)) as ds:
        ds.write(values)
    with _signed_in(tmp_path, tiny_model_dir("smolvlm"), "rita", chromium) as page:
        _create_case(page, "Remote sensing", path)
        mapped = page.locator("#remote_sensing-viewer .loupe-map")
        expect(mapped).to_have_attribute("data-shown", "1", timeout=30_000)
        mapped.locator(".loupe-map-stretch").select_option("min–max")
        page.wait_for_timeout(500)
        screen = mapped.locator(".loupe-map-screen")
        mapped.evaluate("""el => new Promise((done) => {
            el.loupeMap.map.once("rendercomplete", done);
            el.loupeMap.map.renderSync();
        })""")
        box = screen.bounding_box()
        shot = Image.open(io.BytesIO(screen.screenshot())).convert("L")
        scale = shot.width / box["width"]

        def grey(col: float, row: float) -> int:
            x, y = mapped.evaluate(f"el => el.loupeMap.toScreen({col}, {row})")
            return shot.getpixel((int(x * scale), int(y * scale)))

        assert grey(138, 90) < 40 and grey(138, 120) > 215 and grey(138, 205) > 215, (
            grey(138, 90), grey(138, 120), grey(138, 205))
        assert grey(270, 150) > 215  # the last 20 columns drawn too
