"""Rasters and plain images against the budgets: a raster's ingest work (pixels copied, pixels read to build
overviews) is checked from the header before any pixel is read; a real COG with overviews still fits; refusals
name the real cause (a format Loupe does not read is named, a small damaged file is not called too large);
plain images are refused from their headers. Peak memory is measured in a child process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rasterio

from loupe.apps.robustness import rasters as specimens
from loupe.apps.robustness.documents import grey_tiff
from loupe.apps.robustness.rasters import png_header, tiff_header
from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.errors import InputRejected
from loupe.core.images import open_bounded
from loupe.core.pyramid.pyramid import BASE_SIDE
from loupe.core.pyramid.sources import open_source
from loupe.core.pyramid.synthetic import FULL_SIDE
from loupe.domains.general import GeneralDomain
from loupe.domains.remote_sensing import RemoteSensingDomain
from loupe.domains.remote_sensing.ingest import planned_work

MIB = 2**20
SPECIMENS = {s.name: s for s in specimens.SPECIMENS}


def ingest_in_child(domain: str, path: Path) -> dict:
    """Ingest the file in a fresh process under the default budgets; the outcome and its peak RSS growth."""
    code = textwrap.dedent(f"""
        import json, resource, sys
        from loupe.core.budgets import Budgets
        from loupe.core.plugins import discover
        domain = discover()[{domain!r}]
        from pathlib import Path
        upload = Path(sys.argv[1])  # as the app passes it: the spooled upload's path
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        try:
            out = {{"assets": [[a.width, a.height] for a in domain.ingest(upload, Budgets())]}}
        except Exception as exc:
            out = {{"refused": type(exc).__name__, "budget": getattr(exc, "budget", None), "message": str(exc)}}
        out["grew"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        print("RESULT" + json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=300, env=env)
    line = next(ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RESULT"))
    return json.loads(line[6:])


def test_a_sparse_giant_geotiff_is_refused_before_any_work(tmp_path):
    path = SPECIMENS["geotiff_sparse_120k"].make(tmp_path)
    assert path.stat().st_size < MIB  # 120,000² claimed in well under a megabyte
    out = ingest_in_child("remote_sensing", path)
    assert out["refused"] == "BudgetExceeded" and out["budget"] == "max_work_pixels", out
    assert "120,000 × 120,000" in out["message"] and "LOUPE_MAX_WORK_PIXELS" in out["message"]
    print(f"sparse 120,000² GeoTIFF: peak RSS grew {out['grew'] / MIB:.0f} MiB")
    assert out["grew"] < 150 * MIB


def test_the_work_of_an_ingest_is_its_copy_plus_one_read_for_overviews():
    assert planned_work(BASE_SIDE, BASE_SIDE, (1.0,)) == BASE_SIDE**2  # small: copied, no overviews needed
    assert planned_work(4000, 3000, (1.0,)) == 2 * 4000 * 3000  # overviews to build
    cog = planned_work(FULL_SIDE, FULL_SIDE, (1.0, 2.0, 4.0, 8.0, 16.0, 32.0))
    assert cog <= Budgets().max_work_pixels  # the benchmark's 27,328² COG with overviews is still taken in
    assert planned_work(120_000, 120_000, (1.0,)) > Budgets().max_work_pixels


def test_sides_over_the_largest_real_raster_stay_refused(tmp_path):
    with pytest.raises(InputRejected, match="no real image is that large"):
        RemoteSensingDomain().ingest(io.BytesIO(tiff_header(2_000_000, 10)), Budgets())


def test_a_format_loupe_does_not_read_is_named_with_what_to_convert_to(tmp_path):
    data = SPECIMENS["netcdf4_grid"].make(tmp_path).read_bytes()
    assert data[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF-4 is HDF5 inside
    with pytest.raises(InputRejected) as refused:
        RemoteSensingDomain().ingest(io.BytesIO(data), Budgets())
    message = str(refused.value)
    assert message.startswith("The file is HDF5") and "a format Loupe does not read" in message
    assert "gdal_translate -of COG" in message and "damaged" not in message
    with pytest.raises(InputRejected) as refused:  # the general domain: Pillow knows HDF5 by name only
        GeneralDomain().ingest(io.BytesIO(data), Budgets())
    assert str(refused.value).startswith("The file is an HDF5 file, which is not an image format Loupe reads")


def test_a_small_damaged_image_is_not_called_too_large(tmp_path):
    broken = tmp_path / "tiny.png"
    broken.write_bytes(png_header(4, 4)[:40])
    with pytest.raises(InputRejected) as refused:
        open_source(broken, 10**8)
    assert "in parts" not in str(refused.value) and "large" not in str(refused.value)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(5000, 5000))
    with pytest.raises(BudgetExceeded, match="can only be read in parts"):  # a large one still gets the hint
        open_source(huge, 1_000_000)


@pytest.mark.parametrize(("name", "message"), [
    ("png_header_40k", "The image, 40,000 × 40,000 pixels, is 1,600.0 megapixels"),
    ("tiff_header_100k", "Page 1 of the TIFF, 100,000 × 100,000 pixels, is 10,000.0 megapixels"),
    ("tiff_huge_page_2_general", "Page 2 of the TIFF, 12,000 × 12,000 pixels, is 144.0 megapixels"),
])
def test_plain_images_are_refused_from_their_headers(tmp_path, name, message):
    data = SPECIMENS[name].make(tmp_path).read_bytes()
    with pytest.raises(BudgetExceeded) as refused:
        GeneralDomain().ingest(io.BytesIO(data), Budgets())
    assert refused.value.budget == "max_pixels" and str(refused.value).startswith(message)
    assert "LOUPE_MAX_IMAGE_PIXELS" in str(refused.value)


def test_open_bounded_size_refusals_carry_their_budget():
    with pytest.raises(BudgetExceeded) as refused:
        open_bounded(png_header(5000, 5000), 2**20, 10**6)
    assert refused.value.budget == "max_pixels"
    with pytest.raises(BudgetExceeded) as refused:
        open_bounded(b"\x00" * (2**20 + 1), 2**20, 10**6)
    assert refused.value.budget == "max_bytes"


def test_everyday_rasters_and_photos_are_taken_in(tmp_path):
    domain = RemoteSensingDomain()
    raster, view = domain.ingest(SPECIMENS["geotiff_small"].make(tmp_path), Budgets())
    assert (raster.width, raster.height) == (256, 256) and raster.meta["georeferenced"]
    cog = SPECIMENS["cog_with_overviews"].make(tmp_path)
    steps: list[tuple[int, int]] = []
    raster, view = domain.ingest(cog, Budgets(), lambda done, total: steps.append((done, total)))
    assert (raster.width, raster.height) == (2048, 2048) and raster.meta["overview_factors"] == [2.0, 4.0]
    assert steps == [(1, 2), (2, 2)]
    stored = tmp_path / "stored.tif"
    stored.write_bytes(Path(raster.path).read_bytes())  # the clean copy the store would take
    with rasterio.open(stored) as ds:
        assert ds.overviews(1) == [2, 4]
    (photo,) = GeneralDomain().ingest(SPECIMENS["photo_small"].make(tmp_path), Budgets())
    assert (photo.width, photo.height) == (64, 48)
    (page,) = GeneralDomain().ingest(io.BytesIO(grey_tiff([(64, 48)])), Budgets())  # a one-page TIFF
    assert (page.width, page.height) == (64, 48)


def test_the_specimens_say_what_they_are(tmp_path):
    for specimen in specimens.SPECIMENS:
        path = specimen.make(tmp_path)
        assert path.is_file() and path.stat().st_size < 2 * MIB
        assert specimen.domain in ("remote_sensing", "general") and specimen.expect in ("refused", "accepted")
