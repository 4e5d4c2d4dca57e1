"""The remote-sensing domain on real GeoTIFFs: ingest, coordinates, answering from focused tiles,
GeoJSON, band presets and zoom, bad input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from PIL import Image
from rasterio.warp import transform as warp

from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import InputRejected, LoupeError
from loupe.core.plugins import Budgets
from loupe.domains.remote_sensing import RemoteSensingDomain
from loupe.domains.remote_sensing.geo import Georef
from loupe.domains.remote_sensing.maptiles import map_info, map_pixel, map_stretch, map_tile

GEO = Path(__file__).parents[1] / "data" / "remote_sensing"
LIMITS = Budgets(50 * 2**20, 100_000_000)


@pytest.fixture
def service(tmp_path, tiny_model_dir) -> LoupeService:
    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    return service


def _ring_ok(ring: list) -> bool:
    closed = ring[0] == ring[-1]
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False)) / 2
    in_range = all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
    return closed and area > 0 and in_range  # RFC 7946: exterior rings counter-clockwise


def test_a_scene_is_answered_from_focused_tiles_that_say_where(service):
    user = service.store.add_user("ana", "ana-password-12", "user")
    case_id = service.create_case(user, "remote_sensing", GEO / "RGB.byte.tif", "Andros")
    raster, view = service.case_assets(user, case_id)
    assert raster.meta["kind"] == "raster" and raster.data == b"" and raster.path.is_file()  # read lazily
    assert view.media_type == "image/png" and view.meta["kind"] == "view"
    final = list(service.ask(user, case_id, "Are there any ships near the coast?"))[-1]
    extra = final.run.extra
    chosen = extra["focus"]["tiles"]
    assert chosen and extra["focus"]["tiles_scored"] <= 34 and extra["pyramid"]["width"] == 791
    assert final.run.visual_tokens > 0
    cited = extra["citations"]
    assert [c["box"] for c in cited] == [t["box"] for t in chosen]
    corners = r"\d+\.\d{5}° N, \d+\.\d{5}° W to \d+\.\d{5}° N, \d+\.\d{5}° W · "  # the Bahamas: N, W
    assert all(re.match(corners, c["text"]) for c in cited), cited  # the tile's bounds, not its centre
    geojson = json.loads(service.export_case(user, case_id, "geojson")[0])
    assert geojson["type"] == "FeatureCollection"
    scene, *tiles = geojson["features"]
    assert scene["properties"]["kind"] == "scene" and len(tiles) == len(chosen)
    assert all(_ring_ok(f["geometry"]["coordinates"][0]) for f in geojson["features"])
    with rasterio.open(GEO / "RGB.byte.tif") as ds:
        lons, lats = warp(ds.crs, "EPSG:4326", [ds.bounds.left, ds.bounds.right], [ds.bounds.top, ds.bounds.bottom])
    ring = np.asarray(scene["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(min(lons), abs=0.01) and ring[:, 1].max() == pytest.approx(max(lats),
                                                                                                        abs=0.05)
    first = tiles[0]["properties"]
    assert first["answer_id"] == final.message_id and first["question"] == "Are there any ships near the coast?"
    assert first["answer"] and first["answer"].rstrip("…") in final.text  # the answer, or its first 300 characters
    west, south, east, north = first["bounds"]
    tile_ring = np.asarray(tiles[0]["geometry"]["coordinates"][0])
    assert (west, south, east, north) == (tile_ring[:, 0].min(), tile_ring[:, 1].min(), tile_ring[:, 0].max(),
                                          tile_ring[:, 1].max()) and west < east and south < north
    # read back through GDAL's OGR, the library QGIS opens vector files with
    exported = service.settings.home / "tiles.geojson"
    exported.write_bytes(service.export_case(user, case_id, "geojson")[0])
    info = pyogrio.read_info(exported)
    assert info["features"] == 1 + len(chosen) and info["geometry_type"] == "Polygon" and info["crs"] == "EPSG:4326"
    assert "case.export" in [e.action for e in service.store.audit_events(case_id)]


def test_pixel_to_lat_lon_matches_rasterio_and_gdal():
    with rasterio.open(GEO / "RGB.byte.tif") as ds:
        georef = Georef(ds.crs.to_string(), tuple(ds.transform)[:6])
        x, y = ds.xy(300, 500)  # the centre of pixel row 300, column 500
        (lon,), (lat,) = warp(ds.crs, "EPSG:4326", [x], [y])
    got_lon, got_lat = georef.centre((500, 300, 501, 301))
    assert got_lon == pytest.approx(lon, abs=1e-9) and got_lat == pytest.approx(lat, abs=1e-9)


def test_band_presets_and_the_map_tiles(tmp_path):
    """Every preset of a 4-band scene is a view of its map; a tile is the scene's pixels in that view, each view
    different; a view the scene does not have is refused."""
    assets = RemoteSensingDomain().ingest(GEO / "rgbn_suba.tif", LIMITS)
    raster = assets[0]
    assert list(raster.meta["presets"])[:3] == ["true colour", "false colour (near infrared as red)",
                                                "first band (grey)"]
    assert {"band 2 (grey)", "band 3 (grey)", "band 4 (grey)", "NDVI", "NDWI"} <= set(raster.meta["presets"])
    assert raster.meta["presets"]["false colour (near infrared as red)"] == [4, 1, 2]
    info = map_info(raster.meta)
    assert info["views"] == list(raster.meta["presets"]) and info["units"] == "m" and info["max_level"] == 9
    box, size = (0, 0, 276, 212), (138, 106)
    natural = np.asarray(map_tile(str(raster.path), raster.meta, "true colour", "min–max", box, size))
    false_colour = np.asarray(map_tile(str(raster.path), raster.meta, "false colour (near infrared as red)",
                                       "min–max", box, size))
    assert natural.shape == (106, 138, 4) and not np.array_equal(natural, false_colour)  # RGBA: a no-data border
    with pytest.raises(InputRejected, match="No such view"):
        map_tile(str(raster.path), raster.meta, "<script>", "min–max", box, size)


def test_ndvi_is_computed_from_the_band_values_as_numpy_does(tmp_path):
    """An NDVI map tile at full resolution: each pixel's colour is the ramp's colour for numpy's NDVI there."""
    from loupe.domains.remote_sensing.indices import ramp_image

    assets = RemoteSensingDomain().ingest(GEO / "rgbn_suba.tif", LIMITS)
    raster = assets[0]
    assert raster.meta["presets"]["NDVI"] == [4, 1] and raster.meta["presets"]["NDWI"] == [2, 4]
    image = np.asarray(map_tile(str(raster.path), raster.meta, "NDVI", "2–98 %", (0, 0, 276, 212), (276, 212)))
    with rasterio.open(GEO / "rgbn_suba.tif") as ds:
        nir, red = ds.read(4).astype(np.float64), ds.read(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(nir + red > 0, (nir - red) / (nir + red), np.nan)
    assert image.shape[:2] == expected.shape  # the whole 276 × 212 scene, one pixel each
    for row, col in ((10, 10), (100, 150), (200, 270)):
        assert np.array_equal(image[row, col], np.asarray(ramp_image(expected[row:row + 1, col:col + 1]))[0, 0])


def test_a_map_tile_leaves_no_data_clear():
    """The scene's no-data border (nodata 0) comes back clear in an RGBA tile, so a basemap shows through it; the
    valid pixels stay opaque. A tile with no such pixel stays RGB (served as JPEG)."""
    raster = RemoteSensingDomain().ingest(GEO / "rgbn_suba.tif", LIMITS)[0]
    with rasterio.open(GEO / "rgbn_suba.tif") as ds:
        valid = ds.dataset_mask() > 0
    tile = map_tile(str(raster.path), raster.meta, "true colour", "2–98 %", (0, 0, 276, 212), (276, 212))
    assert tile.mode == "RGBA"
    alpha = np.asarray(tile)[:, :, 3]
    assert np.array_equal(alpha > 0, valid) and (~valid).any()
    top, left = 100, 150  # a block of valid pixels only
    assert valid[top:top + 64, left:left + 64].all()
    inside = map_tile(str(raster.path), raster.meta, "true colour", "2–98 %", (left, top, left + 64, top + 64),
                      (64, 64))
    assert inside.mode == "RGB"


def test_a_map_stretch_says_the_values_shown_black_and_white():
    """The 2–98 % stretch of the true-colour view is numpy's percentiles of each band's non-zero values over the
    whole scene (small enough to be read whole); an index is its fixed ramp."""
    raster = RemoteSensingDomain().ingest(GEO / "rgbn_suba.tif", LIMITS)[0]
    said = map_stretch(str(raster.path), raster.meta, "true colour", "2–98 %")
    with rasterio.open(GEO / "rgbn_suba.tif") as ds:
        for n, band in enumerate(said["bands"]):
            values = ds.read(band)
            low, high = np.percentile(values[values != 0], [2, 98])
            assert (said["low"][n], said["high"][n]) == pytest.approx((low, high), abs=1e-3)
            # and the band's histogram over the scene, for the viewer to draw under the stretch's cut-offs
            shown = said["histogram"]["bands"][n]
            counts, _ = np.histogram(values[values != 0], bins=64, range=(values[values != 0].min(),
                                                                          values[values != 0].max()))
            assert (shown["low"], shown["high"]) == (values[values != 0].min(), values[values != 0].max())
            assert shown["counts"] == counts.tolist()
    assert map_stretch(str(raster.path), raster.meta, "NDVI", "2–98 %")["low"] == [-1.0]


def test_a_map_pixel_is_rasterios_value_and_place():
    assets = RemoteSensingDomain().ingest(GEO / "rgbn_suba.tif", LIMITS)
    raster = assets[0]
    said = map_pixel(str(raster.path), raster.meta, 150, 100)
    with rasterio.open(GEO / "rgbn_suba.tif") as ds:
        want = ds.read(window=rasterio.windows.Window(150, 100, 1, 1))[:, 0, 0].tolist()
        x, y = ds.xy(100, 150)
        (lon,), (lat,) = warp(ds.crs, "EPSG:4326", [x], [y])
    assert said["values"] == want and (said["x"], said["y"]) == pytest.approx((x, y))
    assert (said["lon"], said["lat"]) == pytest.approx((lon, lat), abs=1e-9)
    with pytest.raises(InputRejected, match="outside the scene"):
        map_pixel(str(raster.path), raster.meta, 276, 0)


def test_a_plain_tiff_works_without_coordinates(service, tmp_path):
    user = service.store.add_user("ana", "ana-password-12", "user")
    path = tmp_path / "scan.tif"
    Image.effect_noise((700, 500), 40).convert("RGB").save(path)
    case_id = service.create_case(user, "remote_sensing", path, "scan")
    final = list(service.ask(user, case_id, "What is this?"))[-1]
    assert all(re.match(r"x \d", c["text"]) for c in final.run.extra["citations"])  # pixels, not lat/lon
    with pytest.raises(LoupeError, match="not georeferenced"):
        service.export_case(user, case_id, "geojson")


def test_missing_overviews_are_built_with_progress(tmp_path):
    path = tmp_path / "flat.tif"
    profile = {"driver": "GTiff", "width": 3000, "height": 2200, "count": 3, "dtype": "uint8", "crs": "EPSG:32618",
               "transform": rasterio.transform.from_origin(500000, 2700000, 1, 1)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 2200, 3000), 90, dtype=np.uint8))
    steps = []
    raster = RemoteSensingDomain().ingest(path, LIMITS, lambda done, total: steps.append((done, total)))[0]
    assert raster.meta["overview_factors"] == [2.0, 4.0] and steps == [(1, 2), (2, 2)]  # 3000 -> 1500 -> 750 px
    stored = tmp_path / "stored.tif"
    stored.write_bytes(Path(raster.path).read_bytes())  # the clean copy the store would take
    with rasterio.open(stored) as ds:
        assert ds.overviews(1) == [2, 4]


