"""Nothing identifying survives ingest: every metadata carrier is dropped, pixels are kept, frames are reported."""

import io

import numpy as np
import pytest
from helpers import (
    PNG_PIXEL_CHUNKS,
    animated,
    contains_text,
    gif_with_comment,
    gif_with_many_frames,
    identifying_exif,
    jpeg_with,
    patterned,
    png_chunks,
    png_header_only,
    png_with,
    png_with_text,
    png_with_xmp,
    tiff_with_tag,
    webp_with,
)
from PIL import Image, ImageOps

from loupe.core import images
from loupe.core.errors import InputRejected
from loupe.core.images import count_frames, open_bounded, pixels_only_png
from loupe.core.plugins import Budgets, discover

LIMITS = Budgets(max_bytes=2**20, max_pixels=1_000_000)
MRN = "MRN 99887766 ROE JANE"
PATIENT = "Patient POE EDGAR DOB 1955-05-05"

CARRIERS = {
    "png-tEXt": lambda m: png_with_text(m, "tEXt"),
    "png-zTXt": lambda m: png_with_text(m, "zTXt"),
    "png-iTXt": lambda m: png_with_text(m, "iTXt"),
    "png-iTXt-compressed": lambda m: png_with_text(m, "iTXt-compressed"),
    "png-xmp": png_with_xmp,
    "png-eXIf": lambda m: png_with(m, "exif"),
    "png-iCCP": lambda m: png_with(m, "icc"),
    "jpeg-COM": lambda m: jpeg_with(m, "comment"),
    "jpeg-exif": lambda m: jpeg_with(m, "exif"),
    "jpeg-exif-thumbnail": lambda m: jpeg_with(m, "thumbnail"),
    "jpeg-xmp": lambda m: jpeg_with(m, "xmp"),
    "jpeg-iptc-app13": lambda m: jpeg_with(m, "iptc"),
    "jpeg-icc": lambda m: jpeg_with(m, "icc"),
    "tiff-ImageDescription": lambda m: tiff_with_tag(m, 270),
    "tiff-Artist": lambda m: tiff_with_tag(m, 315),
    "tiff-DocumentName": lambda m: tiff_with_tag(m, 269),
    "tiff-xmp-700": lambda m: tiff_with_tag(m, 700),
    "tiff-iptc-33723": lambda m: tiff_with_tag(m, 33723),
    "tiff-icc-34675": lambda m: tiff_with_tag(m, 34675),
    "gif-comment": gif_with_comment,
    "webp-exif": lambda m: webp_with(m, "exif"),
    "webp-xmp": lambda m: webp_with(m, "xmp"),
    "webp-icc": lambda m: webp_with(m, "icc"),
}


def _ingest(data: bytes):
    [asset] = discover()["general"].ingest(io.BytesIO(data), LIMITS)
    return asset


def _assert_same_pixels(original: bytes, stored: bytes) -> None:
    src = ImageOps.exif_transpose(Image.open(io.BytesIO(original)))
    out = Image.open(io.BytesIO(stored))
    assert out.size == src.size
    assert out.convert("RGBA").tobytes() == src.convert("RGBA").tobytes()


def _assert_no_metadata(stored: bytes) -> None:
    assert {kind for kind, _ in png_chunks(stored)} <= PNG_PIXEL_CHUNKS
    out = Image.open(io.BytesIO(stored))
    assert set(out.info) <= {"transparency"}
    assert not out.getexif()


@pytest.mark.parametrize("marker", [MRN, PATIENT])
@pytest.mark.parametrize("carrier", CARRIERS)
def test_identifying_text_in_metadata_is_not_stored(carrier, marker):
    data = CARRIERS[carrier](marker)
    assert contains_text(data, marker), "the builder must really plant the marker"
    asset = _ingest(data)
    assert not contains_text(asset.data, marker)
    assert asset.media_type == "image/png"
    _assert_no_metadata(asset.data)
    _assert_same_pixels(data, asset.data)


def test_exif_orientation_is_applied_before_the_exif_is_dropped():
    out = io.BytesIO()
    patterned((40, 20)).save(out, format="JPEG", quality=95, exif=identifying_exif(MRN, orientation=6))
    asset = _ingest(out.getvalue())
    assert (asset.width, asset.height) == (20, 40)  # rotated upright
    assert not contains_text(asset.data, MRN)
    _assert_same_pixels(out.getvalue(), asset.data)


def test_clean_files_are_re_encoded_too():
    out = io.BytesIO()
    patterned().save(out, format="JPEG", quality=90)
    asset = _ingest(out.getvalue())
    assert asset.media_type == "image/png" and asset.data.startswith(b"\x89PNG")
    assert asset.meta == {"mode": "RGB", "format": "JPEG", "frames": 1}
    _assert_same_pixels(out.getvalue(), asset.data)


def _image(mode: str, values: list[float] | None = None, **info: object) -> Image.Image:
    img = patterned((16, 8), "RGB" if mode in ("I", "F", "I;16") else mode)
    if values is not None:
        img = Image.new(mode, (len(values), 1))
        img.putdata(values)
    elif mode == "I;16":
        img = Image.new("I;16", (16, 8))
        img.putdata([i * 997 for i in range(128)])
    img.info.update(info)
    return img


