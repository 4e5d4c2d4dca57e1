"""Medical inputs against the budgets (issue 19): every hostile specimen refused before decoding, naming
the budget, with little memory; everyday studies (a 120-frame cine, a 2,000² radiograph, a CT series)
open with the default budgets, frames decoded one at a time; objects without images refused by what
they are. Specimens are generated (loupe.apps.robustness.medical); ingests that measure memory run in a
child process, whose peak resident size is read after each file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from loupe.apps.robustness import medical
from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.errors import InputRejected
from loupe.domains.medical.dicom_image import decode_problem, read_dataset
from loupe.domains.medical.ingest import ingest_dicom

SECRET = b"s" * 32
MIB = 2**20
# Budgets lowered for a specimen so the test stays fast (the bench runs it with the defaults).
OVERRIDES = {"dicom_deflate_over_budget": {"max_decoded_bytes": 256 * MIB}}

CHILD = r"""
import json, re, sys
from dataclasses import replace
from pathlib import Path
from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected
from loupe.domains.medical.ingest import ingest_dicom
from loupe.domains.medical.slides import ingest_vendor_slide

def memory_mib(field):  # VmRSS: now; VmHWM: the peak since the last reset (ru_maxrss survives exec: no use)
    return int(re.search(field + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

def ingest(path, budgets):
    return ingest_vendor_slide(Path(path), budgets) or ingest_dicom(Path(path).read_bytes(), budgets, b"s" * 32)

ingest(sys.argv[1], Budgets())  # decoders and writers loaded before the baseline
results = []
for name, path, overrides in json.loads(sys.argv[2]):
    base = memory_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now
    try:
        assets = ingest(path, replace(Budgets(), **overrides))
        outcome, budget, message = "accepted", None, ""
        frames = [a.meta.get("frames") for a in assets if a.meta.get("kind") == "dicom"]
        views = sum(a.meta.get("kind") == "view" for a in assets)
        del assets
    except InputRejected as exc:
        outcome, budget, message, frames, views = "refused", getattr(exc, "budget", None), str(exc), [], 0
    results.append({"name": name, "outcome": outcome, "budget": budget, "message": message, "frames": frames,
                    "views": views, "peak_over_base_mib": memory_mib("VmHWM") - base})
print(json.dumps(results))
"""


def _small_ct(folder: Path) -> Path:
    path = folder / "warm.dcm"
    path.write_bytes(medical._ct_slice(16, 16, 0, "1.2.840.10008.1.2.1", "1.2.3", "1.2.4"))
    return path


def _in_child(folder: Path, runs: list[tuple[str, Path, dict]]) -> dict[str, dict]:
    """Ingest each file in a fresh process, in order; each result carries the process's peak resident
    size while ingesting it, above its resident size just before."""
    args = json.dumps([[name, str(path), overrides] for name, path, overrides in runs])
    done = subprocess.run([sys.executable, "-c", CHILD, str(_small_ct(folder)), args], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for result in results:  # in the test output (-s): the worker's peak memory per specimen
        print(f"{result['name']}: {result['outcome']} [{result['budget']}] "
              f"peak +{result['peak_over_base_mib']:.0f} MiB")
    return {r["name"]: r for r in results}


def test_every_hostile_medical_specimen_is_refused_naming_its_budget_with_little_memory(tmp_path):
    hostile = [s for s in medical.SPECIMENS if s.expect == "refused"]
    runs = [(s.name, s.make(tmp_path), OVERRIDES.get(s.name, {})) for s in hostile]
    results = _in_child(tmp_path, runs)
    for specimen in hostile:
        result = results[specimen.name]
        assert result["outcome"] == "refused", specimen.name
        assert result["budget"] == specimen.budget, (specimen.name, result["message"])
        if specimen.budget:  # the message names the setting that changes the limit
            setting = Budgets.__dataclass_fields__[specimen.budget].metadata["limit"].setting
            assert setting in result["message"], result["message"]
        # Refused before decoding: far below any budget (1 GiB decoded, 89.5 megapixels = 268 MB of RGB).
        assert result["peak_over_base_mib"] < 120, (specimen.name, result["peak_over_base_mib"])


def test_the_ultrasound_cine_opens_with_the_default_budgets_one_frame_at_a_time(tmp_path):
    """120 frames of 640 × 480 colour: 105 MiB decoded, refused before as "more than 50 MiB"."""
    cine = medical.ultrasound_cine(tmp_path)
    result = _in_child(tmp_path, [("cine", cine, {})])["cine"]
    assert result["outcome"] == "accepted", result["message"]
    assert result["frames"] == [120] and result["views"] == 32
    assert result["peak_over_base_mib"] < 100  # never all 105 MiB of frames at once (each frame is 0.9 MiB)
    assets = ingest_dicom(cine.read_bytes(), Budgets(), SECRET)
    stored = pydicom.dcmread(io.BytesIO(assets[0].data))
    assert int(stored.NumberOfFrames) == 120 and stored.PatientName != medical.NAME
    frame = np.asarray(Image.open(io.BytesIO(assets[-1].data)))
    assert frame.shape == (480, 640, 3) and frame.std() > 10  # the last frame shown, with its picture


@pytest.mark.parametrize("make", [medical.radiograph, medical.small_ct_zip])
def test_everyday_radiographs_and_ct_series_open_with_the_defaults(tmp_path, make):
    assets = ingest_dicom(make(tmp_path).read_bytes(), Budgets(), SECRET)
    dicoms = [a for a in assets if a.meta["kind"] == "dicom"]
    assert len(dicoms) in (1, 12) and all(a.meta["frames"] == 1 for a in dicoms)
    assert [a.meta["series_position"] for a in dicoms] == list(range(len(dicoms)))


def test_a_series_is_refused_on_its_total_work_and_slice_count_before_any_slice_is_decoded(tmp_path):
    data = medical.small_ct_zip(tmp_path).read_bytes()  # 12 slices of 256²: 786,432 pixels in all
    with pytest.raises(BudgetExceeded, match="all slices together") as refused:
        ingest_dicom(data, Budgets(max_work_pixels=12 * 256 * 256 - 1), SECRET)
    assert refused.value.budget == "max_work_pixels"
    with pytest.raises(BudgetExceeded, match="LOUPE_MAX_SLICES") as refused:
        ingest_dicom(data, Budgets(max_slices=11), SECRET)
    assert refused.value.budget == "max_slices"
    assert len(ingest_dicom(data, Budgets(max_work_pixels=12 * 256 * 256, max_slices=12), SECRET)) == 24


def test_the_text_finder_reads_a_preview_scaled_to_one_detector_pass_and_boxes_map_back(tmp_path):
    from loupe.core.ocr.regions import TextRegion
    from loupe.domains.medical.deid.pixels import TEXT_SIDE, find_text_scaled

    seen = []

    def finder(image: Image.Image) -> list[TextRegion]:  # "text" in the top-left tenth of whatever it gets
        seen.append(image.size)
        return [TextRegion((0, 0, image.width / 10, image.height / 10), "x", 0.9)]

    (found,) = find_text_scaled(Image.new("L", (4096, 2048)), finder)
    assert seen == [(TEXT_SIDE, TEXT_SIDE // 2)]
    assert found.box[0] == 0 and 409 <= found.box[2] <= 413 and 204 <= found.box[3] <= 208
    seen.clear()
    assets = ingest_dicom(medical.radiograph(tmp_path).read_bytes(), Budgets(), SECRET, find_text=finder)
    (view,) = [a for a in assets if a.meta["kind"] == "view"]
    assert seen == [(TEXT_SIDE, TEXT_SIDE)] and view.width == 2000  # the view itself is kept at full size
    (region,) = view.meta["text_regions"]
    assert 199 <= region["box"][2] <= 203  # in the view's own pixels


def _deflated(ds: pydicom.Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_deflated_file_is_inflated_within_the_budget_and_reads_as_before():
    plain = medical._ct_slice(64, 64, 0, "1.2.840.10008.1.2.1", "1.2.3", "1.2.4")
    original = pydicom.dcmread(io.BytesIO(plain))
    data = _deflated(pydicom.dcmread(io.BytesIO(plain)))
    ds = read_dataset(data, limits=Budgets())
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, original.pixel_array) and ds.PatientName == medical.NAME
    assert "PixelData" not in read_dataset(data, stop_before_pixels=True, limits=Budgets())
    (dicom, view) = ingest_dicom(data, Budgets(), SECRET)
    assert np.array_equal(pydicom.dcmread(io.BytesIO(dicom.data)).pixel_array, original.pixel_array)
    with pytest.raises(BudgetExceeded, match="LOUPE_MAX_DECODED_BYTES") as refused:
        read_dataset(data, limits=Budgets(max_decoded_bytes=len(plain) // 2))
    assert refused.value.budget == "max_decoded_bytes"
    zipped = io.BytesIO()  # members of a zip share one decoded-bytes budget: two fit, not three
    with zipfile.ZipFile(zipped, "w") as archive:
        for n in range(3):
            archive.writestr(f"{n}.dcm", data)
    with pytest.raises(BudgetExceeded, match="inflated so far"):
        ingest_dicom(zipped.getvalue(), Budgets(max_decoded_bytes=2 * len(plain) + 1024), SECRET)


def test_a_deflate_bomb_is_refused_after_inflating_a_bounded_part(tmp_path):
    path = medical._deflated_dicom(tmp_path / "bomb.dcm", bytes(MIB), 300)  # 300 KB -> 300 MiB
    with pytest.raises(InputRejected, match="more than 200 times its size"):
        read_dataset(path.read_bytes(), limits=Budgets())

def test_deflated_data_ending_mid_step_with_a_trailing_pad_byte_is_counted_once():
    """The stream ends in a call that continues an output-limited one, with a pad byte after it (DICOM
    values have even length): zlib returns that byte as the unconsumed tail on every call, and a loop that
    fed it back never ended (a deid job spun until its 300 s CPU limit)."""
    noise = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()  # keeps the ratio low
    plain = noise + bytes(9 * MIB)  # the zeros' few KB of deflate data inflate past one 4 MiB step
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = packer.compress(plain) + packer.flush() + b"\x00"
    done = subprocess.run([sys.executable, "-c", "import sys; from loupe.core.budgets import Budgets; "
                           "from loupe.domains.medical.dicom_image import inflated_size; "
                           "print(inflated_size(sys.stdin.buffer.read(), Budgets()))"],
                          input=raw, capture_output=True, timeout=60)
    assert done.returncode == 0 and int(done.stdout) == len(plain)


def test_a_dicom_slide_header_claiming_more_tiles_than_it_holds_is_refused(tmp_path):
    data = medical.slide_header(tmp_path).read_bytes()
    assert len(data) < 1200
    with pytest.raises(InputRejected, match="claims 6,241 tiles, but its file holds 1"):
        ingest_dicom(data, Budgets(), SECRET)


def test_a_dicom_slide_is_composed_tile_by_tile_at_any_scale(tmp_path):
    """A view scaled down is composed from each tile scaled into place: close to scaling the whole level."""
    from loupe.core.pyramid.dicom_wsi import DicomSlideSource

    ds = pydicom.dcmread(medical.slide_single_level(tmp_path))  # only for its header
    rng = np.random.default_rng(3)
    whole = (rng.integers(0, 40, (60, 80, 3)) + np.linspace(0, 200, 80)[None, :, None]).astype(np.uint8)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.Rows, ds.Columns, ds.NumberOfFrames = 80, 60, 16, 16, 20
    ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation = pydicom.uid.ExplicitVRLittleEndian, "RGB"
    tiles = np.zeros((4, 16, 5, 16, 3), dtype=np.uint8)
    tiles.reshape(64, 80, 3)[:60] = whole
    ds.PixelData = tiles.transpose(0, 2, 1, 3, 4).tobytes()
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "slide.dcm", enforce_file_format=True)
    source = DicomSlideSource.from_files([tmp_path / "slide.dcm"], Budgets())
    assert np.array_equal(np.asarray(source.read((0, 0, 80, 60), (80, 60))), whole)
    small = np.asarray(source.read((0, 0, 80, 60), (30, 22))).astype(float)
    expected = np.asarray(Image.fromarray(whole).resize((30, 22), Image.Resampling.BOX)).astype(float)
    assert np.abs(small - expected).mean() < 4
    with pytest.raises(BudgetExceeded, match="all the tiles it decodes") as refused:
        slide = DicomSlideSource.from_files([tmp_path / "slide.dcm"], Budgets(max_work_pixels=19 * 256))
        slide.read((0, 0, 80, 60), (8, 6))
    assert refused.value.budget == "max_work_pixels"


@pytest.mark.parametrize(("make", "kind"), [
    (medical._no_pixels("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "rt_bare", preamble=False), "RT Structure Set"),
    (medical._no_pixels("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "rt"), "RT Structure Set"),
    (medical._no_pixels("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN", "plan"), "RT Plan"),
    (medical._no_pixels("1.2.840.10008.5.1.4.1.1.11.1", "PR", "gsps"), "Grayscale Softcopy Presentation State"),
])
def test_objects_without_an_image_are_refused_by_what_they_are(tmp_path, make, kind):
    with pytest.raises(InputRejected) as refused:
        ingest_dicom(make(tmp_path).read_bytes(), Budgets(), SECRET)
    message = str(refused.value)
    assert message.startswith(f"This is a DICOM {kind}; it has no image") and "not a DICOM file" not in message
    assert medical.NAME not in message


def test_an_image_header_without_pixels_and_a_parse_error_are_not_blamed_on_a_decoder(tmp_path):
    ds = pydicom.dcmread(medical.radiograph(tmp_path))
    del ds.PixelData, ds.Rows, ds.Columns  # a header kept without its image (as in some DICOMDIR sets)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(InputRejected, match="This DICOM Computed Radiography Image file holds no pixel data"):
        ingest_dicom(out.getvalue(), Budgets(), SECRET)
    ds = pydicom.dcmread(medical.ultrasound_cine(tmp_path), stop_before_pixels=True)  # JPEG baseline
    parse = decode_problem(ds, AttributeError("Missing required element: (0028,0100) 'Bits Allocated'"))
    assert "decoder" not in parse and "description of the image is damaged" in parse
    assert "read-only" not in decode_problem(ds, ValueError("output array is read-only"))
    missing = decode_problem(ds, RuntimeError("Unable to decompress 'JPEG Baseline' pixel data because all plugins "
                                              "are missing dependencies"))
    assert missing.endswith("no decoder for it is installed.")
    failed = decode_problem(ds, RuntimeError("Unable to decode as exceptions were raised by all available plugins"))
    assert "no installed decoder could read this file" in failed


def test_a_vendor_slide_is_checked_before_any_tile_is_read_or_written(tmp_path):
    from loupe.domains.medical.slides import ingest_vendor_slide

    progress = []
    with pytest.raises(BudgetExceeded, match=r"44,000 × 44,000 pixels\) without its labels") as refused:
        ingest_vendor_slide(medical.sparse_svs(tmp_path), Budgets(), lambda *step: progress.append(step))
    assert refused.value.budget == "max_work_pixels" and progress == []
