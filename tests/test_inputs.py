"""Upload bounds, the general domain, and content-addressed storage."""

import io

import pytest
from helpers import jpeg_with_exif, png_bytes, png_header_only
from PIL import Image

from loupe.core.cases.assets import AssetStore
from loupe.core.errors import InputRejected
from loupe.core.images import open_bounded
from loupe.core.plugins import Budgets, Domain, discover

LIMITS = Budgets(max_bytes=2**20, max_pixels=1_000_000)


def test_valid_image_opens():
    assert open_bounded(png_bytes((30, 20)), LIMITS.max_bytes, LIMITS.max_pixels).size == (30, 20)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"%PDF-1.4 not an image at all", "not an image"),
    (png_bytes()[:60], "could not be decoded"),
    (png_header_only(5000, 5000), r"5,000 × 5,000 pixels \(25.0 megapixels\); Loupe accepts images up to 1 megapixel"),
    (b"\x00" * (2**20 + 1), "Loupe accepts files up to 1 MiB"),
])
def test_bad_uploads_are_refused_with_a_reason(data, message):
    with pytest.raises(InputRejected, match=message):
        open_bounded(data, LIMITS.max_bytes, LIMITS.max_pixels)


def test_pillow_bomb_limit_applies_even_with_a_generous_bound():
    huge = png_header_only(30_000, 30_000)  # 900 MP: above Pillow's own 2x bomb threshold
    with pytest.raises(InputRejected, match="pixels") as refused:
        open_bounded(huge, LIMITS.max_bytes, 10**12)
    assert "89.5 megapixels" in str(refused.value) and "decompression bomb" not in str(refused.value)


def test_general_domain_is_discovered_through_entry_points():
    domains = discover()
    assert "general" in domains and isinstance(domains["general"], Domain)


def test_general_domain_strips_exif_and_builds_rgb_context():
    general = discover()["general"]
    [asset] = general.ingest(io.BytesIO(jpeg_with_exif()), LIMITS)
    assert b"Jane Patient" not in asset.data and b"MRN" not in asset.data
    assert (asset.width, asset.height, asset.media_type) == (80, 60, "image/png")
    assert not Image.open(io.BytesIO(asset.data)).getexif()
    context = general.context([asset], "what is this?")
    assert [img.mode for img in context.images] == ["RGB"]


def test_general_domain_re_encodes_clean_files_with_the_same_pixels():
    data = png_bytes()
    [asset] = discover()["general"].ingest(io.BytesIO(data), LIMITS)
    assert asset.media_type == "image/png"
    assert Image.open(io.BytesIO(asset.data)).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert asset.meta == {"mode": "RGB", "format": "PNG", "frames": 1}


def test_asset_store_is_content_addressed_and_atomic(tmp_path):
    store = AssetStore(tmp_path)
    digest = store.put(b"abc")
    assert store.put(b"abc") == digest
    assert store.read(digest) == b"abc"
    assert store.path_for(digest).name == digest
    assert not list(tmp_path.rglob(".incoming-*"))
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