def test_sixteen_bit_data_gets_one_stretch_for_the_scene():
    with rasterio.open(GEO / "rgbn_suba.tif") as ds:
        values = ds.read().astype(np.uint16) * 40  # the same scene as 16-bit reflectance-like numbers
        profile = ds.profile | {"dtype": "uint16"}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sixteen.tif"
        with rasterio.open(path, "w", **profile) as out:
            out.write(values)
        raster = RemoteSensingDomain().ingest(path, LIMITS)[0]
    low, high = raster.meta["stretch"]
    assert len(low) == 3 and all(0 < lo < hi <= 255 * 40 for lo, hi in zip(low, high, strict=True))


def test_a_full_disk_scene_off_the_earth_at_its_corners(service):
    assets = RemoteSensingDomain().ingest(GEO / "goes.tif", LIMITS)
    meta = assets[0].meta
    assert meta["georeferenced"] and meta["corners_lonlat"] is None  # the corners are space
    georef = Georef(meta["crs"], tuple(meta["transform"]))
    lon, lat = georef.centre((270, 270, 272, 272))
    assert lon == pytest.approx(-75, abs=0.5) and lat == pytest.approx(0, abs=0.5)  # the sub-satellite point
    assert georef.where((0, 0, 1, 1)) == "off the Earth's disk"


