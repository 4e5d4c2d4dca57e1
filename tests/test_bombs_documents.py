"""Documents and plain images against the budgets: a giant PDF page is rendered within max_pixels (and says so),
rendered pages count against max_work_pixels, pages beyond max_pages are not read, and every TIFF page and
sub-image is checked from the header before any is decoded. Peak memory is measured in a child process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
import tifffile

from loupe.apps.robustness import documents as specimens
from loupe.apps.robustness.documents import grey_tiff, tiny_pdf
from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.images import check_before_decoding, tiff_pages
from loupe.core.ocr.pdf import page_scale, read_pdf, rendered_size

MIB = 2**20


def ingest_in_child(domain: str, data: bytes, env: dict[str, str] | None = None) -> dict:
    """Ingest ``data`` in a fresh process; its outcome and how much its peak RSS grew while ingesting."""
    code = textwrap.dedent(f"""
        import json, resource, sys
        from loupe.core.budgets import Budgets
        from loupe.core.plugins import discover
        domain = discover()[{domain!r}]
        if {domain!r} == "documents":
            from loupe.domains.documents import _reader
            _reader()  # the OCR models load before the measurement
        import io
        data = io.BytesIO(sys.stdin.buffer.read())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        try:
            assets = domain.ingest(data, Budgets.from_env())
            out = {{"assets": [[a.width, a.height, a.meta.get("note"), a.meta.get("rendered_dpi")] for a in assets]}}
        except Exception as exc:
            out = {{"refused": type(exc).__name__, "budget": getattr(exc, "budget", None), "message": str(exc)}}
        out["grew"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        print("RESULT" + json.dumps(out))
    """)
    import os

    proc = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=300,
                          env={**os.environ, **(env or {})})
    line = next(ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RESULT"))
    return json.loads(line[6:])


def test_a_giant_pdf_page_is_sized_from_its_box_and_rendered_within_the_pixel_budget():
    # 14,400 pt at 150 dpi would be 30,000² (900 MP): the scale is reduced before rendering
    scale = page_scale(14_400, 14_400, 150, 89_478_485)
    width, height = rendered_size(14_400, 14_400, scale)
    assert width * height <= 89_478_485 and width * height > 0.99 * 89_478_485
    assert page_scale(595, 842, 150, 89_478_485) == 150 / 72  # an A4 page keeps its dpi
    data = tiny_pdf([(14_400, 14_400)])
    assert len(data) < 1000
    out = ingest_in_child("documents", data, {"LOUPE_MAX_IMAGE_PIXELS": "4000000"})
    (width, height, note, dpi), = out["assets"]
    assert width * height <= 4_000_000 and width == height > 1900
    assert dpi == pytest.approx(72 * 2000 / 14_400, abs=0.2)
    assert "very large" in note and "LOUPE_MAX_IMAGE_PIXELS" in note
    print(f"giant PDF page at max_pixels=4 MP: peak RSS grew {out['grew'] / MIB:.0f} MiB")
    assert out["grew"] < 700 * MIB  # one 4 MP page and the OCR's working memory; 900 MP would be 2.7 GB per copy


def test_ten_large_pages_are_each_rendered_within_max_pixels_and_counted_as_work():
    data = tiny_pdf([(5_000, 5_000)] * 10)  # 108 MP per page at 150 dpi
    limits = Budgets(max_pixels=1_000_000)
    pages, sizes, total = read_pdf(data, None, keep_images=True, budgets=limits, convert=lambda image: image.size)
    assert total == 10 and all(w * h <= 1_000_000 for w, h in sizes)
    assert [(p.width, p.height) for p in pages] == [(w, h) for w, h in sizes]  # boxes are in the rendered pixels
    rendered = []
    with pytest.raises(BudgetExceeded) as refused:  # 10 pages of 1 MP, over a 5 MP work budget: refused up front
        read_pdf(data, None, keep_images=True, budgets=Budgets(max_pixels=1_000_000, max_work_pixels=5_000_000),
                 convert=rendered.append)
    assert refused.value.budget == "max_work_pixels" and "LOUPE_MAX_WORK_PIXELS" in str(refused.value)
    assert rendered == []  # before the first page was rendered


def test_a_text_layer_page_is_not_rendered_unless_its_image_is_kept():
    data = tiny_pdf([(595, 842)] * 2, "Discharge letter page")
    never = Budgets(max_work_pixels=1)  # any rendering would be refused
    pages, images, _ = read_pdf(data, lambda image, number: pytest.fail("no OCR for a text layer"), budgets=never)
    assert [p.source for p in pages] == ["text-layer"] * 2 and images == []
    assert "Discharge letter page" in pages[0].text


def test_pages_beyond_max_pages_are_not_read_and_the_app_says_so():
    from loupe.domains.documents import DocumentsDomain

    data = tiny_pdf([(595, 842)] * 40, "Discharge letter page")
    assets = DocumentsDomain().ingest(io.BytesIO(data), Budgets(max_pages=3))
    assert len(assets) == 3 and assets[0].meta["note"].startswith("Only the first 3 of 40 pages are kept")
    assert assets[0].meta["ocr"]["source"] == "text-layer" and "rendered_dpi" not in assets[0].meta


def test_a_huge_second_tiff_page_is_refused_before_any_page_is_decoded():
    data = grey_tiff([(850, 1100), (12_000, 12_000)])  # 144 MP page 2 in 141 KB
    assert [(p.width, p.height) for p in tiff_pages(data)] == [(850, 1100), (12_000, 12_000)]
    out = ingest_in_child("documents", data)
    assert out["refused"] == "BudgetExceeded" and out["budget"] == "max_pixels", out
    assert out["message"].startswith("Page 2 of the TIFF, 12,000 × 12,000 pixels, is 144.0 megapixels")
    assert "LOUPE_MAX_IMAGE_PIXELS" in out["message"]
    print(f"TIFF with a 144 MP page 2: peak RSS grew {out['grew'] / MIB:.0f} MiB")
    assert out["grew"] < 100 * MIB  # the 2.7 GB decode never happened


def test_tiff_pages_count_towards_the_work_budget_and_sub_images_are_checked(tmp_path):
    data = grey_tiff([(850, 1100)] * 3)
    with pytest.raises(BudgetExceeded) as refused:
        check_before_decoding(data, Budgets(max_work_pixels=2_000_000))
    assert refused.value.budget == "max_work_pixels"
    check_before_decoding(data, Budgets(max_work_pixels=2_000_000), read=2)  # two pages read: within budget
    import numpy as np

    path = tmp_path / "subifds.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:  # a BigTIFF page with a larger sub-image in a SubIFD
        tif.write(np.zeros((32, 40), np.uint8), subifds=1)
        tif.write(np.zeros((64, 80), np.uint8), subfiletype=1)
    (page,) = tiff_pages(path.read_bytes())
    assert (page.width, page.height, page.subimages) == (40, 32, ((80, 64),))
    with pytest.raises(BudgetExceeded, match=r"^Page 1 of the TIFF \(sub-image 1\), 80 × 64 pixels"):
        check_before_decoding(path.read_bytes(), Budgets(max_pixels=2000, max_work_pixels=10**9))


def test_a_tiff_directory_loop_or_a_truncated_header_ends_the_walk():
    data = bytearray(grey_tiff([(8, 8), (8, 8)]))
    first = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first:first + 2], "little")
    link = first + 2 + 12 * entries
    data[link:link + 4] = first.to_bytes(4, "little")  # page 1 points back to itself
    assert len(tiff_pages(bytes(data))) == 1
    assert tiff_pages(bytes(data[:12])) == [] and tiff_pages(b"II*\x00") == []


def test_everyday_documents_are_read():
    from loupe.domains.documents import DocumentsDomain

    first, second = DocumentsDomain().ingest(io.BytesIO(tiny_pdf([(595, 842)] * 2, "Discharge letter page")), Budgets())
    assert (first.width, first.height) == (1240, 1755)
    assert "Discharge letter page" in first.meta["ocr"]["lines"][0]["text"]
    assert "note" not in first.meta and second.meta["page"] == 2


def test_the_specimens_say_what_they_are(tmp_path):
    names = {s.name for s in specimens.SPECIMENS}
    assert {"pdf_giant_page", "pdf_ten_large_pages", "tiff_huge_page_2", "pdf_two_pages", "scanned_page_png"} <= names
    for specimen in specimens.SPECIMENS:
        path = specimen.make(tmp_path)
        assert path.is_file() and path.stat().st_size < 2 * MIB and specimen.domain == "documents"
        assert (specimen.expect == "refused") == (specimen.budget is not None)
