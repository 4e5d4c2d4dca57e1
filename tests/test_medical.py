"""The medical domain: DICOM uploads de-identified before storage, burned-in text flagged, what the
model sees of CT and multi-frame studies, bad files refused with nothing stored."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import InputRejected
from loupe.core.plugins import AssetView, Budgets, IngestedAsset
from loupe.domains.medical import MedicalDomain
from loupe.domains.medical.viewer import studies_html
from loupe.domains.medical.windowing import PRESETS, apply_window

DICOM = Path(__file__).parents[1] / "data" / "medical" / "dicom"
LIMITS = Budgets(50 * 2**20, 89_478_485)
# Searched for in every stored byte. (Institution and station names are checked on the header instead:
# "TOSHIBA" is also part of the kept, non-identifying Manufacturer.)
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
               "ReferringPhysicianName", "StudyInstanceUID", "SOPInstanceUID")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):  # noqa: ANN201 - name -> the sample's assets, ingested once for the module
    """The 30-frame ultrasound takes seconds to ingest (text found in each frame): tests that only read a
    sample's assets share one ingest."""
    import functools

    medical = MedicalDomain()
    medical.configure(Settings(home=tmp_path_factory.mktemp("medical-home"), database_url=None))
    return functools.cache(lambda name: tuple(medical.ingest(DICOM / name, LIMITS)))


@pytest.fixture
def domain(tmp_path) -> MedicalDomain:
    medical = MedicalDomain()
    medical.configure(Settings(home=tmp_path, database_url=None))
    return medical


def _phi(ds: pydicom.Dataset) -> list[str]:
    return [str(ds.get(k)) for k in IDENTIFYING if ds.get(k) not in (None, "") and len(str(ds.get(k))) >= 4]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "DX_chest_MONOCHROME1.dcm", "CT_693_J2KI.dcm"])
def test_nothing_identifying_is_kept_in_any_asset_or_its_metadata(domain, name):
    original = pydicom.dcmread(DICOM / name)
    phi = _phi(original)
    assert phi  # the sample files do carry identifying values
    assets = domain.ingest(DICOM / name, LIMITS)
    assert [a.media_type for a in assets] == ["application/dicom", "image/png"]
    for asset in assets:
        stored = asset.data.decode("latin-1") + json.dumps(asset.meta)
        assert not [value for value in phi if value in stored], name
    kept = pydicom.dcmread(io.BytesIO(assets[0].data))
    assert kept.PatientIdentityRemoved == "YES" and not any(e.tag.is_private for e in kept)
    for keyword in ("InstitutionName", "StationName"):  # emptied, removed or given a dummy by Table E.1-1
        assert kept.get(keyword) in (None, "", "ANONYMIZED"), keyword
    assert np.array_equal(kept.pixel_array, original.pixel_array)  # the pixels as acquired
    assert Image.open(io.BytesIO(assets[1].data)).info == {}  # the display PNG carries no metadata


def test_ct_is_shown_to_the_model_in_three_windows(domain):
    assets = domain.ingest(DICOM / "CT_small.dcm", LIMITS)
    context = domain.context(assets, "Is there a nodule?")
    (image,) = context.images
    hu = pydicom.dcmread(DICOM / "CT_small.dcm").pixel_array.astype(np.float32) - 1024
    rgb = np.asarray(image)
    assert np.array_equal(rgb[..., 0], apply_window(hu, PRESETS["lung"]))
    assert np.array_equal(rgb[..., 2], apply_window(hu, PRESETS["bone"]))
    assert "Modality: CT" in context.extra_text and "red lung" in context.extra_text


def test_a_multiframe_study_shows_evenly_spaced_frames_and_reports_progress(domain):
    steps: list[tuple[int, int]] = []
    assets = domain.ingest(DICOM / "MR_enhanced_10frame.dcm", LIMITS, lambda d, t: steps.append((d, t)))
    views = [a for a in assets if a.meta["kind"] == "view"]
    assert len(views) == 10 and steps[-1] == (10, 10)
    context = domain.context(assets, "What changes between frames?")
    assert len(context.images) == 3 and "frame 1/10" in context.extra_text and "frame 10/10" in context.extra_text


