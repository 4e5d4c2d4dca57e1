"""Small PDFs written byte by byte, for benchmarks and tests that need a page drawn a known way (text drawn
twice, metadata in a given place) that no converter would write."""

from __future__ import annotations

from collections.abc import Sequence


def pdf_bytes(objects: Sequence[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1; the first is the catalogue) with its cross-reference table."""
    body, offsets = b"%PDF-1.7\n", []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    count = len(objects) + 1
    xref = b"xref\n0 %d\n0000000000 65535 f \n" % count + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return body + xref + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (count, len(body))


def text_pdf(content: bytes, size: tuple[int, int] = (612, 792), fonts: Sequence[str] = ("Helvetica",)) -> bytes:
    """A one-page PDF whose page draws ``content`` (a PDF content stream) with ``fonts`` (standard Type 1
    names) as /F1, /F2, ..."""
    names = b" ".join(b"/F%d %d 0 R" % (n, 4 + n) for n in range(1, len(fonts) + 1))
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R " % size
                      + b"/Resources << /Font << " + names + b" >> >> >>",
                      b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
                      *(b"<< /Type /Font /Subtype /Type1 /BaseFont /%s >>" % font.encode() for font in fonts)])
