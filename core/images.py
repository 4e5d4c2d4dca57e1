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
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .budgets import BudgetExceeded, Budgets
from .errors import InputRejected

FRAME_COUNT_CAP = 10_000  # counting stops here: a crafted file must not make us walk millions of frames
_MIB = 2**20
_MEGAPIXEL = 1_000_000
_ORIENTATION = 0x0112  # the EXIF tag
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
        raise BudgetExceeded(f"The file is {shown}; Loupe accepts files up to {limit}.", "max_bytes")
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > limit:
                raise BudgetExceeded(_too_many_pixels(img.size, limit), "max_pixels")
            img.load()
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BudgetExceeded(_bomb_message(data, str(exc), limit), "max_pixels") from None
    except UnidentifiedImageError:
        raise InputRejected(NOT_AN_IMAGE) from None
    except _DECODE_ERRORS:
        if stub := _stub_format(data):  # Pillow knows the format by name only (HDF5, GRIB, BUFR, WMF)
            raise InputRejected(f"The file is {stub}, which is not an image format Loupe reads "
                                "(PNG, JPEG, TIFF, WebP, BMP, GIF).") from None
        raise InputRejected("The image could not be decoded: the file looks damaged or incomplete.") from None
    return img


NOT_AN_IMAGE = "The file is not an image Loupe can read (PNG, JPEG, TIFF, WebP, BMP, GIF)."
_STUB_NAMES = {"HDF5": "an HDF5 file", "GRIB": "a GRIB file", "BUFR": "a BUFR file", "WMF": "a Windows metafile"}


def _stub_format(data: bytes) -> str | None:
    """The name of a format Pillow recognises but cannot decode, for a message that says what the file is."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if isinstance(img, ImageFile.StubImageFile):
                return _STUB_NAMES.get(img.format or "", f"a {img.format} file")
    except Exception:  # noqa: BLE001 - any failure: not a recognised stub
        return None
    return None


def check_before_decoding(data: bytes, limits: Budgets, read: int | None = None) -> list[TiffPage]:
    """Refuse an image upload from its header alone, naming the budget: its bytes, its (first) image's pixels,
    and for a TIFF every page's and sub-image's pixels and the first ``read`` pages' total (all by default).
    Returns a TIFF's pages (empty for other formats)."""
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    limits.check("max_bytes", len(data), "The file")
    if is_tiff(data):
        return check_tiff_pages(data, limits, read)
    size = _header_size(data)
    if size is not None:
        width, height = size
        limits.check("max_pixels", width * height, f"The image, {width:,} × {height:,} pixels,")
    return []


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
        try:  # some plugins' tests index the prefix and fail on a file shorter than it (struct.error)
            accepted = not accept or accept(prefix)
        except _DECODE_ERRORS:
            continue
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "recognised but unsupported" warning
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return factory(io.BytesIO(data), "").size
        except Exception:  # any plugin failure just means "not this format"
            continue
    return None


@dataclass(frozen=True)
class TiffPage:
    """One page (IFD) of a TIFF as its header describes it, with the sizes of its sub-images (SubIFDs)."""

    width: int
    height: int
    subimages: tuple[tuple[int, int], ...] = ()


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 13: ("I", 4), 16: ("Q", 8), 18: ("Q", 8)}  # SHORT, LONG, IFD, LONG8, IFD8


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF / BigTIFF


def tiff_pages(data: bytes, cap: int = FRAME_COUNT_CAP) -> list[TiffPage]:
    """Every page's size (and its SubIFDs') read from the TIFF's directories alone, without decoding a pixel.

    At most ``cap + 1`` pages are walked; a loop or a directory outside the file ends the walk (the decoder
    then refuses what is damaged).
    """
    if not is_tiff(data):
        return []
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    value_size = 8 if big else 4

    def unpack(fmt: str, at: int) -> int | None:
        size = struct.calcsize(order + fmt)
        return struct.unpack_from(order + fmt, data, at)[0] if at >= 0 and at + size <= len(data) else None

    def values(kind: int, count: int, field_at: int) -> list[int]:
        if kind not in _TIFF_TYPES or count <= 0:
            return []
        fmt, size = _TIFF_TYPES[kind]
        count = min(count, 1000)
        at = field_at if count * size <= value_size else unpack(offset_fmt, field_at)
        found = [unpack(fmt, at + i * size) for i in range(count)] if at is not None else []
        return [v for v in found if v is not None]

    seen: set[int] = set()

    def directory(at: int) -> tuple[int, int, list[int], int] | None:
        """(width, height, SubIFD offsets, next IFD offset) of the directory at ``at``."""
        entries = unpack(count_fmt, at)
        if entries is None or at in seen:
            return None
        seen.add(at)
        start = at + struct.calcsize(count_fmt)
        tags: dict[int, list[int]] = {}
        for i in range(min(entries, 4096)):
            entry = start + i * entry_size
            tag, kind = unpack("H", entry), unpack("H", entry + 2)
            count = unpack("Q" if big else "I", entry + 4)
            if tag is None or kind is None or count is None:
                return None
            if tag in (256, 257, 330):
                tags[tag] = values(kind, count, entry + 4 + value_size)
        following = unpack(offset_fmt, start + entries * entry_size) or 0
        width, height = (tags.get(256) or [0])[0], (tags.get(257) or [0])[0]
        return width, height, tags.get(330, []), following

    def subimages(offsets: list[int], depth: int) -> list[tuple[int, int]]:
        sizes = []
        for offset in offsets[:64]:
            found = directory(offset)
            if found is not None:
                sizes.append(found[:2])
                if depth < 3:
                    sizes.extend(subimages(found[2], depth + 1))
        return sizes

    pages: list[TiffPage] = []
    at = unpack(offset_fmt, 8 if big else 4) or 0
    while at and len(pages) <= cap:
        found = directory(at)
        if found is None:
            break
        width, height, sub, at = found
        pages.append(TiffPage(width, height, tuple(subimages(sub, 1))))
    return pages


def check_tiff_pages(data: bytes, limits: Budgets, read: int | None = None) -> list[TiffPage]:
    """Refuse a TIFF, from its directories alone, when any page or sub-image is over ``max_pixels`` or the
    first ``read`` pages (all, by default) add up to more than ``max_work_pixels``. Returns the pages."""
    pages = tiff_pages(data)
    for number, page in enumerate(pages, 1):
        for index, (width, height) in enumerate(((page.width, page.height), *page.subimages)):
            part = f"Page {number} of the TIFF" + (f" (sub-image {index})" if index else "")
            limits.check("max_pixels", width * height, f"{part}, {width:,} × {height:,} pixels,")
    work = sum(page.width * page.height for page in pages[:read])
    limits.check("max_work_pixels", work, f"The work of reading {len(pages[:read]):,} pages of the TIFF")
    return pages


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
        if img.getexif().get(_ORIENTATION, 1) != 1:  # (exif_transpose copies even an upright image)
            img = ImageOps.exif_transpose(img)
    transparency = img.info.get("transparency")
    if img.mode == "P" and (transparency is not None or (img.palette and img.palette.mode == "RGBA")):
        img, transparency = img.convert("RGBA"), None
    img = _png_storable(img)
    # A new image of the pixels (and palette) alone, with no ``info``: nothing from the file (text, EXIF, ICC,
    # comments...) can travel along. One copy: a large page is not held three times over.
    clean = img.copy()
    clean.info = {}
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
