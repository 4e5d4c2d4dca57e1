"""Every domain's stored (and so served) bytes pass the metadata test the General tab passes (issue 18).

A marker is planted in each metadata carrier a domain accepts (EXIF, XMP, IPTC, comments, TIFF text tags,
GDAL metadata, band descriptions, PDF Info and XMP, a slide's vendor header); after ingest it must be in no
byte under LOUPE_HOME (assets and database). DICOM is de-identified separately (tests/test_deid.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    contains_text,
    jpeg_with,
    png_with,
    png_with_text,
    png_with_xmp,
    tiff_with_tag,
    webp_with,
    xmp_packet,
)
from PIL import Image

from loupe.apps.pdf_bytes import pdf_bytes
from loupe.apps.service import LoupeService
from loupe.core.config import Settings

SLIDE = Path(__file__).parents[1] / "data" / "medical" / "pathology" / "openslide_small_synthetic.svs"
MARKERS = ("DOE^JANE", "Patient SMITH_ANNA MRN-4711")
ORIGIN = (500_000.0, 4_500_000.0)


def geotiff(marker: str, carrier: str) -> bytes:
    """A 3-band uint8 GeoTIFF (EPSG:32633, 10 m pixels, nodata 0) with the marker in ``carrier``."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    pixels = np.stack([np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * k % 251 + 1
                       for k in (1, 3, 7)]).astype(np.uint8)
    tags = {"tiff-Artist": {"TIFFTAG_ARTIST": marker}, "tiff-ImageDescription": {"TIFFTAG_IMAGEDESCRIPTION": marker},
            "tiff-DocumentName": {"TIFFTAG_DOCUMENTNAME": marker}, "tiff-Software": {"TIFFTAG_SOFTWARE": marker},
            "tiff-Copyright": {"TIFFTAG_COPYRIGHT": marker}, "tiff-HostComputer": {"TIFFTAG_HOSTCOMPUTER": marker},
            "gdal-metadata": {"PATIENT": marker}}.get(carrier, {})
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=64, height=48, count=3, dtype="uint8", crs="EPSG:32633",
                         transform=from_origin(*ORIGIN, 10, 10), nodata=0, photometric="RGB") as dst:
            dst.write(pixels)
            dst.update_tags(**tags)
            if carrier == "gdal-band-metadata":
                dst.update_tags(1, NOTE=marker)
            if carrier == "band-description":
                dst.set_band_description(1, marker)
            if carrier == "xmp":
                dst.update_tags(ns="xml:XMP", **{"xmp": xmp_packet(marker).decode()})
        data = memory.read()
    with rasterio.MemoryFile(data) as check, check.open() as ds:
        assert ds.crs.to_epsg() == 32633
    return data


def pdf(marker: str, carrier: str) -> bytes:
    """A one-page PDF with the marker in its Info dictionary ("pdf-info") or its XMP stream ("pdf-xmp")."""
    if carrier == "pdf-info":
        out = io.BytesIO()
        Image.new("RGB", (200, 100), "white").save(out, "PDF", title=marker, author=marker, keywords=marker)
        return out.getvalue()
    xmp = xmp_packet(marker)
    objects = [b"<< /Type /Catalog /Pages 2 0 R /Metadata 4 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>",
               b"<< /Type /Metadata /Subtype /XML /Length %d >>\nstream\n" % len(xmp) + xmp + b"\nendstream"]
    return pdf_bytes(objects)


def vendor_slide(marker: str, carrier: str) -> bytes:
    """The synthetic Aperio slide with the marker in its vendor header (ImageDescription), same length."""
    data = SLIDE.read_bytes()
    field = b"CPAPERIOCS|Filename = CMU-1"
    assert len(marker) <= len(field) and field in data
    return data.replace(field, marker.encode().ljust(len(field)))


IMAGE_CARRIERS: dict[str, Callable[[str], bytes]] = {
    "jpeg-exif": lambda m: jpeg_with(m, "exif"),
    "jpeg-xmp": lambda m: jpeg_with(m, "xmp"),
    "jpeg-COM": lambda m: jpeg_with(m, "comment"),
    "jpeg-iptc": lambda m: jpeg_with(m, "iptc"),
    "jpeg-icc": lambda m: jpeg_with(m, "icc"),
    "png-tEXt": lambda m: png_with_text(m, "tEXt"),
    "png-iTXt": lambda m: png_with_text(m, "iTXt"),
    "png-xmp": png_with_xmp,
    "png-eXIf": lambda m: png_with(m, "exif"),
    "webp-exif": lambda m: webp_with(m, "exif"),
    "tiff-Artist": lambda m: tiff_with_tag(m, 315),
    "tiff-ImageDescription": lambda m: tiff_with_tag(m, 270),
    "tiff-xmp-700": lambda m: tiff_with_tag(m, 700),
}
GEO_CARRIERS = ("tiff-Artist", "tiff-ImageDescription", "tiff-DocumentName", "tiff-Software", "tiff-Copyright",
                "tiff-HostComputer", "gdal-metadata", "gdal-band-metadata", "band-description", "xmp")


