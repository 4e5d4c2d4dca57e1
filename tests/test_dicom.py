"""DICOM reading on real files: modality values (HU), windows and presets, MONOCHROME1, multi-frame,
compressed syntaxes, series from a zip, and one clear message for every kind of bad file."""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.errors import InputRejected
from loupe.domains.medical.dicom_image import check_size, check_work, frame_values, geometry, read_dataset
from loupe.domains.medical.series import read_series, zip_members
from loupe.domains.medical.windowing import PRESETS, Window, apply_window, ct_channels, display

DICOM = Path(__file__).parents[1] / "data" / "medical" / "dicom"


def _read(name: str) -> pydicom.Dataset:
    return read_dataset((DICOM / name).read_bytes())


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_ct_values_are_hounsfield_units_and_presets_map_them_as_the_standard_says():
    ds = _read("CT_small.dcm")
    values = frame_values(ds)
    raw = pixel_array(ds)
    assert np.array_equal(values, raw.astype(np.float32) - 1024)  # Rescale Slope 1, Intercept -1024
    assert values[5, 118] == -896  # the darkest pixel: air-like
    # LINEAR window (PS3.3 C.11.2.1.2.1) at lung (-600/1500): ((-896 + 600.5) / 1499 + 0.5) * 255 = 77.2
    assert display(ds, values, PRESETS["lung"]).getpixel((118, 5)) == 77
    assert display(ds, values, PRESETS["brain"]).getpixel((118, 5)) == 0  # far below 40 +/- 40
    assert apply_window(np.array([1167.0]), PRESETS["lung"])[0] == 255  # above the top of the window
    # free centre/width -800/200: ((-896 + 800.5) / 199 + 0.5) * 255 = 5.1
    assert display(ds, values, Window(-800, 200)).getpixel((118, 5)) == 5


def test_monochrome1_is_inverted_after_its_own_window():
    ds = _read("CR_cspine_MONOCHROME1_6154.dcm")
    values = frame_values(ds)
    assert values[15, 1] == pytest.approx(2802 * 0.684 + 200)  # slope/intercept from the file
    # the file's window 1600/2800 gives 174 for that value; MONOCHROME1 shows high values dark
    assert display(ds, values).getpixel((1, 15)) == 255 - 174


def test_multiframe_rle_jpeg2000_and_colour_ultrasound_decode():
    mr = _read("MR_enhanced_10frame.dcm")
    shape = geometry(mr)
    assert shape is not None and shape.frames == 10
    assert not np.array_equal(frame_values(mr, 0), frame_values(mr, 9))
    assert np.array_equal(frame_values(_read("MR_small_RLE.dcm")), frame_values(_read("MR_small.dcm")))
    ct = frame_values(_read("CT_693_J2KI.dcm"))
    assert ct.shape == (512, 512) and ct.min() < -900 and ct.max() > 1000  # air to bone in HU
    us = frame_values(_read("US_multiframe_30fr_JPEG_baseline.dcm"), 29)
    assert us.shape == (240, 320, 3) and us.dtype == np.uint8
    assert display(_read("US_multiframe_30fr_JPEG_baseline.dcm"), us).mode == "RGB"


def test_ct_three_window_encoding_puts_lung_soft_tissue_and_bone_in_the_channels():
    values = frame_values(_read("CT_small.dcm"))
    rgb = np.asarray(ct_channels(values))
    assert rgb.shape == (128, 128, 3)
    for channel, name in enumerate(("lung", "mediastinum", "bone")):
        assert np.array_equal(rgb[..., channel], apply_window(values, PRESETS[name]))


@pytest.mark.parametrize(("name", "message"), [
    ("NM_JPEG_lossy_12bit.dcm", "compressed as JPEG Extended"),
    ("malformed/MR_truncated.dcm", "truncated"),
])
def test_undecodable_pixels_get_one_clear_message_without_patient_data(name, message):
    ds = _read(name)
    with pytest.raises(InputRejected, match=message) as failure:
        frame_values(ds)
    assert str(ds.get("PatientName", "")) not in str(failure.value) or not ds.get("PatientName")


@pytest.mark.parametrize(("data", "message"), [
    ((DICOM / "malformed" / "CT_no_meta.dcm").read_bytes(), "not a DICOM file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "not a DICOM file"),
    (b"", "empty"),
    ((DICOM / "CT_small.dcm").read_bytes()[:300], "truncated: it ends right after its header"),
    ((DICOM / "CT_small.dcm").read_bytes()[:5000], "ends before its pixel data"),
])
def test_files_that_are_not_readable_dicom_are_refused(data, message):
    with pytest.raises(InputRejected, match=message):
        read_dataset(data)


def test_a_report_without_pixels_has_no_geometry():
    ds = _read("SR_basic_text_report.dcm")
    assert geometry(ds) is None and ds.Modality == "SR"


def test_size_is_checked_from_the_header_before_any_pixel_is_decoded():
    ds = _read("MR_small.dcm")
    claim = copy.deepcopy(ds)
    claim.NumberOfFrames = 10_000  # a 10,000-frame claim on 8 KB of pixel data
    with pytest.raises(BudgetExceeded, match="10,000 frames") as refused:
        check_size(geometry(claim), Budgets())
    assert refused.value.budget == "max_frames"
    with pytest.raises(BudgetExceeded, match="64 × 64 pixels") as refused:
        check_size(geometry(ds), Budgets(max_pixels=1000))
    assert refused.value.budget == "max_pixels"
    with pytest.raises(BudgetExceeded, match="LOUPE_MAX_WORK_PIXELS"):
        check_work([geometry(ds)] * 3, Budgets(max_work_pixels=3 * 64 * 64 - 1))
    check_size(geometry(ds), Budgets())  # within the budgets: no error
    check_work([geometry(ds)] * 3, Budgets(max_work_pixels=3 * 64 * 64))


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_zipped_series_is_grouped_and_ordered_along_the_slice_normal():
    base = _read("CT_small.dcm")
    slices = {}
    for z in (30.0, -10.0, 10.0):  # written out of order
        ds = copy.deepcopy(base)
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.InstanceNumber = int(100 - z)  # contradicts the positions on purpose
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        slices[f"slice_{z}.dcm"] = _bytes(ds)
    slices["other_series.dcm"] = (DICOM / "MR_small.dcm").read_bytes()
    slices["notes.txt"] = b"not an image"
    series, skipped = read_series(zip_members(_zip(slices), Budgets()))
    assert [len(s) for s in series] == [3, 1] and skipped == 1
    assert [float(ds.ImagePositionPatient[2]) for ds in series[0].slices] == [-10.0, 10.0, 30.0]


def test_a_zip_bomb_is_refused_before_it_is_inflated():
    bomb = _zip({"a.dcm": b"\x00" * 20_000_000})
    with pytest.raises(InputRejected, match="compressed far beyond"):
        zip_members(bomb, Budgets())
    with pytest.raises(BudgetExceeded, match="LOUPE_MAX_DECODED_BYTES"):
        zip_members(_zip({"a.dcm": b"\x00" * 2_000_000}, zipfile.ZIP_STORED), Budgets(max_decoded_bytes=2**20))
