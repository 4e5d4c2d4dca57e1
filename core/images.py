"""Safe decoding of uploaded images: bounded in bytes and pixels, with errors a user can act on."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InputRejected


def open_bounded(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` as an image, refusing empty, oversized, undecodable or pixel-bomb input.

    The pixel bound is checked from the header, before any pixel is decoded.
    """
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise InputRejected(f"The file is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise InputRejected(
                    f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
                )
            img.load()
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(f"The image has too many pixels to open safely ({exc}).") from None
    except UnidentifiedImageError:
        raise InputRejected("The file is not an image this domain can read (PNG, JPEG, TIFF, WebP, BMP).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputRejected(f"The image could not be decoded: {exc}.") from None
    return img