def test_a_zipped_series_becomes_one_case_with_its_slices_in_order(domain):
    base = pydicom.dcmread(DICOM / "CT_small.dcm")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for z in (20.0, 0.0, 10.0):
            ds = copy.deepcopy(base)
            ds.ImagePositionPatient = [0.0, 0.0, z]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            archive.writestr(f"{base.PatientName}/slice{z}.dcm", buffer.getvalue())  # PHI in the member names
    assets = domain.ingest(io.BytesIO(out.getvalue()), LIMITS)
    dicoms = [pydicom.dcmread(io.BytesIO(a.data)) for a in assets if a.media_type == "application/dicom"]
    assert [float(ds.ImagePositionPatient[2]) for ds in dicoms] == [0.0, 10.0, 20.0]
    assert len({ds.SeriesInstanceUID for ds in dicoms}) == 1  # remapped consistently
    assert str(base.PatientName) not in json.dumps([a.meta for a in assets])
    exported = zipfile.ZipFile(io.BytesIO(domain.export(assets, "zip")))
    assert exported.namelist() == ["image_0001.dcm", "image_0002.dcm", "image_0003.dcm"]


def _with_burned_in_name() -> bytes:
    """A CT slice with a name written into its pixels, as old scanners and secondary captures do."""
    ds = pydicom.dcmread(DICOM / "CT_693_J2KI.dcm")
    ds.decompress()
    pixels = ds.pixel_array.copy()
    canvas = Image.new("L", (pixels.shape[1], pixels.shape[0]), 0)
    ImageDraw.Draw(canvas).text((20, 20), "DOE^JOHN 1960", fill=255, font=ImageFont.load_default(size=28))
    pixels[np.asarray(canvas) > 128] = pixels.max()
    ds.PixelData = pixels.tobytes()
    ds.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_text_burned_into_the_pixels_is_flagged_without_keeping_the_text(domain):
    assets = domain.ingest(io.BytesIO(_with_burned_in_name()), LIMITS)
    (view,) = [a for a in assets if a.meta["kind"] == "view"]
    assert view.meta["burned_in_annotation"] is True
    (region,) = view.meta["text_regions"]
    x0, y0, x1, y1 = region["box"]
    assert x0 < 40 and y0 < 40 and x1 > 150 and region["confidence"] > 0.5  # where the name was written
    assert "DOE" not in json.dumps(view.meta)
    shown = studies_html([AssetView(1, "/case-assets/1", "image/png", view.width, view.height, "", view.meta, 5)])
    assert "burned into these pixels" in shown and "Text found in the pixels of the frames below" in shown
    assert shown.count("<rect") == 1 and "/case-export/5/zip" in shown
    assert 'data-stack="/case-stack/5"' in shown  # the series viewer above, the frame with text below


def test_the_batch_deid_masks_text_burned_into_the_pixels(tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli
    from loupe.core.ocr.regions import find_text_regions
    from loupe.domains.medical.dicom_image import frame_values
    from loupe.domains.medical.windowing import display

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "slice.dcm").write_bytes(_with_burned_in_name())
    original = pydicom.dcmread(tmp_path / "in" / "slice.dcm").pixel_array
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "dicom", "deid", str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out"), "--mask-text"], catch_exceptions=False)
    assert json.loads(result.output.strip().splitlines()[-1])["files_with_text_masked"] == 1
    (written,) = (tmp_path / "out").rglob("*.dcm")
    ds = pydicom.dcmread(written)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113101"]
    found = find_text_regions(display(ds, frame_values(ds)))  # the finder may still see shapes in the anatomy
    assert not [r for r in found if r.box[1] < 56 and r.box[0] < 245]  # nothing where the name was (16,21)-(245,55)
    changed = np.argwhere(ds.pixel_array != original)
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    assert y0 >= 10 and x0 >= 10 and y1 < 70 and x1 < 260  # only around the name (written at 20, 20)
    assert (ds.pixel_array[y0:y1 + 1, x0:x1 + 1] == original.min()).mean() > 0.9


