"""Giant images: tile sources on real files, pyramid arithmetic, focus with planted relevance, the
attention scorer's capture against eager attention, and per-tile feature caching."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from loupe.core.errors import InputRejected
from loupe.core.pyramid.focus import FocusConfig, PlantedScorer, TileView, focus
from loupe.core.pyramid.pyramid import Pyramid, Tile
from loupe.core.pyramid.sources import PILSource, RasterSource, SlideSource, open_source
from loupe.core.pyramid.synthetic import random_objects, write_cog

DATA = Path(__file__).parents[1] / "data"
GEO = DATA / "remote_sensing"
SLIDES = DATA / "medical" / "pathology"


class CountingSource:
    """Wraps a source and records every read (box and output size)."""

    def __init__(self, source) -> None:  # noqa: ANN001
        self.inner = source
        self.reads: list[tuple[tuple, tuple]] = []
        for name in ("width", "height", "native_downsamples", "crs", "transform", "description"):
            setattr(self, name, getattr(source, name))

    def read(self, box, size):  # noqa: ANN001, ANN201
        self.reads.append((box, size))
        return self.inner.read(box, size)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def cog_8k(tmp_path_factory) -> tuple[Path, list]:
    objects = random_objects(8192, 4, 96, seed=3)
    path = write_cog(tmp_path_factory.mktemp("cog") / "scene.tif", 8192, objects, seed=3)
    return path, objects


def test_a_geotiff_region_reads_as_rasterio_reads_it():
    source = open_source(GEO / "RGB.byte.tif", 10**8)
    assert isinstance(source, RasterSource) and (source.width, source.height) == (791, 718)
    assert source.crs == "EPSG:32618" and source.transform[0] == pytest.approx(300.0379266750948)
    region = np.asarray(source.read((100, 200, 228, 264), (128, 64)))
    with rasterio.open(GEO / "RGB.byte.tif") as ds:
        expected = ds.read(window=rasterio.windows.Window(100, 200, 128, 64))
        masked = ds.read_masks(1, window=rasterio.windows.Window(100, 200, 128, 64)) == 0
    expected[:, masked] = 0
    assert np.array_equal(region.transpose(2, 0, 1), expected)


def test_a_cog_is_read_from_its_overviews_and_bands_are_chosen():
    source = open_source(GEO / "cogeo.tif", 10**8)
    assert source.native_downsamples == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    small = source.read((0, 0, 1024, 1024), (16, 16))
    with rasterio.open(GEO / "cogeo.tif", overview_level=5) as ds:  # factor 64: 16 x 16
        overview = ds.read()
    assert np.abs(np.asarray(small).transpose(2, 0, 1).astype(int) - overview.astype(int)).mean() < 2
    false_colour = RasterSource(GEO / "rgbn_suba.tif", bands=(4, 1, 2))  # near infrared shown red
    natural = RasterSource(GEO / "rgbn_suba.tif")
    box = (0, 0, 276, 212)
    assert not np.array_equal(np.asarray(false_colour.read(box, (276, 212))), np.asarray(natural.read(box, (276, 212))))
    with pytest.raises(InputRejected, match="4 band"):
        RasterSource(GEO / "rgbn_suba.tif", bands=(5,))


def test_a_plain_tiff_works_without_coordinates(tmp_path):
    path = tmp_path / "plain.tif"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(path)
    source = open_source(path, 10**8)
    assert source.crs is None and source.transform is None and "not georeferenced" in source.description
    assert source.read((0, 0, 300, 200), (30, 20)).getpixel((5, 5)) == (10, 200, 30)


def test_damaged_and_hostile_rasters_get_one_clear_message(tmp_path):
    corrupt = open_source(GEO / "malformed" / "corrupt.tif", 10**8)  # opens; pixels fail
    with pytest.raises(InputRejected, match="damaged or truncated"):
        corrupt.read((0, 0, 1024, 1024), (1024, 1024))
    not_tiff = tmp_path / "fake.tif"
    not_tiff.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(InputRejected, match="GDAL can open"):
        open_source(not_tiff, 10**8)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000)).save(huge)
    with pytest.raises(InputRejected, match="tiled GeoTIFF / COG"):
        open_source(huge, 1_000_000)


def test_an_absurd_size_claim_is_refused(tmp_path):
    path = tmp_path / "claims.tif"
    profile = {"driver": "GTiff", "width": 2_000_000, "height": 10, "count": 1, "dtype": "uint8",
               "tiled": True, "sparse_ok": True}
    with rasterio.open(path, "w", **profile):
        pass  # sparse: no pixel written, the header claims two million columns
    with pytest.raises(InputRejected, match="no real image is that large"):
        open_source(path, 10**8)


def test_slides_open_through_openslide_and_unreadable_ones_are_refused():
    slide = open_source(SLIDES / "openslide_small_synthetic.svs", 10**8)
    assert isinstance(slide, SlideSource) and (slide.width, slide.height) == (16, 16)
    assert slide.read((0, 0, 16, 16), (8, 8)).size == (8, 8)
    with pytest.raises(InputRejected, match="cannot be read: the file is damaged"):  # opens, tiles fail
        open_source(SLIDES / "malformed" / "openslide_unreadable.svs", 10**8)


def test_pyramid_levels_grid_boxes_and_padding():
    source = PILSource(Image.new("RGB", (2500, 1200), (200, 100, 50)))
    pyramid = Pyramid(source, tile=512, base_side=1024)
    assert pyramid.base_level == 2 and pyramid.levels == 3  # 2500 -> 1250 -> 625
    assert [pyramid.grid(level) for level in range(3)] == [(5, 3), (3, 2), (2, 1)]
    assert pyramid.box(Tile(0, 4, 2)) == (2048, 1024, 2500, 1200)  # clipped to the image
    assert pyramid.box(Tile(2, 1, 0)) == (2048, 0, 2500, 1200)
    edge = pyramid.read(Tile(0, 4, 2))
    assert edge.size == (512, 512)
    assert edge.getpixel((451, 175)) == (200, 100, 50) and edge.getpixel((452, 176)) == (0, 0, 0)  # padded black
    assert Tile(1, 1, 1).children() == (Tile(0, 2, 2), Tile(0, 3, 2), Tile(0, 2, 3), Tile(0, 3, 3))
    assert not pyramid.exists(Tile(0, 2, 3)) and pyramid.exists(Tile(0, 3, 2))
    assert all(child.parent() == Tile(1, 1, 1) for child in Tile(1, 1, 1).children())
    assert pyramid.thumbnail().size == (512, 246)
    assert pyramid.tile_count() == 15 + 6 + 2


def test_no_read_covers_the_full_image_at_full_resolution(cog_8k):
    path, objects = cog_8k
    source = CountingSource(open_source(path, 10**8))
    pyramid = Pyramid(source)
    selection = focus(pyramid, "where?", PlantedScorer([objects[0].box]))
    assert all(size[0] * size[1] <= 512 * 512 for _, size in source.reads)  # never more than a tile's pixels
    assert len(source.reads) == selection.tiles_scored + 1  # each scored tile read once, plus the thumbnail


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_focus_finds_a_planted_tile_in_random_placements_and_on_borders(cog_8k):
    path, _ = cog_8k
    pyramid = Pyramid(open_source(path, 10**8))
    rng = random.Random(11)
    hits, scored, size = 0, [], 48
    for n in range(50):
        if n % 3 == 0:  # across a vertical tile border
            x, y = rng.randrange(1, 16) * 512 - size // 2, rng.randrange(0, 8192 - size)
        elif n % 3 == 1:  # across a horizontal one
            x, y = rng.randrange(0, 8192 - size), rng.randrange(1, 16) * 512 - size // 2
        else:
            x, y = rng.randrange(0, 8192 - size), rng.randrange(0, 8192 - size)
        planted = (x, y, x + size, y + size)
        selection = focus(pyramid, "find it", PlantedScorer([planted]), FocusConfig(budget=24))
        scored.append(selection.tiles_scored)
        hits += any(c.tile.level == 0 and _overlaps(c.box, planted) for c in selection.tiles)
    assert hits >= 48  # >= 95 %
    assert max(scored) <= 24 and pyramid.tile_count() == 256 + 64 + 16 + 4


def test_focus_respects_the_budget_and_keeps_a_trace():
    pyramid = Pyramid(PILSource(Image.new("RGB", (4096, 4096))), base_side=1024)
    selection = focus(pyramid, "q", PlantedScorer([(100, 100, 140, 140), (3900, 3900, 3950, 3950)]),
                      FocusConfig(budget=6, per_level=2))
    assert selection.tiles_scored <= 6 and selection.steps[0].level == 2
    assert [s["level"] for s in selection.as_dict()["steps"]] == sorted(
        (s["level"] for s in selection.as_dict()["steps"]), reverse=True)


@pytest.mark.parametrize("family", ["smolvlm", "qwen2vl", "llava-ov"])
def test_the_attention_capture_equals_eager_attention(tiny_model_dir, family):
    from loupe.core.pyramid.attention import AttentionScorer, square, tile_side
    from loupe.core.vlm.base import Message
    from loupe.core.vlm.families import language_model
    from loupe.core.vlm.hf import HFVLM

    vlm = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="plain")
    scorer = AttentionScorer(vlm)
    side = tile_side(vlm)
    images = [Image.effect_noise((side, side), 40 + 30 * i).convert("RGB") for i in range(2)]
    views = [TileView(Tile(0, i, 0), (0, 0, side, side), image) for i, image in enumerate(images)]
    thumbnail = Image.new("RGB", (side, side // 2), (90, 90, 90))
    maps = scorer.score("Where is the boat?", thumbnail, views)
    # the same pass with eager attention, every layer, weights returned
    inputs = vlm.prepare([Message("user", "Where is the boat?", [square(thumbnail), *images])], "low")
    config = language_model(vlm.model, vlm.family).config
    previous, config._attn_implementation = config._attn_implementation, "eager"
    try:
        with torch.inference_mode():
            out = vlm.model(**inputs, output_attentions=True, use_cache=False)
    finally:
        config._attn_implementation = previous
    row = out.attentions[scorer.layer][0, :, -1].mean(dim=0)
    positions = (inputs["input_ids"][0] == vlm.image_token_id).nonzero().flatten()
    expected = np.array_split(row[positions].numpy(), 3)[1:]
    for got, want in zip(maps, expected, strict=True):
        assert np.allclose(got.ravel(), want[:got.size], atol=1e-5)
    assert scorer.encoded_units == 3 and vlm.last_encoded_units == 3
    scorer.score("Another question?", thumbnail, views)
    assert vlm.last_encoded_units == 0  # every tile and the thumbnail came from the feature cache


@pytest.mark.parametrize("family", ["smolvlm", "qwen2vl", "llava-ov"])
def test_features_are_cached_per_tile_and_answers_do_not_change(tiny_model_dir, family):
    from loupe.core.vlm.base import GenerationOptions, Message
    from loupe.core.vlm.hf import HFVLM

    vlm = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", dtype="fp32", engine="plain")
    a, b, c = (Image.effect_noise((96, 96), 30 + 20 * i).convert("RGB") for i in range(3))
    options = GenerationOptions(max_new_tokens=6, detail="low")
    vlm.chat([Message("user", "Describe.", [a, b])], options)
    assert vlm.last_encoded_units == 2
    cached = vlm.chat([Message("user", "Describe.", [b, c])], options)
    assert vlm.last_encoded_units == 1  # only the new image
    vlm.forget()
    fresh = vlm.chat([Message("user", "Describe.", [b, c])], options)
    assert vlm.last_encoded_units == 2 and fresh.text == cached.text


def test_a_synthetic_cog_has_overviews_and_its_objects_where_it_says(cog_8k):
    path, objects = cog_8k
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4, 8, 16] and ds.profile["tiled"] and ds.crs.to_epsg() == 32618
    source = open_source(path, 10**8)
    x0, y0, x1, y1 = objects[0].box
    centre = source.read((x0 + 40, y0 + 40, x0 + 56, y0 + 56), (16, 16))
    assert np.abs(np.asarray(centre, dtype=int) - np.asarray(objects[0].colour)).max() < 40  # JPEG tiles
    buffer = io.BytesIO()
    source.read((0, 0, 8192, 8192), (64, 64)).save(buffer, "PNG")
    assert buffer.tell() > 0


def test_the_synthetic_cog_command_writes_a_scene_and_its_objects(tmp_path):
    import json

    from click.testing import CliRunner

    from loupe.apps.cli import cli

    out = tmp_path / "scene.tif"
    result = CliRunner().invoke(cli, ["pyramid", "synthetic-cog", str(out), "--side", "1500", "--objects", "2",
                                      "--size", "64"])
    assert result.exit_code == 0, result.output
    objects = json.loads(out.with_suffix(".objects.json").read_text())
    assert len(objects) == 2 and all(o["box"][2] - o["box"][0] == 64 for o in objects)
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (1500, 1500) and ds.overviews(1) == [2, 4]