def test_an_unknown_coordinate_system_leaves_a_scene_without_lat_lon(tmp_path):
    path = tmp_path / "local.tif"
    local = rasterio.crs.CRS.from_wkt(
        'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8", "crs": local,
               "transform": rasterio.transform.from_origin(1000, 2000, 1, 1)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 64, 64), 120, dtype=np.uint8))
    raster = RemoteSensingDomain().ingest(path, LIMITS)[0]
    assert raster.meta["georeferenced"] is False and "cannot be converted" in raster.meta["description"]


def test_bad_rasters_are_refused_and_nothing_is_stored(service, tmp_path):
    user = service.store.add_user("ana", "ana-password-12", "user")
    truncated = (GEO / "cogeo.tif").read_bytes()
    with pytest.raises(InputRejected, match="damaged or truncated|GDAL can open"):
        service.create_case(user, "remote_sensing", io.BytesIO(truncated[:len(truncated) // 2]), "cut")
    with pytest.raises(InputRejected, match="damaged or truncated"):
        service.create_case(user, "remote_sensing", GEO / "malformed" / "corrupt.tif", "bad")
    with pytest.raises(InputRejected, match="GDAL can open"):
        service.create_case(user, "remote_sensing", io.BytesIO(b"II*\x00" + b"\x00" * 64), "bad")
    assert service.store.list_cases(user) == [] and not any(service.settings.assets_dir.rglob("*.*"))