@pytest.mark.parametrize(("name", "message"), [
    ("NM_JPEG_lossy_12bit.dcm", "no installed decoder"),
    ("malformed/MR_truncated.dcm", "truncated"),
    ("malformed/CT_no_meta.dcm", "not a DICOM file"),
])
def test_bad_files_are_refused_and_nothing_is_stored(tmp_path, name, message):
    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    user = service.store.add_user("ana", "ana-password-12", "user")
    with pytest.raises(InputRejected, match=message):
        service.create_case(user, "medical", DICOM / name, "study")
    assert service.store.list_cases(user) == [] and not any(service.settings.assets_dir.rglob("*.*"))


def test_a_structured_report_is_kept_as_cleaned_text(tmp_path):
    ds = pydicom.dcmread(DICOM / "SR_basic_text_report.dcm")
    ds.PatientName, ds.PatientID = "DOE^JANE", "MRN4471"
    report_text = ds.ContentSequence[4].ContentSequence[0]
    report_text.TextValue = "Jane Doe (MRN4471) seen 2021-03-04: small left pleural effusion."
    data = io.BytesIO()
    ds.save_as(data)
    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    user = service.store.add_user("ana", "ana-password-12", "user")
    case_id = service.create_case(user, "medical", io.BytesIO(data.getvalue()), "report")
    (asset,) = service.case_assets(user, case_id)
    text = asset.meta["text"]
    assert asset.media_type == "text/plain" and asset.data.decode() == text
    assert "Report Text: [removed] ([removed]) seen [date]: small left pleural effusion." in text
    assert "Recording Observer's Name: [name removed]" in text and "Enter text" not in text
    for secret in ("DOE", "Jane", "MRN4471", "2021", "1.2.276"):
        assert secret.lower() not in json.dumps(asset.meta).lower()
    shown = studies_html([AssetView(1, "/case-assets/1", "text/plain", None, None, "", asset.meta, case_id)])
    assert "Structured report" in shown and "small left pleural effusion" in shown
    with pytest.raises(InputRejected, match="structured report and no image"):
        MedicalDomain().context([asset], "Is there an effusion?")
    with zipfile.ZipFile(io.BytesIO(service.export_case(user, case_id, "zip")[0])) as archive:
        assert archive.read("structured_report.txt").decode() == text


def test_case_tools_and_exports_run_in_a_worker_under_the_job_limits(tmp_path):
    import jobwork

    from loupe.core.errors import AccessDenied
    from loupe.core.jobs import JobFailed

    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    ann = service.store.add_user("ann", "ann-password-12", "user")
    bob = service.store.add_user("bob", "bob-password-12", "user")
    case_id = service.create_case(ann, "medical", DICOM / "CT_small.dcm", "ct")
    pid, sizes = service.run_on_case(ann, case_id, "Looking", jobwork.where_read)
    assert pid != os.getpid() and sizes == [len(a.data) for a in service.case_assets(ann, case_id)] and sizes[0] > 0
    facts, values = service.view_case(ann, case_id, "stack_frame", (0,))  # the viewer's frame, from a worker
    assert (facts["rows"], facts["columns"], facts["dtype"]) == (128, 128, "int16") and len(values) == 128 * 128 * 2
    with pytest.raises(AccessDenied):
        service.view_case(bob, case_id, "stack_frame", (0,))
    assert service.store.audit_events()[-1].action == "case.denied"
    strict = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused",
                                        budgets=Budgets(job_seconds=2)))  # the same home, a tight time budget
    with pytest.raises(JobFailed, match="Showing the image used more than 2 s .*LOUPE_JOB_SECONDS"):
        strict.run_on_case(ann, case_id, "Showing the image", jobwork.spin_on)
    with zipfile.ZipFile(io.BytesIO(service.export_case(ann, case_id, "zip")[0])) as archive:
        assert archive.namelist()  # the export, made in a worker, is whole


