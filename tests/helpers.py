"""Builders for test inputs."""

from __future__ import annotations

import io
import socket
import struct
import zlib

from PIL import Image


def png_bytes(size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def jpeg_with_exif(size: tuple[int, int] = (80, 60)) -> bytes:
    img = Image.new("RGB", size, (10, 120, 30))
    exif = Image.Exif()
    exif[0x013B] = "Jane Patient"  # Artist
    exif[0x010E] = "MRN 123456"  # ImageDescription
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height 1-bit pixels, a few hundred bytes in all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * min(height, 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
