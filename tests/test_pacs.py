"""A PACS (Orthanc with DICOMweb, started here) as a data source of the medical tab: series found with
QIDO-RS, opened by reference, slices fetched only as they are viewed, every read audited, and what is kept
or exported de-identified exactly as the same files uploaded."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pydicom
import pytest
from pacs import PATIENT, ct_series, orthanc, store
from test_browser import ARTIFACTS, CHROMIUM_ARGS, _login, chromium  # noqa: F401 - the fixture is used by name
from webapp import serve

from loupe.apps.orthanc_server import instances_served as instance_reads
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import AccessDenied, InputRejected, LoupeError
from loupe.core.plugins import Budgets
from loupe.core.sources import SourceSpec, item_location
from loupe.core.sources.dicomweb import parse_location, search_filters, series_item
from loupe.domains.medical import MedicalDomain

SLICES = 12


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding a 12-slice CT and a 3-slice MR of PATIENT; yields (DICOMweb root, folder, CT files)."""
    folder = tmp_path_factory.mktemp("orthanc")
    ct, mr = ct_series(SLICES), ct_series(3, modality="MR")
    with orthanc(folder) as url:
        store(url, ct + mr)
        yield url, folder, ct


@pytest.fixture(scope="module")
def service(pacs, tmp_path_factory, tiny_model_dir) -> LoupeService:
    """One app service for the file (its job workers start once), the PACS added for ana; bob reads nothing."""
    service = LoupeService.open(Settings(home=tmp_path_factory.mktemp("home"), database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    service.store.add_source(None, "pacs", "dicomweb", pacs[0], "medical", ("user:ana",))
    for name in ("ana", "bob"):
        service.store.add_user(name, f"{name}-password-12", "user")
    return service


def test_a_series_is_found_opened_by_reference_and_read_one_slice_at_a_time(service, pacs):
    url, folder, ct = pacs
    store_ = service.store
    ana, bob = service.user("ana"), service.user("bob")

    found = service.source_items(ana, "pacs", "CT")
    assert len(found) == 1 and "CT" in found[0][0] and f"{SLICES} images" in found[0][0]
    label, item = found[0]
    assert item == f"{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}"
    assert not any(part in label for part in (*PATIENT, "DOE"))
    assert [i for _, i in service.source_items(ana, "pacs", f"patient={PATIENT[1]} modality=MR")] != [item]
    assert len(service.source_items(ana, "pacs", f"patient={PATIENT[1]}")) == 2
    assert service.source_items(ana, "pacs", "patient=nobody") == []
    for attempt in (lambda: service.source_items(bob, "pacs", "CT"), lambda: service.open_item(bob, "pacs", item)):
        with pytest.raises(AccessDenied, match="Data source not found"):
            attempt()

    reads_before = len(instance_reads(folder))
    case_id = service.open_item(ana, "pacs", item, "Head CT")
    series, view = service.case_assets(ana, case_id)
    assert series.meta["by_reference"] and series.meta["slices"] == SLICES and series.data == b""
    assert view.media_type == "image/png" and view.meta["series_position"] == SLICES // 2
    kept = json.dumps([series.meta, view.meta]) + "".join(
        p.read_bytes().decode("latin-1") for p in service.settings.assets_dir.rglob("*") if p.is_file())
    assert not any(part in kept for part in PATIENT)
    assert len(instance_reads(folder)) - reads_before == 1  # the middle slice only

    ordered = sorted(ct, key=lambda ds: float(ds.ImagePositionPatient[2]))
    facts, data = service.view_case(ana, case_id, "stack_frame", (2,))  # the viewer's third slice, in HU
    expected = ordered[2].pixel_array * float(ordered[2].RescaleSlope) + float(ordered[2].RescaleIntercept)
    assert np.array_equal(np.frombuffer(data, "<i2").reshape(facts["rows"], facts["columns"]), expected)
    reads = instance_reads(folder)
    assert len(reads) - reads_before == 2 and reads[-1] == ordered[2].SOPInstanceUID  # fetched when viewed

    actions = [(e.action, e.detail) for e in store_.audit_events()]
    assert [a for a, _ in actions].count("source.read") >= 2 and ("source.open" in [a for a, _ in actions])
    listings = [d for a, d in actions if a == "source.list"]
    assert {"filters": ["Modality"]}.items() <= listings[0].items()
    assert PATIENT[1] not in json.dumps([d for _, d in actions])  # the filter's name is audited, not its value


def test_the_export_and_the_header_facts_equal_those_of_the_same_files_uploaded(service, pacs):
    url, _, ct = pacs
    ana = service.user("ana")
    item = f"{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}"
    by_reference = service.open_item(ana, "pacs", item)
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as archive:
        for n, ds in enumerate(ct):
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            archive.writestr(f"{n}.dcm", buffer.getvalue())
    uploaded = service.create_case(ana, "medical", io.BytesIO(upload.getvalue()), "Uploaded")

    exports = [zipfile.ZipFile(io.BytesIO(service.export_case(ana, c, "zip")[0])) for c in (by_reference, uploaded)]
    assert exports[0].namelist() == exports[1].namelist() and len(exports[0].namelist()) == SLICES
    for name in exports[0].namelist():
        assert exports[0].read(name) == exports[1].read(name), name  # byte for byte
    first = pydicom.dcmread(io.BytesIO(exports[0].read("image_0001.dcm")))
    assert str(first.PatientName) != PATIENT[0] and first.StudyInstanceUID != ct[0].StudyInstanceUID

    series = service.case_assets(ana, by_reference)[0]
    files = [a for a in service.case_assets(ana, uploaded) if a.meta.get("kind") == "dicom"]
    middle = files[SLICES // 2].meta
    for key in ("Modality", "PixelSpacing", "SliceThickness", "deid", "burned_in_annotation"):
        assert series.meta.get(key) == middle.get(key), key


def test_a_question_reads_three_slices_from_the_pacs(service, pacs):
    url, folder, ct = pacs
    ana = service.user("ana")
    case_id = service.open_item(ana, "pacs", f"{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}")
    before = len(instance_reads(folder))
    domain = MedicalDomain()
    domain.configure(service.settings)
    context = domain.context(service.case_assets(ana, case_id), "Any bleed?")
    assert context.meta["views_read"] == [0, 6, 11]  # evenly spaced through the 12 slices
    assert len(context.images) == 3 and "three CT windows" in context.extra_text
    assert "slice 1/12" in context.extra_text and len(instance_reads(folder)) - before == 3


def test_pacs_items_and_searches_are_checked_before_any_request():
    spec = SourceSpec("pacs", "dicomweb", "http://127.0.0.1:1/dicom-web/", "medical")
    assert parse_location(item_location(spec, "1.2.3/4.5.6")).series == "4.5.6"
    for bad in ("1.2.3", "1.2/../4", "1.2.3/4.5.6/7", "1.2.x/4.5", "/1.2/3", "1." + "2" * 70 + "/3"):
        with pytest.raises(InputRejected):
            series_item(bad)
    assert search_filters("CT 20240101-20241231 PID-4711") == {"Modality": "CT", "StudyDate": "20240101-20241231",
                                                               "PatientID": "PID-4711"}
    assert search_filters("accession=A12 name=DOE*") == {"AccessionNumber": "A12", "PatientName": "DOE*"}
    for bad in ("colour=red", "patient=", "patient=a\\b", "patient=" + "x" * 65):
        with pytest.raises(InputRejected):
            search_filters(bad)
    from loupe.core.sources import check_spec

    with pytest.raises(LoupeError, match="credentials"):
        check_spec("pacs", "dicomweb", "http://user:secret@pacs/dicom-web")


def test_an_unreachable_pacs_is_a_clear_refusal(tmp_path):
    from helpers import free_port

    domain = MedicalDomain()
    domain.configure(Settings(home=tmp_path, database_url=None))
    location = item_location(SourceSpec("pacs", "dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web/",
                                        "medical"), "1.2.3/4.5.6")
    with pytest.raises(LoupeError, match="The PACS did not answer"):
        domain.open_item(location, Budgets())


def test_a_pacs_that_asks_for_a_password_is_read_with_the_sources_credentials(tmp_path, tiny_model_dir):
    """Orthanc with HTTP basic authentication: without credentials the search is refused with a clear message;
    with them (set from standard input, owner-only) the series is found and opened in a worker."""
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    series = ct_series(3)
    with orthanc(tmp_path / "orthanc", users={"loupe-reader": "pacs-secret-9"}) as url:
        store(url, series, auth=("loupe-reader", "pacs-secret-9"))
        home = tmp_path / "home"
        env = {"LOUPE_HOME": str(home), "LOUPE_MODEL": str(tiny_model_dir("smolvlm"))}
        runner = CliRunner()
        assert runner.invoke(cli, ["sources", "add", "pacs", "--kind", "dicomweb", "--location", url, "--domain",
                                   "medical"], env=env).exit_code == 0
        service = LoupeService.open(Settings(home=home, database_url=None, model="unused"))
        admin = service.store.add_user("root", "root-password-1", "admin")
        with pytest.raises(LoupeError, match=r"refused Loupe's credentials \(HTTP 401\)"):
            service.source_items(admin, "pacs", "CT")
        given = runner.invoke(cli, ["sources", "credentials", "pacs"], env=env,
                              input="username=loupe-reader\npassword=pacs-secret-9\n")
        assert given.exit_code == 0 and "pacs-secret-9" not in given.output, given.output
        found = service.source_items(admin, "pacs", "CT")
        item = f"{series[0].StudyInstanceUID}/{series[0].SeriesInstanceUID}"
        assert [i for _, i in found] == [item]
        case_id = service.open_item(admin, "pacs", item)
        assert len(service.case_assets(admin, case_id)[0].meta["instances"]) == 3
        assert runner.invoke(cli, ["sources", "remove", "pacs"], env=env).exit_code == 0
        assert not (home / "secrets" / "sources" / "pacs.json").exists()  # removed with its source


def test_bench_sources_pacs_part_opens_and_views_through_the_app(tmp_path):
    from conftest import missing_service

    from loupe.apps.bench_pacs import run_pacs_bench
    from loupe.apps.orthanc_server import dicomweb_plugin, orthanc_binary

    if not (orthanc_binary() and dicomweb_plugin()):
        missing_service("Orthanc is not installed (.ci/with-services.sh installs orthanc and orthanc-dicomweb)")
    result = run_pacs_bench(tmp_path, slices=6, opens=1)
    assert "error" not in result, result
    assert result["instances"] == 6 and len(result["opens_s"]) == 1 and len(result["view_slice_s"]) == 3
    assert result["instances_fetched_by_opens_and_3_views"] == 4  # one for the open, one per slice viewed
    assert result["first_slice_s"] > 0 and result["first_slice_vs_whole_series"] > 0


def test_answers_and_report_findings_go_back_to_the_pacs_as_a_structured_report(service, pacs):
    from pydicom.sr.codedict import codes

    from loupe.core.sources.dicomweb import client
    from loupe.domains.medical.report_panel import check_text

    url, _, ct = pacs
    ana, bob = service.user("ana"), service.user("bob")
    case_id = service.open_item(ana, "pacs", f"{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}")
    with pytest.raises(LoupeError, match="no answer"):
        service.send_to_source(ana, case_id)
    final = list(service.ask(ana, case_id, "Is there a bleed? <b>bold</b>"))[-1]
    report = "FINDINGS: Large left pleural effusion.\nIMPRESSION: No pleural effusion."
    findings = check_text(report, [])
    assert findings
    service.store.save_report(ana, case_id, report, findings)
    service.store.share_case(ana, case_id, "bob")  # bob sees the case but may not read the PACS
    with pytest.raises(AccessDenied, match="may not read"):
        service.send_to_source(bob, case_id)

    said = service.send_to_source(ana, case_id)
    assert "1 answer" in said and f"{len(findings)} report-check finding" in said

    web = client(url)
    reports = web.search_for_instances(ct[0].StudyInstanceUID, search_filters={"Modality": "SR"})
    assert len(reports) == 1
    sr = web.retrieve_instance(ct[0].StudyInstanceUID, reports[0]["0020000E"]["Value"][0],
                               reports[0]["00080018"]["Value"][0])
    assert sr.StudyInstanceUID == ct[0].StudyInstanceUID and str(sr.PatientID) == PATIENT[1]  # in the source study
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    ordered = sorted(ct, key=lambda ds: float(ds.ImagePositionPatient[2]))
    read = [ordered[c["slice"]].SOPInstanceUID for c in final.run.extra["citations"]]
    assert len(read) == 3 and set(read) <= evidence

    def items(seq):
        for item in seq:
            yield item
            yield from items(item.get("ContentSequence", []))

    content = list(items(sr.ContentSequence))
    name = {(i.ConceptNameCodeSequence[0].CodeValue, i.ValueType): i for i in content}
    assert sr.ConceptNameCodeSequence[0].CodeValue == codes.LN.DiagnosticImagingReport.value
    answer = name[(codes.DCM.Finding.value, "TEXT")]
    assert answer.TextValue == f"Question: Is there a bleed? <b>bold</b>\nAnswer: {final.text}"
    assert {r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in answer.ContentSequence} == set(read)
    comments = [i.TextValue for i in content if i.ConceptNameCodeSequence[0].CodeValue == codes.DCM.Comment.value]
    assert len(comments) == len(findings) and all(c.startswith("Report check (") for c in comments)
    assert name[(codes.DCM.DeviceObserverName.value, "TEXT")].TextValue == "Loupe"
    algorithm = name[(codes.DCM.AlgorithmName.value, "TEXT")].TextValue
    assert algorithm and "/" not in algorithm  # the model's name, never the server's path to it
    assert [e.detail for e in service.store.audit_events(case_id) if e.action == "case.send"] == \
        [{"answers": 1, "findings": len(findings)}]


@pytest.mark.browser
def test_a_pacs_series_in_a_real_browser_as_reader_and_outsider(pacs, tmp_path, tiny_model_dir,
                                                                chromium):  # noqa: F811
    """ana searches the PACS (a hostile search is refused and shown as text), opens the
    CT, moves to a slice (fetched then) and is told why nothing can be sent yet; bob, who is no reader, is
    offered no source and gets 'not found' from the API."""
    from playwright.sync_api import expect, sync_playwright

    url, folder, ct = pacs
    hostile = '<img src=x onerror="document.title=1">'
    users = {"ana": "user", "bob": "user"}
    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), users) as served, sync_playwright() as pw:
        served.service.store.add_source(None, "pacs", "dicomweb", url, "medical", ("user:ana",))
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, served.url, "ana")
        page.get_by_role("tab", name="Medical").click()
        page.get_by_role("tab", name="From a data source").click()
        expect(page.locator("#medical-source input")).to_have_value("pacs", timeout=30_000)
        search = page.locator("#medical-item-search textarea, #medical-item-search input").first
        search.fill(hostile.replace(" ", ""))
        page.locator("#medical-list-items").click()
        expect(page.locator("#medical-status")).to_contain_text("Search by patient=", timeout=30_000)
        assert page.title() == "Loupe"  # refused, and shown as text
        search.fill("nobody")
        page.locator("#medical-list-items").click()
        expect(page.locator("#medical-status")).to_contain_text("No item matches", timeout=30_000)
        search.fill("CT")
        page.locator("#medical-list-items").click()
        expect(page.locator("#medical-status")).to_contain_text("1 item found", timeout=30_000)
        expect(page.locator("#medical-item input")).to_have_value(re.compile(f"CT .* {SLICES} images"))
        page.locator("#medical-open-item").click()
        expect(page.locator("#medical-status")).to_contain_text("opened from pacs", timeout=60_000)
        expect(page.locator("#medical-viewer")).to_contain_text("This series stays in the PACS: 12 slices")
        status = page.locator("#medical-viewer .loupe-stack-status")
        expect(status).to_contain_text(f"Image 1 of {SLICES} · CT", timeout=30_000)
        reads = len(instance_reads(folder))
        screen = page.locator("#medical-viewer .loupe-stack-screen").bounding_box()
        page.mouse.move(screen["x"] + screen["width"] / 2, screen["y"] + screen["height"] / 2)
        for shown in (2, 3):  # the wheel, one slice at a time
            page.mouse.wheel(0, 120)
            expect(status).to_contain_text(f"Image {shown} of {SLICES}", timeout=30_000)
        page.wait_for_timeout(1000)
        # those slices, fetched when moved to (or still held by a job worker from an earlier view), none ahead
        ordered = sorted(ct, key=lambda ds: float(ds.ImagePositionPatient[2]))
        assert set(instance_reads(folder)[reads:]) <= {ordered[1].SOPInstanceUID, ordered[2].SOPInstanceUID}
        page.get_by_text("Send to PACS").first.click()
        page.locator("#medical-send-pacs").click()
        expect(page.locator("#medical-send-status textarea")).to_have_value(
            "⚠️ This case has no answer and no report-check finding to send.", timeout=30_000)
        assert page.title() == "Loupe"
        page.screenshot(path=str(ARTIFACTS / "pacs-series-opened.png"), full_page=True)
        page.context.clear_cookies()

        _login(page, served.url, "bob")
        page.get_by_role("tab", name="Medical").click()
        page.get_by_role("tab", name="From a data source").click()
        page.locator("#medical-source input").click()
        expect(page.get_by_role("option", name="pacs")).to_have_count(0)
        browser.close()
        refused = served.client("bob").predict("pacs", f"{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}", "",
                                               api_name="/medical_open_item")
        assert refused[5] == "⚠️ Data source not found." and refused[6] == {"__type__": "update"}