def test_asking_about_a_study_through_the_app(tmp_path, tiny_model_dir):
    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    user = service.store.add_user("ana", "ana-password-12", "user")
    case_id = service.create_case(user, "medical", DICOM / "DX_chest_MONOCHROME1.dcm", "chest")
    final = list(service.ask(user, case_id, "Describe the findings on this chest radiograph."))[-1]
    assert final.run is not None and final.run.visual_tokens > 0 and final.run.extra["views_read"] == [0]


def _data_uri_image(html: str) -> Image.Image:
    import base64
    import re

    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_the_viewer_gets_modality_values_placed_in_mm(domain):
    """The series viewer's frames are the modality values (HU for a CT: stored values × slope + intercept),
    with the spacing that makes its lengths millimetres and the file's own window; every frame of a
    multi-frame file, and none past the last."""
    from loupe.domains.medical.stack import stack_frame, stack_info

    ct = domain.ingest(DICOM / "CT_small.dcm", LIMITS)
    source = pydicom.dcmread(DICOM / "CT_small.dcm")
    facts, data = stack_frame(ct, 0)
    hu = np.frombuffer(data, "<i2").reshape(facts["rows"], facts["columns"])
    expected = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    assert np.array_equal(hu, expected) and facts["spacing"] == [float(v) for v in source.PixelSpacing]
    assert stack_info(ct)["count"] == 1 and {"brain", "lung", "bone"} <= set(stack_info(ct)["presets"])
    mr = domain.ingest(DICOM / "MR_enhanced_10frame.dcm", LIMITS)
    info = stack_info(mr)
    assert info["count"] == 10 and info["modality"] == "MR" and info["presets"] == {} and info["prefetch"] > 0
    last, _ = stack_frame(mr, 9)
    assert last["rows"] > 0
    with pytest.raises(InputRejected, match="no image 11"):
        stack_frame(mr, 10)


def test_the_viewer_reads_the_open_case_through_the_access_check(tmp_path):
    """The series viewer's routes: the owner gets the series (audited once as a view) and its frames; a second
    user and a visitor get nothing, and the refusal is audited."""
    from gradio_client import handle_file
    from webapp import serve

    with serve(tmp_path / "home", None, {"ann": "user", "bob": "user"}) as served:
        ann = served.client("ann")
        upload = tmp_path / "ct.dcm"
        upload.write_bytes((DICOM / "CT_small.dcm").read_bytes())
        ann.predict(handle_file(str(upload)), "ct", api_name="/medical_create_case")
        http = served.http("ann")
        info = http.get("/case-stack/1/stack.json").json()
        assert info["count"] == 1 and info["modality"] == "CT" and "lung" in info["presets"]
        frame = http.get("/case-stack/1/0.bin")
        facts = json.loads(frame.headers["x-loupe-frame"])
        assert frame.status_code == 200 and len(frame.content) == facts["rows"] * facts["columns"] * 2
        assert http.get("/case-stack/1/0/tags.json").json()["rows"]
        assert http.get("/case-stack/1/5.bin").status_code == 422  # no such frame: said
        events = [e.action for e in served.service.store.audit_events(1)]
        assert events.count("case.view") == 1  # the view, not each frame
        for path in ("/case-stack/1/stack.json", "/case-stack/1/0.bin", "/case-stack/1/0/tags.json"):
            assert served.http("bob").get(path).status_code == 404
            assert served.http().get(path).status_code == 401
        assert "case.denied" in [e.action for e in served.service.store.audit_events()]

def test_the_report_panel_asks_the_model_when_told(tmp_path, tiny_model_dir):
    from gradio_client import handle_file
    from webapp import serve

    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"ann": "user"}) as served:
        ann = served.client("ann")
        upload = tmp_path / "dx.dcm"
        upload.write_bytes((DICOM / "DX_chest_MONOCHROME1.dcm").read_bytes())
        created = ann.predict(handle_file(str(upload)), "chest", api_name="/medical_create_case")
        case_id = int(created[5].split()[1])  # "Case N created.": the case on screen, as the page sends it
        asked = []
        vlm = served.service.slot.get()
        chat = vlm.chat
        vlm.chat = lambda messages, options: asked.append(messages) or chat(messages, options)  # count, then answer
        report = "FINDINGS: Small right pleural effusion.\nIMPRESSION: Small left pleural effusion."
        shown, _ = ann.predict(case_id, report, True, None, api_name="/medical_check_report")
        assert "Checked by the rules and by" in shown and "laterality" in shown
        # The model's vote is said either way, naming the model as people do: no server path.
        assert re.search(r"which found (an error|no error)[^<]*of 3 prompts", shown), shown
        assert str(tiny_model_dir("smolvlm")) not in shown and "/tmp/" not in shown
        assert len(asked) >= 3 and all(len(m[0].images) == 1 for m in asked)  # the study's image with each prompt


