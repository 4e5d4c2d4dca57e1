"""The ``general`` domain: ordinary photos and screenshots, shown to the model as they are."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from loupe.core.images import open_bounded
from loupe.core.plugins import IngestedAsset, UploadLimits, VisualContext

_MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
                "BMP": "image/bmp", "GIF": "image/gif"}


class GeneralDomain:
    name = "general"
    title = "General images"
    accepts = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
    system_prompt = "You are a careful visual assistant. Answer from what the image shows; say when unsure."
    default_adapter = None

    def ingest(self, data: bytes, limits: UploadLimits) -> list[IngestedAsset]:
        img = open_bounded(data, limits.max_bytes, limits.max_pixels)
        media_type = _MEDIA_TYPES.get(img.format or "", "application/octet-stream")
        # EXIF can carry names, device serials and GPS: such images are stored re-encoded without it.
        if img.info.get("exif") or img.getexif():
            data, media_type = _strip_metadata(img), "image/png"
        return [IngestedAsset(data=data, media_type=media_type, width=img.width, height=img.height,
                              meta={"mode": img.mode, "format": img.format})]

    def context(self, asset: IngestedAsset, question: str) -> VisualContext:
        img = Image.open(io.BytesIO(asset.data))
        return VisualContext(images=[img.convert("RGB")])


def _strip_metadata(img: Image.Image) -> bytes:
    """Re-encode pixels only (after applying the EXIF orientation), so no EXIF/XMP text survives."""
    img = ImageOps.exif_transpose(img)
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    if img.mode == "P" and img.getpalette():
        clean.putpalette(img.getpalette())
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()
