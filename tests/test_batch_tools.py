"""The batch commands' contract (``dicom deid``, ``docs convert``, ``ocr``, ``check-reports``): every input
processed or listed as refused with its reason, a summary (stdout and ``--summary``), exit code 1 when
anything was refused; outputs whole or absent after a SIGKILL, no temporary file left, and a rerun that
finishes the work without doing any input twice.

Inputs are generated here (pydicom's own installed test files are read for the DICOM corpus)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from loupe.apps.batch import TEMP_MARK
from loupe.apps.cli import cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes on its own odd test files

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DOCUMENTS = Path(__file__).parents[1] / "data" / "documents"
NAME, PATIENT_ID = "Doe^Jane", "PID-424242"
CD_NAME, CD_PATIENT_ID = "Roe^Richard", "PID-737373"


def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _counts(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith('{"total"')][-1])


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


# -- the DICOM corpus ----------------------------------------------------------------------------
def _instance(name: str, patient_id: str, number: int, study: str, series: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.PatientName, ds.PatientID = name, patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    return ds


def dicom_corpus(folder: Path, images: int = 6) -> dict[str, str]:
    """Loose images, an SR, an RT Structure Set (written without the Part 10 header, as pydicom ships it),
    a CD (DICOMDIR and its three images, built with pydicom's FileSet), a truncated file and a text file.
    Returns the expected status by input name (relative to ``folder``)."""
    folder.mkdir(parents=True)
    expected: dict[str, str] = {}
    study, series = generate_uid(), generate_uid()
    for n in range(images):
        _instance(NAME, PATIENT_ID, n + 1, study, series).save_as(folder / f"Doe_Jane_{n:03}.dcm")
        expected[f"Doe_Jane_{n:03}.dcm"] = "processed"
    sr = pydicom.dcmread(PYDICOM_FILES / "test-SR.dcm")
    sr.PatientName, sr.PatientID = NAME, PATIENT_ID
    sr.save_as(folder / "report_sr.dcm")
    shutil.copy(PYDICOM_FILES / "rtstruct.dcm", folder / "rtstruct.dcm")
    expected |= {"report_sr.dcm": "processed", "rtstruct.dcm": "processed"}
    cd = FileSet()
    cd_study, cd_series = generate_uid(), generate_uid()
    for n in range(3):
        cd.add(_instance(CD_NAME, CD_PATIENT_ID, n + 1, cd_study, cd_series))
    cd.write(folder / "cd")
    for path in (folder / "cd").rglob("*"):
        if path.is_file():
            expected[str(path.relative_to(folder))] = "processed"
    whole = (folder / "Doe_Jane_000.dcm").read_bytes()
    (folder / "cut_short.dcm").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text(f"Patient {NAME}, see images.\n")
    expected |= {"cut_short.dcm": "refused", "notes.txt": "refused"}
    return expected


def _assert_deid_output(out: Path, forbidden: list[bytes]) -> list[Path]:
    """Every output a valid DICOM file, marked de-identified, with none of ``forbidden`` anywhere in it (names
    with letters: in its bytes; IDs: as a patient's name or ID at any depth, DICOMDIR records included)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    words = [w for w in forbidden if any(chr(c).isalpha() for c in w)]
    for path in files:
        data = path.read_bytes()
        assert not [word for word in words if word in data], path.name
        ds = pydicom.dcmread(path)
        if path.name != "DICOMDIR":
            assert ds.PatientIdentityRemoved == "YES"
        for elem in ds.iterall():
            if elem.keyword in ("PatientName", "PatientID"):
                assert str(elem.value).encode() not in forbidden, path.name
    return files


def test_deid_processes_or_refuses_every_file_and_rewrites_the_dicomdir(tmp_path):
    expected = dicom_corpus(tmp_path / "in")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    result = _invoke("--home", str(tmp_path / "home"), "dicom", "deid", str(tmp_path / "in"), "--out", str(out),
                     "--summary", str(summary))
    assert result.exit_code == 1  # two inputs refused
    record = json.loads(summary.read_text())
    statuses = {f["input"]: f["status"] for f in record["files"]}
    assert statuses == expected
    reasons = {f["input"]: f["reason"] for f in record["files"]}
    assert "truncated" in reasons["cut_short.dcm"] and "not a DICOM file" in reasons["notes.txt"]
    kinds = {f["input"]: f["detail"]["kind"] for f in record["files"]}
    assert kinds["rtstruct.dcm"] == "RT Structure Set Storage" and kinds["report_sr.dcm"] == "Comprehensive SR Storage"
    assert record["counts"].items() <= _counts(result.output).items()
    assert _counts(result.output)["refused"] == 2 and "refused notes.txt" in result.output
    files = _assert_deid_output(out, [b"Doe", b"Roe", PATIENT_ID.encode(), CD_PATIENT_ID.encode()])
    # The CD: a new file-set, its DICOMDIR built from the de-identified files, named by its new UID.
    dicomdirs = [p for p in files if p.name == "DICOMDIR"]
    assert len(dicomdirs) == 1 and dicomdirs[0].parent.name.startswith("2.25.")
    new_set = FileSet(pydicom.dcmread(dicomdirs[0]))
    assert len(new_set) == 3 and all(Path(i.path).is_file() for i in new_set)
    assert {str(i.PatientName) for i in new_set} <= {"", "ANONYMOUS"}
    # Loose files by new UIDs, each input once: 6 images + SR + RT + CD's 3 images + its DICOMDIR.
    assert len(files) == len(expected) - 2


def test_deid_over_pydicom_s_own_test_files_never_stops(tmp_path):
    source = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    names: set[bytes] = set()
    for path in source:  # every patient name and ID pydicom's files hold, DICOMDIR records included
        try:
            for elem in pydicom.dcmread(path, force=True).iterall():
                if elem.keyword in ("PatientName", "PatientID") and len(str(elem.value)) >= 4:
                    names.add(str(elem.value).encode())
        except Exception:  # noqa: BLE001, S112 - files pydicom cannot read hold nothing to compare
            continue
    names -= {b"ANONYMOUS", b"ANONYMIZED"}
    assert b"Test^S R" in names  # the SR's patient
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    result = _invoke("--home", str(tmp_path / "home"), "dicom", "deid", str(PYDICOM_FILES), "--out", str(out),
                     "--summary", str(summary))
    record = json.loads(summary.read_text())
    assert result.exit_code == 1 and record["counts"]["total"] == len(source)  # every file has its outcome
    by_input = {f["input"]: f for f in record["files"]}
    assert len(by_input) == len(source)
    for name in ("rtstruct.dcm", "test-SR.dcm", "reportsi.dcm", "dicomdirtests/DICOMDIR", "dicomdirtests/TINY_ALPHA/"
                 "DICOMDIR", "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000"):
        assert by_input[name]["status"] == "processed", (name, by_input[name]["reason"])
    for f in record["files"]:
        if f["status"] == "refused":
            assert f["reason"]
            if f["detail"]["kind"] not in ("", "unknown object"):  # a real DICOM object is never "not a DICOM file"
                assert "not a DICOM file" not in f["reason"], f
    _assert_deid_output(out, sorted(names))
    assert not _temps(out)


# -- kill tests ----------------------------------------------------------------------------------
# The command runs in a child whose every output write is slowed down (in the test only), so a SIGKILL
# lands part-way through the batch.
SLOW = """
import time
import loupe.apps.batch as b
import loupe.domains.medical.deid.batch as d
def slowed(write):
    def slow(*args, **kwargs):
        write(*args, **kwargs)
        time.sleep(0.3)
    return slow
b.write_atomically = slowed(b.write_atomically)
d.write_atomically = slowed(d.write_atomically)
from loupe.apps.cli import main
main()
"""


def _finished_while_running(out: Path, suffix: str) -> list[Path]:
    """Finished outputs, listed while the batch still creates and removes its temporary folders
    (os.walk skips a folder that vanishes under it; Path.rglob raises)."""
    return [Path(root, name) for root, _, names in os.walk(out) for name in names
            if name.endswith(suffix) and TEMP_MARK not in name and TEMP_MARK not in root]


def _kill_after_first_output(args: list[str], out: Path, done: callable) -> None:
    process = subprocess.Popen([sys.executable, "-c", SLOW, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not done() and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL  # killed part-way, not finished


def test_deid_killed_mid_batch_resumes_without_duplicates(tmp_path):
    expected = dicom_corpus(tmp_path / "in", images=12)
    home, out, summary = tmp_path / "home", tmp_path / "out", tmp_path / "summary.json"
    args = ["--home", str(home), "dicom", "deid", str(tmp_path / "in"), "--out", str(out)]
    _kill_after_first_output(args, out, lambda: len(_finished_while_running(out, ".dcm")) >= 2)
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and TEMP_MARK not in p.name}
    for path in first:  # what the killed run left is whole
        pydicom.dcmread(path)
    stale = out / f".2.25.1.dcm.99999{TEMP_MARK}"  # as if killed mid-write: identifying content
    stale.write_bytes(f"{NAME} {PATIENT_ID}".encode())
    result = _invoke(*args, "--summary", str(summary))
    record = json.loads(summary.read_text())
    statuses = {f["input"]: f["status"] for f in record["files"]}
    assert {k: ("processed" if v == "already_done" else v) for k, v in statuses.items()} == expected
    counts = record["counts"]
    assert counts["already_done"] >= 2 and counts["processed"] + counts["already_done"] == len(expected) - 2
    assert counts["refused"] == 2 and result.exit_code == 1
    assert not _temps(out)
    files = _assert_deid_output(out, [b"Doe", b"Roe", PATIENT_ID.encode(), CD_PATIENT_ID.encode()])
    assert len(files) == len(expected) - 2  # every input once
    assert all(first[p] == p.stat().st_mtime_ns for p in first)  # done before: not written again


def _document_corpus(folder: Path, pages: int = 4) -> dict[str, str]:
    from pypdf import PdfWriter

    folder.mkdir(parents=True)
    expected = {}
    for n in range(pages):
        image = Image.new("RGB", (360, 90), "white")
        ImageDraw.Draw(image).text((12, 30), f"Invoice {n} total 42", fill="black", font_size=28)
        image.save(folder / f"page_{n:02}.png")
        expected[f"page_{n:02}.png"] = "processed"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    with (folder / "blank.pdf").open("wb") as handle:
        writer.write(handle)
    expected["blank.pdf"] = "processed"
    whole = (folder / "blank.pdf").read_bytes()
    (folder / "cut_short.pdf").write_bytes(whole[: len(whole) // 3])
    (folder / "not_an_image.png").write_text("this is text")
    return expected | {"cut_short.pdf": "refused", "not_an_image.png": "refused"}


@pytest.mark.parametrize("command", [["docs", "convert", "--to", "json"], ["ocr", "--json", "--no-orientation"]])
def test_document_commands_killed_mid_batch_resume_without_duplicates(tmp_path, command):
    expected = _document_corpus(tmp_path / "in")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    suffix = ".json" if command[0] == "docs" else ".jsonl"
    args = [*command, str(tmp_path / "in"), "--out", str(out)]

    def outputs() -> list[Path]:
        return [p for p in out.glob(f"*{suffix}") if TEMP_MARK not in p.name]

    _kill_after_first_output(args, out, lambda: out.is_dir() and len(outputs()) >= 1)
    first = {p: p.stat().st_mtime_ns for p in outputs()}
    assert 1 <= len(first) < len(expected) - 2
    for path in first:  # whole: every line parses
        for line in path.read_text().splitlines() if suffix == ".jsonl" else [path.read_text()]:
            json.loads(line)
    result = _invoke(*args, "--summary", str(summary))
    record = json.loads(summary.read_text())
    statuses = {f["input"]: f["status"] for f in record["files"]}
    assert {k: ("processed" if v == "already_done" else v) for k, v in statuses.items()} == expected
    assert record["counts"]["already_done"] == len(first) and result.exit_code == 1
    assert {f["input"] for f in record["files"] if f["status"] == "refused"} == {"cut_short.pdf", "not_an_image.png"}
    assert all(f["reason"] for f in record["files"] if f["status"] == "refused")
    assert sorted(p.name for p in outputs()) == sorted(f"{k}{suffix}" for k, v in expected.items() if v == "processed")
    assert not _temps(out) and all(first[p] == p.stat().st_mtime_ns for p in first)
    if command[0] == "ocr":
        text = (out / "page_03.png.jsonl").read_text()
        assert "Invoice" in text and "42" in text


def test_check_reports_killed_mid_batch_resumes_and_lists_refused_lines(tmp_path):
    source, out, summary = tmp_path / "reports.jsonl", tmp_path / "results.jsonl", tmp_path / "summary.json"
    lines = [json.dumps({"id": f"r{n}", "findings": "Small left pleural effusion. No pneumothorax.",
                         "impression": "Small right pleural effusion."}) for n in range(1200)]
    lines.insert(5, '{"id": "broken", "findings": ')  # not JSON
    lines.insert(9, json.dumps({"id": "empty", "findings": ""}))
    lines.append(lines[0])  # the same report twice
    source.write_text("\n".join(lines) + "\n")
    args = ["--home", str(tmp_path / "home"), "check-reports", str(source), "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 50):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = out.read_bytes().count(b"\n")
    assert 50 <= partial < 1200
    result = _invoke(*args, "--summary", str(summary))
    record = json.loads(summary.read_text())
    assert result.exit_code == 1
    assert record["counts"] == {"total": 1203, "processed": 1200 - partial, "already_done": partial, "duplicate": 1,
                                "refused": 2}
    refused = [f for f in record["files"] if f["status"] == "refused"]
    assert sorted(f["input"] for f in refused) == ["line 10", "line 6"] and all(f["reason"] for f in refused)
    written = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(written) == sorted(f"r{n}" for n in range(1200))  # each once


def test_a_header_problem_is_not_blamed_on_a_decoder(tmp_path):
    from loupe.core.errors import InputRejected
    from loupe.domains.medical.deid.reading import check_pixels

    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small_RLE.dcm")  # compressed: the old message named the decoders
    del ds.BitsStored
    with pytest.raises(InputRejected) as refused:
        check_pixels(ds)
    assert "header" in str(refused.value) and "decoder" not in str(refused.value)


def test_deid_refuses_a_pixel_matrix_over_the_budget_before_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    _instance(NAME, PATIENT_ID, 1, generate_uid(), generate_uid()).save_as(folder / "ct.dcm")
    monkeypatch.setenv("LOUPE_MAX_IMAGE_PIXELS", "1000")  # CT_small is 128 x 128
    result = _invoke("--home", str(tmp_path / "home"), "dicom", "deid", str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "LOUPE_MAX_IMAGE_PIXELS" in result.output
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_ocr_to_stdout_keeps_the_text_on_stdout_and_the_summary_on_stderr(tmp_path):
    expected = _document_corpus(tmp_path / "in", pages=1)
    result = subprocess.run([sys.executable, "-m", "loupe.apps.cli", "ocr", "--no-orientation",
                             str(tmp_path / "in" / "page_00.png"), str(tmp_path / "in" / "not_an_image.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Invoice" in result.stdout and '"total"' not in result.stdout
    assert "refused not_an_image.png:" in result.stderr and json.loads(result.stderr.strip().splitlines()[-1]) == {
        "total": 2, "processed": 1, "already_done": 0, "duplicate": 0, "refused": 1}
    assert expected["not_an_image.png"] == "refused"


# -- per-file time and memory budgets (each file runs as a job in a worker process) ---------------
def _poster_pdf(path: Path, pages: int = 3) -> None:
    """Poster-size scanned pages (no text layer) packed with text: OCR of one takes tens of seconds."""
    sheets = []
    for n in range(pages):
        sheet = Image.new("RGB", (3300, 4700), "white")
        draw = ImageDraw.Draw(sheet)
        for y in range(40, 4600, 50):
            draw.text((30, y), f"Line {y} of page {n}: invoice 4711 total 42.00 EUR paid " * 3, fill="black",
                      font_size=36)
        sheets.append(sheet)
    sheets[0].save(path, "PDF", resolution=200, save_all=True, append_images=sheets[1:])


def test_a_file_over_its_time_budget_is_refused_and_the_batch_goes_on(tmp_path, monkeypatch):
    folder, out, summary = tmp_path / "in", tmp_path / "out", tmp_path / "summary.json"
    folder.mkdir()
    _poster_pdf(folder / "1_poster.pdf")
    shutil.copy(DOCUMENTS / "multi_page.pdf", folder / "2_letter.pdf")  # a text layer: read without OCR
    # Loading the OCR models costs a worker about 2 s of processor time; reading one poster page, far more.
    monkeypatch.setenv("LOUPE_JOB_SECONDS", "4")
    started = time.monotonic()
    result = _invoke("docs", "convert", str(folder), "--out", str(out), "--summary", str(summary))
    record = {f["input"]: f for f in json.loads(summary.read_text())["files"]}
    assert result.exit_code == 1 and record["1_poster.pdf"]["status"] == "refused"
    assert "LOUPE_JOB_SECONDS" in record["1_poster.pdf"]["reason"]
    assert record["2_letter.pdf"]["status"] == "processed"
    assert "The Evolution of the Word Processor" in (out / "2_letter.pdf.md").read_text()
    assert not (out / "1_poster.pdf.md").exists() and not _temps(out)
    assert time.monotonic() - started < 60  # stopped at its budget, not read to the end


def _deflated_image(path: Path, side: int = 8000) -> None:
    """A 2 MB deflated DICOM image (Deflated Explicit VR) that inflates to 128 MB (side² 16-bit pixels, at
    8,000²): within the pixel, decoded-size and inflation-ratio budgets, over a small job memory budget."""
    import numpy as np
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _instance(NAME, PATIENT_ID, 1, generate_uid(), generate_uid())
    pixels = np.zeros(side * side, np.uint16)
    pixels[::97] = np.arange(len(pixels[::97]), dtype=np.uint16)  # not all zeros: a plausible inflation ratio
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_a_file_over_its_memory_budget_is_refused_and_the_batch_goes_on(tmp_path, monkeypatch):
    folder, out, summary = tmp_path / "in", tmp_path / "out", tmp_path / "summary.json"
    folder.mkdir()
    _deflated_image(folder / "1_bomb.dcm")
    _instance(NAME, PATIENT_ID, 2, generate_uid(), generate_uid()).save_as(folder / "2_ct.dcm")
    monkeypatch.setenv("LOUPE_JOB_MEMORY_BYTES", str(96 * 1024 * 1024))  # CT_small needs far less
    result = _invoke("--home", str(tmp_path / "home"), "dicom", "deid", str(folder), "--out", str(out),
                     "--summary", str(summary))
    record = {f["input"]: f for f in json.loads(summary.read_text())["files"]}
    assert result.exit_code == 1 and record["1_bomb.dcm"]["status"] == "refused"
    assert "LOUPE_JOB_MEMORY_BYTES" in record["1_bomb.dcm"]["reason"]
    assert record["2_ct.dcm"]["status"] == "processed"
    (written,) = [p for p in out.rglob("*.dcm") if TEMP_MARK not in str(p)]
    assert pydicom.dcmread(written).PatientIdentityRemoved == "YES"