def test_the_report_panel_marks_flagged_spans_and_keeps_versions_and_sign_off(tmp_path):
    from gradio_client import handle_file
    from webapp import serve

    with serve(tmp_path / "home", None, {"ann": "user", "rita": "reviewer"}) as served:
        ann = served.client("ann")
        upload = tmp_path / "dx.dcm"
        upload.write_bytes((DICOM / "DX_chest_MONOCHROME1.dcm").read_bytes())  # Image Laterality: L
        created = ann.predict(handle_file(str(upload)), "chest", api_name="/medical_create_case")
        case_id = int(created[5].split()[1])  # "Case N created.": the case on screen, as the page sends it
        report = "FINDINGS: Small right pleural effusion.\nIMPRESSION: Small left pleural effusion."
        shown, read = ann.predict(case_id, report, False, None, api_name="/medical_check_report")
        assert shown.count('<mark class="loupe-flag"') >= 2 and "laterality" in shown and "Saved" in shown
        assert "the image is of the left side" in shown  # the study's own laterality, from its header
        assert "reviewer role" in ann.predict(case_id, read, api_name="/medical_sign_off_report")
        user = served.service.user("ann")
        [case] = served.service.store.list_cases(user, domain="medical")
        latest = served.service.store.latest_report(user, case.id)
        assert latest.text == report and {f["kind"] for f in latest.findings} == {"laterality"}
        actions = [e.action for e in served.service.store.audit_events(case.id)]
        assert "report.save" in actions and "signoff.denied" in actions
        # The race of issue 18: rita checks (reads) version 2, ann saves version 3, rita signs off: refused.
        served.service.store.share_case(user, case.id, "rita")
        rita = served.client("rita")
        rita.predict(case.id, api_name="/medical_open_case")
        shown, read = rita.predict(case.id, report, False, None, api_name="/medical_check_report")
        assert "Saved" in shown
        ann.predict(case.id, "FINDINGS: None.\nIMPRESSION: Normal.", False, None, api_name="/medical_check_report")
        assert "changed since you read it" in rita.predict(case.id, read, api_name="/medical_sign_off_report")
        assert served.service.store.latest_report(user, case.id).signed_off_by is None
        _, read = rita.predict(case.id, report, False, None, api_name="/medical_check_report")  # she reads (saves)
        assert "Signed off by you" in rita.predict(case.id, read, api_name="/medical_sign_off_report")  # the newest


def test_the_report_panel_marks_both_sides_of_a_contradiction():
    """'effusion' in the findings is flagged, and the impression's 'No pleural effusion.' it contradicts is
    marked too (apart), and named in the list."""
    from loupe.domains.medical.report_panel import check_text, marked

    report = "FINDINGS: Large left pleural effusion. Heart size normal.\nIMPRESSION: No pleural effusion."
    findings = check_text(report, [])
    (flag,) = [f for f in findings if f["kind"] == "negation" and f["section"] == "findings"]
    section, start, end = flag["related"]
    assert section == "impression" and report.split("IMPRESSION: ")[1][start:end] == "No pleural effusion."
    shown = marked(report, findings)
    assert '<mark class="loupe-flag loupe-flag-other" title="contradicted by the findings: ' in shown
    assert re.search(r'<mark class="loupe-flag loupe-flag-other"[^>]*>No pleural effusion\.</mark>', shown)
    assert re.search(r'<mark class="loupe-flag"[^>]*>pleural effusion</mark>', shown)
    assert "against “No pleural effusion.” in the impression" in shown