def test_the_batch_de_identifier_takes_a_pacs_series_as_its_input(service, pacs, tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    url, _, ct = pacs
    item = f"pacs:{ct[0].StudyInstanceUID}/{ct[0].SeriesInstanceUID}"
    env = {"LOUPE_HOME": str(service.settings.home), "LOUPE_DATABASE_URL": ""}

    def run(*args: str):
        return CliRunner().invoke(cli, ["dicom", "deid", *args], env=env, catch_exceptions=False)

    refused = run(item, "--out", str(tmp_path / "bob"), "--user", "bob")
    assert refused.exit_code != 0 and "Data source not found" in refused.output
    assert not list((tmp_path / "bob").rglob("*.dcm"))
    done = run(item, "--out", str(tmp_path / "out"), "--user", "ana", "--summary", str(tmp_path / "summary.json"))
    assert done.exit_code == 0, done.output
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == SLICES and not list((tmp_path / "out").glob(".tmp*"))  # the fetched copies are gone
    assert not any(part.encode() in p.read_bytes() for p in written for part in PATIENT)
    exported = zipfile.ZipFile(io.BytesIO(service.export_case(
        service.user("ana"), service.open_item(service.user("ana"), "pacs", item[5:]), "zip")[0]))
    uids = {pydicom.dcmread(io.BytesIO(exported.read(n))).SOPInstanceUID for n in exported.namelist()}
    assert {pydicom.dcmread(p).SOPInstanceUID for p in written} == uids  # one installation, one mapping
    events = [e.detail for e in service.store.audit_events() if e.action == "source.read"]
    assert {"source": "pacs", "instances": SLICES, "via": "cli deid"} in events


def test_check_reports_reads_each_reports_study_from_the_pacs_by_accession_number(service, pacs, tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    url, _, _ = pacs
    study = ct_series(3)
    for ds in study:
        ds.AccessionNumber, ds.ImageLaterality = "RPT-1", "L"
    store(url, study)
    reports = tmp_path / "reports.jsonl"
    same = {"findings": "Right pleural effusion.", "impression": "Right pleural effusion."}
    reports.write_text("".join(json.dumps({"id": rid, **same}) + "\n" for rid in ("RPT-1", "RPT-2", "../x")))
    env = {"LOUPE_HOME": str(service.settings.home), "LOUPE_DATABASE_URL": ""}

    def run(out: str, user: str):
        return CliRunner().invoke(cli, ["check-reports", str(reports), "--out", str(tmp_path / out), "--images",
                                        "pacs:", "--user", user], env=env, catch_exceptions=False)

    refused = run("bob.jsonl", "bob")
    assert refused.exit_code != 0 and "Data source not found" in refused.output
    done = run("out.jsonl", "ana")
    assert done.exit_code == 0, done.output
    kinds = {r["id"]: {f["kind"] for f in r["findings"]}
             for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert "laterality" in kinds["RPT-1"]  # its study in the PACS says left
    assert "laterality" not in kinds["RPT-2"] and "laterality" not in kinds["../x"]  # no study found
    assert not list(tmp_path.glob(".tmp*"))  # the fetched studies are gone
    events = [e.detail for e in service.store.audit_events() if e.action == "source.read"]
    assert {"source": "pacs", "studies": 1, "via": "cli check-reports"} in events