def _cases() -> list:
    """(domain, carrier, builder) for every carrier each domain accepts."""
    def image(name: str, exts: tuple[str, ...]) -> list:
        return [pytest.param(name, c, b, id=f"{name}-{c}") for c, b in IMAGE_CARRIERS.items()
                if c.split("-")[0] in exts]

    cases = image("general", ("jpeg", "png", "webp", "tiff"))
    cases += image("documents", ("jpeg", "png", "webp", "tiff"))
    cases += [pytest.param("documents", c, lambda m, c=c: pdf(m, c), id=f"documents-{c}") for c in ("pdf-info",
                                                                                                      "pdf-xmp")]
    cases += image("remote_sensing", ("jpeg", "png"))
    cases += [pytest.param("remote_sensing", f"geotiff-{c}", lambda m, c=c: geotiff(m, c),
                           id=f"remote_sensing-geotiff-{c}") for c in GEO_CARRIERS]
    cases += [pytest.param("medical", "svs-description", lambda m, c="": vendor_slide(m, c),
                           id="medical-svs-description")]
    return cases


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> LoupeService:
    """One service for the module (opening one costs a migration run); each test checks its own case."""
    return LoupeService.open(Settings(home=tmp_path_factory.mktemp("metadata") / "home", database_url=None,
                                      model="unused"))


@pytest.fixture(scope="module")
def user(service):
    return service.store.add_user("ana", "ana-password-12", "user")


@pytest.mark.parametrize("marker", MARKERS)
@pytest.mark.parametrize(("domain", "carrier", "build"), _cases())
def test_no_domain_stores_identifying_metadata(service, user, domain, carrier, build, marker):
    data = build(marker)
    assert contains_text(data, marker), "the builder must really plant the marker"
    case_id = service.create_case(user, domain, io.BytesIO(data), "t")
    home = service.settings.home
    assets = service.store.open_case(user, case_id).assets
    stored = [service.store.assets.path_for(a.sha256) for a in assets]
    assert stored and all(p.is_file() for p in stored)
    database = sorted(home.glob("loupe.db*"))  # the WAL too: new rows live there until a checkpoint
    leaking = [str(p.relative_to(home)) for p in [*stored, *database] if contains_text(p.read_bytes(), marker)]
    assert not leaking, f"{domain}/{carrier}: the marker is stored in {leaking}"
    served = [service.store.read_asset(user, a.id)[1] for a in assets]
    assert not any(contains_text(b, marker) for b in served)


def test_a_geotiff_keeps_its_georeferencing_pixels_and_nodata_without_its_tags(service):
    import rasterio

    data = geotiff(MARKERS[1], "tiff-Artist")
    [raster, _view] = service.domains["remote_sensing"].ingest(io.BytesIO(data), service.limits)
    with rasterio.MemoryFile(data) as a, a.open() as src, rasterio.open(raster.path) as out:
        assert (out.crs.to_epsg(), out.transform, out.nodata, out.count) == (32633, src.transform, 0, 3)
        assert np.array_equal(out.read(), src.read())
        assert out.tags() in ({}, {"AREA_OR_POINT": "Area"}) and not any(out.descriptions)
    assert raster.meta["georeferenced"] and raster.meta["crs"] == "EPSG:32633"


def test_a_cog_keeps_its_validity_mask_and_overviews(service):
    import rasterio
    from rasterio.io import MemoryFile

    cog = (Path(__file__).parents[1] / "data" / "remote_sensing" / "cogeo.tif").read_bytes()
    with rasterio.MemoryFile(cog) as a, a.open() as src, MemoryFile() as memory:
        profile = {**src.profile, "compress": "deflate", "photometric": "RGB"}
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), memory.open(**profile) as dst:
            dst.write(src.read())
            mask = np.full((src.height, src.width), 255, np.uint8)
            mask[:100, :300] = 0  # a corner outside the scene
            dst.write_mask(mask)
            dst.build_overviews([2, 4])
        data = memory.read()
    [raster, _view] = service.domains["remote_sensing"].ingest(io.BytesIO(data), service.limits)
    with rasterio.MemoryFile(data) as a, a.open() as src, rasterio.open(raster.path) as out:
        assert np.array_equal(out.dataset_mask(), src.dataset_mask()) and out.dataset_mask()[:100, :300].max() == 0
        assert np.array_equal(out.read(), src.read()) and (out.crs, out.transform) == (src.crs, src.transform)
        assert out.overviews(1) == src.overviews(1) == [2, 4]