@pytest.mark.parametrize(("name", "expected"), [
    ("DX_chest_MONOCHROME1.dcm", "Is there a pleural effusion or a pneumothorax?"),
    ("CR_cspine_MONOCHROME1_6154.dcm", "Is there a fracture or a dislocation?"),
    ("CT_small.dcm", "Is there any haemorrhage, mass or fracture?"),
    ("MR_small.dcm", "Is there any mass or abnormal signal?"),
    ("US_multiframe_30fr_JPEG_baseline.dcm", "Which organ or structure is shown?"),
])
def test_the_ready_made_questions_fit_the_modality(name, expected, ingested):
    """A CT, an ultrasound or a radiograph of the spine is not offered chest X-ray questions."""
    from loupe.domains.medical import CHEST, prompts_for

    assets = list(ingested(name))
    offered = prompts_for(assets)
    assert expected in offered
    assert (offered == CHEST) == name.startswith("DX_chest")
    assert "Describe the tissue." in prompts_for([IngestedAsset(b"", "image/png", 1, 1, {"kind": "view",
                                                                                          "Modality": "SM"})])


def test_the_viewer_starts_from_the_images_own_window_with_its_modalitys_presets(domain):
    """A CR opens in its own window (1600/2800) without the Hounsfield presets (a CT's brain window would
    show it black); a CT offers them."""
    from loupe.domains.medical.stack import stack_info

    cr = stack_info(domain.ingest(DICOM / "CR_cspine_MONOCHROME1_6154.dcm", LIMITS))
    assert cr["window"] == [1600, 2800] and cr["presets"] == {} and cr["modality"] == "CR"
    ct = stack_info(domain.ingest(DICOM / "CT_small.dcm", LIMITS))
    assert {"brain", "lung", "bone"} <= set(ct["presets"]) and ct["presets"]["lung"] == [-600, 1500]

def test_study_wide_warnings_are_said_once_and_lossy_compression_is_flagged(ingested):
    """A burned-in-text flag for the whole study is said once above its thumbnails, not under each; a lossy
    JPEG image says it was compressed with loss (with its ratio, when the header gives it); a CT stored raw
    does not."""
    def shown(name: str) -> str:
        views = [a for a in ingested(name) if a.meta["kind"] == "view"]
        return studies_html([AssetView(n, f"/case-assets/{n}", "image/png", v.width, v.height, "", v.meta, 5)
                             for n, v in enumerate(views, 1)]), views

    html_us, us = shown("US_multiframe_30fr_JPEG_baseline.dcm")
    assert len(us) > 1 and all(v.meta["lossy"] for v in us)  # JPEG baseline: lossy
    assert html_us.count("Lossy compressed") == 1
    if us[0].meta["burned_in_annotation"]:
        assert html_us.count("burned into these pixels") == 1
    with_text = sum(1 for v in us if v.meta["text_regions"])
    assert with_text > 4 and html_us.count("<figure") == 4  # the series viewer above; four outlined, not 30
    assert f"and of {with_text - 4} more (scroll to them above)" in html_us
    html_ct, (ct,) = shown("CT_small.dcm")
    assert "lossy" not in ct.meta and "Lossy compressed" not in html_ct


def test_anatomy_is_not_taken_for_burned_in_text(ingested):
    """The detector reads a head CT's skull as '0' and an ultrasound's sector as '9' (boxes of most of the
    image): not text. The ultrasound's real annotations (top left, bottom line) are still found."""
    (ct,) = [a for a in ingested("CT_693_J2KI.dcm") if a.meta["kind"] == "view"]
    assert ct.meta["text_regions"] == []
    us = [a for a in ingested("US_multiframe_30fr_JPEG_baseline.dcm") if a.meta["kind"] == "view"]
    boxes = [r["box"] for r in us[0].meta["text_regions"]]
    assert boxes and all(y1 - y0 <= 0.2 * us[0].height for _, y0, _, y1 in boxes)
    assert any(y0 < 5 for _, y0, _, _ in boxes) and any(y1 > 0.9 * us[0].height for _, _, _, y1 in boxes)
