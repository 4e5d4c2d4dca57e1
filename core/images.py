"""Safe decoding of uploaded images: bounded in bytes and pixels, with errors a user can act on.

Uploads are stored as :func:`pixels_only_png`, a PNG rebuilt from the decoded pixels alone, so no metadata
(EXIF, XMP, IPTC, text chunks, comments, ICC profiles, thumbnails) can carry identifying text into storage.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputRejected

FRAME_COUNT_CAP = 10_000  # counting stops here: a crafted file must not make us walk millions of frames
_MIB = 2**20
_MEGAPIXEL = 1_000_000
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def open_bounded(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` as an image, refusing empty, oversized, undecodable or pixel-bomb input.

    The pixel bound is checked from the header, before any pixel is decoded. Pillow's own bomb limit
    (``Image.MAX_IMAGE_PIXELS``) stays a ceiling above ``max_pixels``.
    """
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        shown, limit = _amounts(len(data), max_bytes, _MIB, "MiB", "bytes")
        raise InputRejected(f"The file is {shown}; Loupe accepts files up to {limit}.")
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > limit:
                raise InputRejected(_too_many_pixels(img.size, limit))
            img.load()
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(_bomb_message(data, str(exc), limit)) from None
    except UnidentifiedImageError:
        raise InputRejected("The file is not an image Loupe can read (PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
    except _DECODE_ERRORS:
        raise InputRejected("The image could not be decoded: the file looks damaged or incomplete.") from None
    return img


def _amounts(value: int, limit: int, scale: int, unit: str, base_unit: str) -> tuple[str, str]:
    """``value`` and ``limit`` in ``unit`` (one decimal), with exact counts where rounding would blur the two."""
    shown, cap = f"{value / scale:.1f}", f"{limit / scale:.1f}"
    limit_text = cap.removesuffix(".0")
    limit_text += f" {unit.removesuffix('s') if limit_text == '1' else unit}"  # "1 megapixel"
    if shown == cap or cap == "0.0":
        return f"{value:,} {base_unit}", f"{limit_text} ({limit:,} {base_unit})"
    return f"{shown} {unit}", limit_text


def _too_many_pixels(size: tuple[int, int], limit: int) -> str:
    width, height = size
    shown, cap = _amounts(width * height, limit, _MEGAPIXEL, "megapixels", "pixels")
    return f"The image is {width:,} × {height:,} pixels ({shown}); Loupe accepts images up to {cap}."


def _bomb_message(data: bytes, pillow_text: str, limit: int) -> str:
    """Our wording for Pillow's bomb refusal, which fires inside ``Image.open`` before our own check."""
    size = _header_size(data)
    if size and size[0] * size[1] > limit:
        return _too_many_pixels(size, limit)
    claimed = re.search(r"\((\d+) pixels\)", pillow_text)
    if claimed and int(claimed.group(1)) > limit:
        shown, cap = _amounts(int(claimed.group(1)), limit, _MEGAPIXEL, "megapixels", "pixels")
        return f"The image is {shown}; Loupe accepts images up to {cap}."
    _, cap = _amounts(0, limit, _MEGAPIXEL, "megapixels", "pixels")
    return f"The image has too many pixels to open safely; Loupe accepts images up to {cap}."


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, through the format plugins directly (which skip Pillow's bomb check)."""
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = not accept or accept(prefix)
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "recognised but unsupported" warning
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return factory(io.BytesIO(data), "").size
        except Exception:  # any plugin failure just means "not this format"
            continue
    return None


def count_frames(data: bytes, img: Image.Image, cap: int = FRAME_COUNT_CAP) -> int:
    """Frames (animation frames, pages) in the upload ``img`` decoded from ``data``; ``cap + 1`` means "more than cap".

    No frame beyond the first is decoded: GIF frames are counted from the block structure, TIFF pages by walking
    at most ``cap`` directories, and other formats (PNG/APNG, WebP, MPO) declare their count in the header.
    """
    if img.format == "GIF":
        return min(_gif_frames(data, cap), cap + 1)
    if img.format == "TIFF":
        with Image.open(io.BytesIO(data)) as pages:
            for page in range(1, cap + 1):
                try:
                    pages.seek(page)
                except _DECODE_ERRORS:
                    return page
        return cap + 1
    return min(max(getattr(img, "n_frames", 1), 1), cap + 1)


def _gif_frames(data: bytes, cap: int) -> int:
    """Image descriptors in a GIF, stopping after ``cap + 1`` or at the first malformed block."""

    def skip_sub_blocks(pos: int) -> int:
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        return pos + 1

    def color_table(flags: int) -> int:
        return 3 << ((flags & 7) + 1) if flags & 0x80 else 0

    if len(data) <= 13:
        return 1
    frames, pos = 0, 13 + color_table(data[10])  # after the header, screen descriptor and global colour table
    while pos < len(data) and frames <= cap:
        if data[pos] == 0x2C and pos + 10 < len(data):  # image descriptor, then LZW code size and data
            frames += 1
            pos = skip_sub_blocks(pos + 11 + color_table(data[pos + 9]))
        elif data[pos] == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        else:  # trailer or garbage
            break
    return max(frames, 1)


def frames_note(frames: int, cap: int = FRAME_COUNT_CAP) -> str | None:
    """What a user should know about a multi-frame upload, or None for a single image."""
    if frames <= 1:
        return None
    count = f"more than {cap:,}" if frames > cap else f"{frames:,}"
    return f"This file has {count} frames; Loupe analyses the first frame only."


def pixels_only_png(img: Image.Image) -> bytes:
    """PNG bytes rebuilt from ``img``'s pixels alone, upright (EXIF orientation applied), with no metadata at all.

    Pixels stay exact for the modes PNG stores (1, L, LA, P, RGB, RGBA, I;16); a palette image with transparency
    becomes RGBA. CMYK, YCbCr, LAB and HSV become RGB. 32-bit integer (I) and float (F) images become I;16 when
    every value is an integer in 0..65535, otherwise they are rescaled from their min..max range to L.
    """
    with contextlib.suppress(*_DECODE_ERRORS):  # damaged EXIF: keep the pixels as decoded rather than refuse
        img = ImageOps.exif_transpose(img)
    transparency = img.info.get("transparency")
    if img.mode == "P" and (transparency is not None or (img.palette and img.palette.mode == "RGBA")):
        img, transparency = img.convert("RGBA"), None
    img = _png_storable(img)
    # Rebuilt from raw bytes so nothing from ``img.info`` (text, EXIF, ICC, comments...) can travel along.
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    if img.mode == "P":
        clean.putpalette(img.getpalette() or [])
    options: dict[str, object] = {}
    if img.mode in ("1", "L", "I;16") and isinstance(transparency, int):
        options["transparency"] = transparency  # a colour key is pixel data, not metadata
    elif img.mode == "RGB" and isinstance(transparency, tuple) and all(isinstance(v, int) for v in transparency):
        options["transparency"] = transparency
    out = io.BytesIO()
    clean.save(out, format="PNG", **options)
    return out.getvalue()


def _png_storable(img: Image.Image) -> Image.Image:
    if img.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        return img
    if img.mode.startswith("I;16"):  # other byte orders of 16-bit grey
        return _i16(np.asarray(img).astype(np.uint16))
    if img.mode in ("I", "F"):
        values = np.asarray(img)
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if np.array_equal(finite, values) and finite.min() >= 0 and finite.max() <= 65535 \
                and np.array_equal(finite, np.round(finite)):
            return _i16(finite.astype(np.uint16))
        low, span = finite.min(), finite.max() - finite.min()
        scaled = (finite - low) * (255 / span) if span else np.zeros_like(finite)
        return Image.frombytes("L", img.size, np.round(scaled).astype(np.uint8).tobytes())
    return img.convert({"PA": "RGBA", "RGBa": "RGBA", "La": "LA"}.get(img.mode, "RGB"))


def _i16(values: np.ndarray) -> Image.Image:
    height, width = values.shape
    return Image.frombytes("I;16", (width, height), values.astype("<u2").tobytes())
