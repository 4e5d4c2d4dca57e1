"""Builders for test inputs."""

from __future__ import annotations

import io
import socket
import struct
import threading
import zlib

from PIL import Image

from loupe.core.plugins import IngestedAsset
from loupe.core.vlm.base import RunRecord


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


class OtherPort:
    """Another web server on another loopback port of this host: serves ``pages`` (path -> HTML) and
    records every request it gets. To a browser it is another origin but the same site."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served, hits = pages or {}, []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(f"{self.command} {self.path}")
                body = served.get(self.path, "").encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.hits: list[str] = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Metadata carriers: each builder hides ``marker`` in one place an image file can carry text. ---

PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}


def patterned(size: tuple[int, int] = (48, 32), mode: str = "RGB") -> Image.Image:
    """A picture whose every pixel differs, so that "same pixels" means something."""
    width, height = size
    rgb = bytes((x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256)[c] for y in range(height) for x in range(width)
                for c in range(3))
    return Image.frombytes("RGB", size, rgb).convert(mode)


def _saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def png_with_text(marker: str, chunk: str) -> bytes:
    """``chunk``: "tEXt", "zTXt", "iTXt" or "iTXt-compressed"; the marker is both keyword value and a second entry."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if chunk == "tEXt":
        info.add_text("Comment", marker)
    elif chunk == "zTXt":
        info.add_text("Comment", marker, zip=True)
    else:
        info.add_itxt("Description", marker, lang="en", tkey="Patient", zip=chunk == "iTXt-compressed")
    return _saved(patterned(), "PNG", pnginfo=info)


def png_with_xmp(marker: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(marker).decode())
    return _saved(patterned(), "PNG", pnginfo=info)


def xmp_packet(marker: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        f'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="{marker}" dc:description="{marker}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def identifying_exif(marker: str, orientation: int | None = None) -> Image.Exif:
    """EXIF with the marker as Artist, ImageDescription, Windows XPAuthor (UTF-16LE) and a UNICODE UserComment."""
    exif = Image.Exif()
    exif[0x013B] = marker  # Artist
    exif[0x010E] = marker  # ImageDescription
    exif[0x9C9D] = marker.encode("utf-16-le") + b"\x00\x00"  # XPAuthor
    if orientation is not None:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + marker.encode("utf-16-le")  # UserComment
    return exif


def exif_with_thumbnail(marker: str) -> bytes:
    """Raw EXIF (``Exif\\0\\0`` + little-endian TIFF) whose IFD1 thumbnail is a JPEG with the marker as comment."""
    thumb = _saved(patterned((16, 12)), "JPEG", comment=marker)
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 1) + struct.pack("<I", 26)  # -> IFD1
    ifd1_entries = [(0x0103, 3, 1, 6), (0x0201, 4, 1, 26 + 2 + 3 * 12 + 4), (0x0202, 4, 1, len(thumb))]
    ifd1 = struct.pack("<H", 3) + b"".join(struct.pack("<HHII", *e) for e in ifd1_entries) + struct.pack("<I", 0)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + thumb


def icc_profile_with_description(marker: str) -> bytes:
    """A minimal ICC v2 display profile whose 'desc' tag holds the marker in ASCII and in UTF-16BE."""
    ascii_text, utf16 = marker.encode() + b"\x00", marker.encode("utf-16-be") + b"\x00\x00"
    desc = (b"desc" + b"\x00" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, len(utf16) // 2) + utf16 + b"\x00\x00\x00" + b"\x00" * 67)
    offset = 128 + 4 + 12
    size = offset + len(desc)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\x00" * 12 + b"acsp"
              + b"\x00" * 24 + struct.pack(">I", 0) + struct.pack(">iii", 63190, 65536, 54061) + b"\x00" * 48)
    return header + struct.pack(">I", 1) + b"desc" + struct.pack(">II", offset, len(desc)) + desc


def iptc_record(marker: str) -> bytes:
    """IPTC-IIM: 2:80 By-line and 2:120 Caption hold the marker."""
    text = marker.encode()
    return b"".join(b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(text)) + text for dataset in (80, 120))


def jpeg_with_iptc(marker: str) -> bytes:
    """A JPEG with an APP13 Photoshop 3.0 segment (8BIM resource 0x0404, IPTC-NAA) spliced in after SOI."""
    iptc = iptc_record(marker)
    iptc += b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc))
    segment = b"\xff\xed" + struct.pack(">H", len(payload + iptc) + 2) + payload + iptc
    jpeg = _saved(patterned(), "JPEG", quality=95)
    return jpeg[:2] + segment + jpeg[2:]


