"""Specimens for documents inputs (see loupe.apps.robustness): giant PDF pages, long PDFs, multi-page TIFFs."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from . import Specimen


def tiny_pdf(pages: Sequence[tuple[float, float]], text: str = "") -> bytes:
    """A hand-written PDF whose pages have the given MediaBox sizes (points); a few hundred bytes whatever the size.
    With ``text``, each page shows it in Helvetica near its top left (a text layer)."""
    count = len(pages)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(count))
               + b"] /Count %d >>" % count,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for width, height in pages:
        stream = (f"BT /F1 12 Tf 36 {height - 48:.0f} Td ({text}) Tj ET" if text else "").encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects) + 2} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def grey_tiff(pages: Sequence[tuple[int, int]]) -> bytes:
    """A multi-page 8-bit grey TIFF of blank (white) pages, deflate-compressed one strip per page: a 12,000²
    page takes ~140 KB. Written row by row, so a giant page never exists in memory here."""
    head, blobs = bytearray(b"II*\x00\x00\x00\x00\x00"), []
    for width, height in pages:
        packer, row, chunks = zlib.compressobj(9), b"\xff" * width, []
        chunks.extend(packer.compress(row) for _ in range(height))
        chunks.append(packer.flush())
        blobs.append(b"".join(chunks))
    out = bytearray(head)
    data_offsets = []
    for blob in blobs:
        data_offsets.append(len(out))
        out += blob + (b"\x00" if len(blob) % 2 else b"")
    previous_link = 4  # where the offset of the next IFD is written
    for (width, height), blob, offset in zip(pages, blobs, data_offsets, strict=True):
        ifd_at = len(out)
        struct.pack_into("<I", out, previous_link, ifd_at)
        tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, offset),
                (277, 3, 1), (278, 4, height), (279, 4, len(blob))]
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                       else struct.pack("<I", value))
        previous_link = len(out)
        out += b"\x00\x00\x00\x00"
    return bytes(out)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _scanned_page_png(folder: Path) -> Path:
    from PIL import Image, ImageDraw

    page = Image.new("L", (850, 1100), 255)
    ImageDraw.Draw(page).text((60, 60), "INVOICE 2041  Total 129.00", fill=0)
    path = folder / "scanned_page.png"
    page.save(path)
    return path


SPECIMENS: list[Specimen] = [
    Specimen("pdf_giant_page", "documents", lambda f: _write(f, "pdf_giant_page.pdf", tiny_pdf([(14_400, 14_400)])),
             "accepted", about="a 14,400 × 14,400 pt page (900 MP at 150 dpi) rendered at a scale within max_pixels"),
    Specimen("pdf_ten_large_pages", "documents",
             lambda f: _write(f, "pdf_ten_large_pages.pdf", tiny_pdf([(5_000, 5_000)] * 10)),
             "accepted", about="ten 5,000-pt pages (108 MP each at 150 dpi), each rendered within max_pixels"),
    Specimen("pdf_giant_pages_over_work", "documents",
             lambda f: _write(f, "pdf_giant_pages_over_work.pdf", tiny_pdf([(14_400, 14_400)] * 30)),
             "refused", "max_work_pixels", about="thirty poster pages: more rendered pixels than one upload may make"),
    Specimen("pdf_5000_pages", "documents", lambda f: _write(f, "pdf_5000_pages.pdf", tiny_pdf([(595, 842)] * 5000)),
             "accepted", about="5,000 A4 pages: the first max_pages are read, the app says so"),
    Specimen("pdf_two_pages", "documents",
             lambda f: _write(f, "pdf_two_pages.pdf", tiny_pdf([(595, 842)] * 2, "Discharge letter page")),
             "accepted", about="an everyday two-page A4 letter with a text layer"),
    Specimen("tiff_huge_page_2", "documents",
             lambda f: _write(f, "tiff_huge_page_2.tif", grey_tiff([(850, 1100), (12_000, 12_000)])),
             "refused", "max_pixels", about="a two-page TIFF whose page 2 is 144 MP"),
    Specimen("scanned_page_png", "documents", _scanned_page_png, "accepted", about="a small scanned page (PNG)"),
]