@pytest.mark.parametrize(("img", "stored_mode"), [
    (_image("1"), "1"),
    (_image("L"), "L"),
    (_image("LA"), "LA"),
    (_image("P"), "P"),
    (_image("RGB"), "RGB"),
    (_image("RGBA"), "RGBA"),
    (_image("I;16"), "I;16"),
    (_image("I", [0, 1, 300, 65535]), "I;16"),
    (_image("F", [0.0, 2.0, 40000.0]), "I;16"),
], ids=["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I-fits", "F-integral"])
def test_pixels_are_kept_exactly_where_png_can_hold_them(img, stored_mode):
    out = Image.open(io.BytesIO(pixels_only_png(img)))
    assert out.mode == stored_mode
    if stored_mode == "I;16" and img.mode != "I;16":
        assert np.asarray(out).ravel().tolist() == np.asarray(img).astype(int).ravel().tolist()
    else:
        assert out.tobytes() == img.tobytes()
    if img.mode == "P":
        assert out.getpalette() == img.getpalette()


def test_transparency_survives_as_pixel_data():
    pal = _image("P", transparency=0)
    assert Image.open(io.BytesIO(pixels_only_png(pal))).tobytes() == pal.convert("RGBA").tobytes()
    rgb = _image("RGB", transparency=(0, 0, 0))
    assert Image.open(io.BytesIO(pixels_only_png(rgb))).info == {"transparency": (0, 0, 0)}


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV"])
def test_modes_png_cannot_store_become_rgb(mode):
    img = _image(mode)
    out = Image.open(io.BytesIO(pixels_only_png(img)))
    assert out.mode == "RGB" and out.tobytes() == img.convert("RGB").tobytes()


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("I", [-5, 0, 70000], [0, 0, 255]),
    ("F", [0.0, 0.5, 1.0, float("nan")], [0, 128, 255, 0]),
])
def test_wide_values_are_rescaled_to_8_bit(mode, values, expected):
    out = Image.open(io.BytesIO(pixels_only_png(_image(mode, values))))
    assert out.mode == "L" and list(out.tobytes()) == expected


@pytest.mark.parametrize(("fmt", "frames"), [("GIF", 30), ("PNG", 4), ("WEBP", 5), ("TIFF", 3)])
def test_multi_frame_uploads_keep_frame_one_and_say_so(fmt, frames):
    data = animated(fmt, frames)
    asset = _ingest(data)
    assert asset.meta["frames"] == frames
    assert asset.meta["note"] == f"This file has {frames} frames; Loupe analyses the first frame only."
    first = Image.open(io.BytesIO(data)).convert("RGB")
    assert Image.open(io.BytesIO(asset.data)).convert("RGB").tobytes() == first.tobytes()


def test_frame_counting_stops_at_the_cap():
    data = gif_with_many_frames(10_050)
    img = open_bounded(data, LIMITS.max_bytes, LIMITS.max_pixels)
    assert count_frames(data, img, cap=100) == 101
    asset = _ingest(data)
    assert asset.meta["frames"] == 10_001
    assert asset.meta["note"] == "This file has more than 10,000 frames; Loupe analyses the first frame only."
    assert count_frames(gif_with_many_frames(1_000), img) == 1_000


def test_single_frame_uploads_have_no_note():
    assert "note" not in _ingest(png_with_text(MRN, "tEXt")).meta


@pytest.mark.parametrize(("data", "limits", "message"), [
    (b"\x00" * (3 * 2**20 + 2**19), Budgets(50 * 2**20 // 16, 10**6),
     "The file is 3.5 MiB; Loupe accepts files up to 3.1 MiB."),
    (b"\x00" * (2**20 + 1), LIMITS, "The file is 1,048,577 bytes; Loupe accepts files up to 1 MiB (1,048,576 bytes)."),
    (png_header_only(5000, 5000), LIMITS,
     "The image is 5,000 × 5,000 pixels (25.0 megapixels); Loupe accepts images up to 1 megapixel."),
    (png_header_only(30_000, 30_000), Budgets(2**20, 89_478_485),
     "The image is 30,000 × 30,000 pixels (900.0 megapixels); Loupe accepts images up to 89.5 megapixels."),
    (png_header_only(10_000, 10_000), Budgets(2**20, 10**12),  # above Pillow's limit, below 2x: a warning
     "The image is 10,000 × 10,000 pixels (100.0 megapixels); Loupe accepts images up to 89.5 megapixels."),
    (png_header_only(9_460, 9_460), Budgets(2**20, 89_478_485),
     "The image is 9,460 × 9,460 pixels (89,491,600 pixels); Loupe accepts images up to 89.5 megapixels "
     "(89,478,485 pixels)."),
])
def test_limits_are_explained_in_the_users_terms(data, limits, message):
    with pytest.raises(InputRejected) as refused:
        open_bounded(data, limits.max_bytes, limits.max_pixels)
    assert str(refused.value) == message
    assert "decompression bomb" not in message


def test_bomb_message_falls_back_without_a_readable_header(monkeypatch):
    monkeypatch.setattr(images, "_header_size", lambda data: None)
    with pytest.raises(InputRejected) as refused:
        open_bounded(png_header_only(30_000, 30_000), 2**20, 10**12)
    assert str(refused.value) == "The image is 900.0 megapixels; Loupe accepts images up to 89.5 megapixels."
    assert images._bomb_message(b"", "no size here", 10**6) == (
        "The image has too many pixels to open safely; Loupe accepts images up to 1 megapixel."
    )