def jpeg_with(marker: str, carrier: str) -> bytes:
    """``carrier``: "comment", "exif", "xmp", "icc", "thumbnail" or "iptc"."""
    if carrier == "iptc":
        return jpeg_with_iptc(marker)
    options: dict[str, object] = {
        "comment": {"comment": marker},
        "exif": {"exif": identifying_exif(marker)},
        "xmp": {"xmp": xmp_packet(marker)},
        "icc": {"icc_profile": icc_profile_with_description(marker)},
        "thumbnail": {"exif": exif_with_thumbnail(marker)},
    }[carrier]
    return _saved(patterned(), "JPEG", quality=95, **options)


def tiff_with_tag(marker: str, tag: int) -> bytes:
    """A TIFF whose tag ``tag`` holds the marker: 270/315/269 as text, 700 as XMP, 33723 as IPTC, 34675 as ICC."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    if tag == 34675:
        return _saved(patterned(), "TIFF", icc_profile=icc_profile_with_description(marker))
    ifd = ImageFileDirectory_v2()
    ifd[tag] = {700: xmp_packet(marker), 33723: iptc_record(marker)}.get(tag, marker)
    return _saved(patterned(), "TIFF", tiffinfo=ifd)


def gif_with_comment(marker: str) -> bytes:
    return _saved(patterned(), "GIF", comment=marker)


def webp_with(marker: str, carrier: str) -> bytes:
    """A lossless WebP with the marker in its "exif", "xmp" or "icc" chunk."""
    options: dict[str, object] = {
        "exif": {"exif": identifying_exif(marker)},
        "xmp": {"xmp": xmp_packet(marker)},
        "icc": {"icc_profile": icc_profile_with_description(marker)},
    }[carrier]
    return _saved(patterned(), "WEBP", lossless=True, **options)


def png_with(marker: str, carrier: str) -> bytes:
    """``carrier``: "exif" (eXIf chunk) or "icc" (zlib-compressed iCCP chunk)."""
    if carrier == "exif":
        return _saved(patterned(), "PNG", exif=identifying_exif(marker))
    return _saved(patterned(), "PNG", icc_profile=icc_profile_with_description(marker))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def readable_bytes(data: bytes) -> bytes:
    """``data`` plus the inflated text of compressed PNG chunks (zTXt, iCCP, compressed iTXt)."""
    if not data.startswith(b"\x89PNG"):
        return data
    extra = []
    for kind, payload in png_chunks(data):
        if kind in (b"zTXt", b"iCCP"):
            extra.append(zlib.decompress(payload[payload.index(b"\x00") + 2:]))
        elif kind == b"iTXt":
            keyword_end = payload.index(b"\x00")
            compressed = payload[keyword_end + 1]
            text = payload[payload.index(b"\x00", payload.index(b"\x00", keyword_end + 3) + 1) + 1:]
            extra.append(zlib.decompress(text) if compressed else text)
    return data + b"".join(extra)


def contains_text(data: bytes, marker: str) -> bool:
    """Whether the marker is readable in ``data`` as UTF-8 or UTF-16 (either byte order), compressed PNG text too."""
    readable = readable_bytes(data)
    return any(marker.encode(codec) in readable for codec in ("utf-8", "utf-16-le", "utf-16-be"))


# --- Multi-frame files ---


def animated(fmt: str, frames: int, size: tuple[int, int] = (24, 16)) -> bytes:
    """A ``fmt`` ("GIF", "PNG", "WEBP", "TIFF") file with ``frames`` visibly different frames."""
    images = [Image.new("RGB", size, (i * 37 % 256, i * 91 % 256, i * 13 % 256)) for i in range(frames)]
    options: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    return _saved(images[0], fmt, save_all=True, append_images=images[1:], **options)


def gif_with_many_frames(frames: int) -> bytes:
    """A hand-built 1x1 GIF with ``frames`` frames, a few bytes each (Pillow would take long to write thousands)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


def stored_asset(data: bytes = b"pixels") -> IngestedAsset:
    """An asset as a domain's ingest returns it (the bytes need not be an image for the store)."""
    return IngestedAsset(data=data, media_type="image/png", width=4, height=2)


def run_record() -> RunRecord:
    return RunRecord(model_id="m", adapter=None, device="cpu", dtype="float32", prompt_tokens=30,
                     visual_tokens=20, output_tokens=5, time_to_first_token_s=0.1, total_time_s=0.3,
                     tokens_per_s=20.0)
