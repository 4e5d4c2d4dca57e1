"""Whole-slide images in the medical domain: DICOM (VL Whole Slide Microscopy) and a vendor slide
(SVS through OpenSlide), de-identified before storage, read in tiles, answered from focused tiles."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
import tifffile

from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.pyramid.sources import open_source

SLIDES = Path(__file__).parents[1] / "data" / "medical" / "pathology"


@pytest.fixture
def service(tmp_path, tiny_model_dir) -> LoupeService:
    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    return service


def test_a_dicom_slide_region_is_assembled_from_its_frames():
    path = SLIDES / "SM_wsi_tiny_25frames.dcm"
    source = open_source(path, 10**8)
    whole = np.asarray(source.read((0, 0, 50, 50), (50, 50)))
    frames = pydicom.dcmread(path).pixel_array  # [25, 10, 10, 3], TILED_FULL: row by row
    expected = frames.reshape(5, 5, 10, 10, 3).transpose(0, 2, 1, 3, 4).reshape(50, 50, 3)
    assert np.array_equal(whole, expected)
    part = np.asarray(source.read((7, 13, 33, 41), (26, 28)))  # across tile borders
    assert np.array_equal(part, expected[13:41, 7:33])


def test_a_dicom_slide_is_de_identified_without_its_label_and_answered_from_tiles(service):
    volume = pydicom.dcmread(SLIDES / "SM_wsi_tiny_25frames.dcm")
    volume.PatientName, volume.PatientID = "DOE^JANE", "MRN-7731"
    label = copy.deepcopy(volume)  # the slide's paper label, photographed
    label.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    label.SOPInstanceUID = pydicom.uid.generate_uid()
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as archive:
        for name, ds in (("volume.dcm", volume), ("label.dcm", label)):
            buffer = io.BytesIO()
            ds.save_as(buffer)
            archive.writestr(name, buffer.getvalue())
    user = service.store.add_user("ana", "ana-password-12", "user")
    case_id = service.create_case(user, "medical", io.BytesIO(upload.getvalue()), "biopsy")
    assets = service.case_assets(user, case_id)
    (level,) = [a for a in assets if a.meta["kind"] == "slide_level"]  # the label is not kept
    stored = pydicom.dcmread(level.path)
    assert stored.PatientIdentityRemoved == "YES" and "DOE" not in str(stored.get("PatientName", ""))
    assert b"MRN-7731" not in level.path.read_bytes()
    assert np.array_equal(stored.pixel_array, volume.pixel_array)  # the tissue as acquired
    final = list(service.ask(user, case_id, "Is there tumour in this slide?"))[-1]
    assert final.run.extra["focus"]["tiles"] and final.run.extra["citations"][0]["text"].startswith("x 0–50")


def test_a_vendor_slide_is_rewritten_without_labels_or_metadata(service):
    original = SLIDES / "openslide_small_synthetic.svs"
    user = service.store.add_user("ana", "ana-password-12", "user")
    progress = []
    assets = service.domains["medical"].ingest(original, service.limits,
                                               lambda done, total: progress.append((done, total)))
    level = assets[0]
    assert level.meta["kind"] == "slide_level" and level.media_type == "image/tiff"
    assert progress[-1][0] == progress[-1][1]
    assert level.data == b"" and level.digest  # left in a file for the store to take, never read back
    with tifffile.TiffFile(level.path) as tif:
        assert len(tif.pages) == 1 and not tif.pages[0].description  # no vendor header, no label or macro
        rewritten = tif.pages[0].asarray()
    with openslide.OpenSlide(str(original)) as slide:
        expected = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    assert np.array_equal(rewritten, expected)
    assert b"Aperio" not in Path(level.path).read_bytes()
    case_id = service.create_case(user, "medical", original, "slide")
    final = list(service.ask(user, case_id, "Describe the tissue."))[-1]
    assert final.run.extra["pyramid"]["width"] == 16


def test_an_unreadable_slide_is_refused_and_nothing_is_stored(service):
    user = service.store.add_user("ana", "ana-password-12", "user")
    from loupe.core.errors import InputRejected

    with pytest.raises(InputRejected, match="cannot be read"):
        service.create_case(user, "medical", SLIDES / "malformed" / "openslide_unreadable.svs", "x")
    assert service.store.list_cases(user) == [] and not any(service.settings.assets_dir.rglob("*.*"))


def test_a_region_is_read_from_the_level_that_matches_its_scale(tmp_path):
    """Two levels (50 px and 25 px across, 10-px tiles): a whole-slide view at half size comes from the
    coarser level, a small region from the finer one, both in level-0 coordinates."""
    full = pydicom.dcmread(SLIDES / "SM_wsi_tiny_25frames.dcm")
    fine = full.pixel_array.reshape(5, 5, 10, 10, 3).transpose(0, 2, 1, 3, 4).reshape(50, 50, 3)
    coarse = fine.reshape(25, 2, 25, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    coarse[:, :, 0] = 7  # a mark only the coarse level carries: proves which level was read
    padded = np.zeros((30, 30, 3), dtype=np.uint8)
    padded[:25, :25] = coarse
    level1 = copy.deepcopy(full)
    level1.TotalPixelMatrixColumns = level1.TotalPixelMatrixRows = 25
    level1.NumberOfFrames = 9
    level1.SOPInstanceUID = pydicom.uid.generate_uid()
    level1.PixelData = padded.reshape(3, 10, 3, 10, 3).transpose(0, 2, 1, 3, 4).tobytes()
    level1.save_as(tmp_path / "level1.dcm")
    source = open_source([SLIDES / "SM_wsi_tiny_25frames.dcm", tmp_path / "level1.dcm"], 10**8)
    assert source.native_downsamples == (1.0, 2.0)
    half = np.asarray(source.read((0, 0, 50, 50), (25, 25)))
    assert np.array_equal(half, coarse)
    detail = np.asarray(source.read((20, 30, 40, 50), (20, 20)))
    assert np.array_equal(detail, fine[30:50, 20:40])


def test_a_slide_in_a_folder_source_is_opened_where_it_lies_without_its_label(service, tmp_path):
    import shutil

    from loupe.core.errors import AccessDenied, InputRejected

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(SLIDES / "openslide_small_synthetic.svs", folder / "case-17.svs")
    (folder / "notes.txt").write_text("not a slide")
    store = service.store
    store.add_source(None, "slides", "folder", str(folder), "medical", ("user:ana",))
    ana = store.add_user("ana", "ana-password-12", "user")
    bob = store.add_user("bob", "bob-password-12", "user")
    assert service.source_items(ana, "slides") == [("case-17.svs", "case-17.svs")]  # the tab's file types only
    case_id = service.open_item(ana, "slides", "case-17.svs", "Biopsy")
    level, view = service.case_assets(ana, case_id)
    assert level.meta["by_reference"] and level.path == str((folder / "case-17.svs").resolve())
    assert view.meta["slide"] and view.media_type == "image/png"
    stored = [p for p in service.settings.assets_dir.rglob("*") if p.is_file()]
    assert [p.read_bytes()[:8] for p in stored] == [b"\x89PNG\r\n\x1a\n"]  # the view only: the slide stays there
    assert not any(b"Aperio" in p.read_bytes() for p in stored) and "Aperio" not in json.dumps(level.meta)
    final = list(service.ask(ana, case_id, "Describe the tissue."))[-1]
    assert final.run.extra["pyramid"]["width"] == 16  # read from the slide where it lies
    with pytest.raises(AccessDenied, match="Data source not found"):
        service.open_item(bob, "slides", "case-17.svs")
    with pytest.raises(InputRejected, match="opens series from a PACS"):
        service.open_item(ana, "slides", "notes.txt")


def test_the_synthetic_slide_is_a_vendor_slide_opened_where_it_lies(service, tmp_path):
    """write_svs (the slide benchmark's input): OpenSlide reads it as Aperio, with its levels, and the medical
    tab opens it from a folder source by reference and answers from its tiles."""
    import openslide

    from loupe.core.pyramid.synthetic import write_svs

    folder = tmp_path / "slides"
    folder.mkdir()
    path = write_svs(folder / "synthetic.svs", 3000, tile=256)
    slide = openslide.OpenSlide(path)
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    assert slide.level_dimensions == ((3000, 3000), (750, 750), (187, 187))
    assert slide.properties["openslide.mpp-x"] == "0.5" and slide.associated_images.keys() == set()
    service.store.add_source(None, "slides", "folder", str(folder), "medical", ("user:ana",))
    ana = service.store.add_user("ana", "ana-password-12", "user")
    case_id = service.open_item(ana, "slides", "synthetic.svs")
    level, view = service.case_assets(ana, case_id)
    assert (level.width, level.height) == (3000, 3000) and level.meta["levels"] == 3
    final = list(service.ask(ana, case_id, "Describe the tissue."))[-1]
    assert final.run.extra["pyramid"]["width"] == 3000 and final.run.extra["focus"]["tiles"]
