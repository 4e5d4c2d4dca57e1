"""De-identification: every Basic Profile attribute of Table E.1-1 handled, at any depth; consistent
UIDs; date shifting; a valid file out; nothing identifying left in its bytes."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from loupe.domains.medical.deid.deidentify import Deidentifier, DeidOptions, resolve
from loupe.domains.medical.deid.profile import basic_profile

DICOM = Path(__file__).parents[1] / "data" / "medical" / "dicom"
SECRET = b"installation-secret-for-tests"
MARK = "QXSECRET"  # in every identifying value: must not survive anywhere
UID_ROOT = "1.2.826.0.1.3680043.99999"
_UID = re.compile(r"^2\.25\.\d+$")


def _value(vr: str, n: int) -> object:
    """A value of the VR that carries the marker where the VR can hold text."""
    if vr == "UI":
        return f"{UID_ROOT}.{n}"
    return {"DA": "20200102", "TM": "101010", "DT": "20200102101010", "AS": "042Y", "IS": "7", "DS": "1.5",
            "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 1.5, "FD": 1.5, "SV": 7, "UV": 7, "AT": 0x00100010,
            "OB": MARK.encode(), "OW": MARK.encode(), "UN": MARK.encode(), "OF": b"\x00" * 4, "OD": b"\x00" * 8,
            "OL": b"\x00" * 4, "OV": b"\x00" * 8, "CS": "QXSECRET", "AE": MARK, "SH": MARK, "UR": f"http://{MARK}",
            }.get(vr, f"{MARK}^{n}")


def _item(n: int) -> Dataset:
    """What a nested item carries: a name, a referenced instance UID, a private element."""
    item = Dataset()
    item.PatientName = f"{MARK}^nested{n}"
    item.ReferencedSOPInstanceUID = f"{UID_ROOT}.9{n}"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.add_new(0x00091001, "LO", f"{MARK} private nested")
    return item


def _every_attribute() -> tuple[Dataset, dict[int, tuple]]:
    """A dataset holding every exact-tag attribute of the table that pydicom's dictionary knows."""
    ds = Dataset()
    filled = {}
    for n, rule in enumerate(basic_profile().rules):
        if "x" in rule.tag or rule.tag == "PRIVATE" or rule.tag[:4] in ("0000", "0002"):
            continue  # wildcards and private below; command (0000) and file meta (0002) never sit in a dataset
        tag = Tag(int(rule.tag, 16))
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        value = Sequence([_item(n)]) if vr == "SQ" else _value(vr, n)
        ds.add_new(tag, vr, value)
        filled[int(tag)] = (rule, vr, value)
    ds.add_new(0x60003000, "OW", MARK.encode())  # Overlay Data: repeating group 60xx
    ds.add_new(0x50000010, "US", 7)  # Curve data, repeating group 50xx
    ds.add_new(0x00291010, "LO", f"{MARK} private")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return ds, filled


def _empty(elem) -> bool:  # noqa: ANN001 - a DataElement
    return elem.value in (None, "", b"") or (elem.VR == "SQ" and len(elem.value) == 0)


def test_every_basic_profile_attribute_is_handled_as_the_table_says():
    ds, filled = _every_attribute()
    assert len(filled) > 450  # nearly the whole table (a few tags are unknown to pydicom's dictionary)
    out, report = Deidentifier(DeidOptions(SECRET))(ds)
    outcomes = {}
    for tag, (rule, vr, value) in filled.items():
        action = resolve(rule, DeidOptions(SECRET), vr == "SQ")
        outcomes[action] = outcomes.get(action, 0) + 1
        elem = out.get(tag)
        if action == "remove":
            assert elem is None, rule.name
        elif action == "empty":
            assert elem is not None and _empty(elem), rule.name
        elif action in ("dummy", "uid") and vr != "SQ":
            assert elem is not None and not _empty(elem) and elem.value != value, rule.name
            if vr == "UI":
                assert _UID.match(str(elem.value)), rule.name
        elif action == "keep" and vr != "SQ":
            assert elem is not None and elem.value == value, rule.name
        if vr == "SQ" and elem is not None and len(elem.value):  # kept sequences were cleaned inside
            item = elem.value[0]
            assert MARK not in str(item.get("PatientName", "")) and 0x00091001 not in item, rule.name
            assert _UID.match(str(item.ReferencedSOPInstanceUID)), rule.name
    assert {"remove", "empty", "dummy", "uid"} <= set(outcomes)
    assert 0x60003000 not in out and 0x50000010 not in out and 0x00291010 not in out
    assert report.private_removed >= 1 and report.actions["remove"] > 300
    assert MARK not in str(report.as_dict())  # the report names attributes, never values

    out.file_meta = pydicom.dataset.FileMetaDataset()
    out.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    written = io.BytesIO()
    out.save_as(written, enforce_file_format=True)
    assert MARK.encode() not in written.getvalue() and UID_ROOT.encode() not in written.getvalue()


def test_a_real_file_stays_valid_dicom_and_says_it_was_de_identified():
    source = pydicom.dcmread(DICOM / "CT_small.dcm")
    out, report = Deidentifier(DeidOptions(SECRET))(source)
    written = io.BytesIO()
    out.save_as(written, enforce_file_format=True)
    again = pydicom.dcmread(io.BytesIO(written.getvalue()))
    assert again.SOPClassUID == source.SOPClassUID  # the kind of object is not identifying
    assert again.SOPInstanceUID != source.SOPInstanceUID and _UID.match(again.SOPInstanceUID)
    assert again.file_meta.MediaStorageSOPInstanceUID == again.SOPInstanceUID
    assert again.PatientIdentityRemoved == "YES" and "Basic Profile" in again.DeidentificationMethod
    assert again.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert again.LongitudinalTemporalInformationModified == "REMOVED"
    assert str(again.PatientName) == "" and str(source.PatientName) not in written.getvalue().decode("latin-1")
    assert (again.pixel_array == source.pixel_array).all()  # pixels untouched by header de-identification
    assert "Patient's Name" in report.as_dict()["attributes"]["empty"]  # Z in Table E.1-1 (2026d)


def test_uids_map_consistently_within_an_installation_and_differently_across_installations():
    a = pydicom.dcmread(DICOM / "MR_small.dcm")
    b = copy.deepcopy(a)
    b.SOPInstanceUID = pydicom.uid.generate_uid()  # another image of the same study and series
    ours = Deidentifier(DeidOptions(SECRET))
    out_a, _ = ours(a)
    out_b, _ = ours(b)
    assert out_a.StudyInstanceUID == out_b.StudyInstanceUID and out_a.SeriesInstanceUID == out_b.SeriesInstanceUID
    assert out_a.SOPInstanceUID != out_b.SOPInstanceUID
    other, _ = Deidentifier(DeidOptions(b"another installation"))(a)
    assert other.StudyInstanceUID != out_a.StudyInstanceUID


def test_date_shifting_keeps_intervals_per_patient():
    source = pydicom.dcmread(DICOM / "CT_small.dcm")
    source.StudyDate, source.AcquisitionDate = "20040119", "20040121"
    out, report = Deidentifier(DeidOptions(SECRET, shift_dates=True))(source)
    study = pydicom.valuerep.DA(out.StudyDate)
    acquired = pydicom.valuerep.DA(out.AcquisitionDate)
    assert out.StudyDate != "20040119" and (acquired - study).days == 2
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    again, _ = Deidentifier(DeidOptions(SECRET, shift_dates=True))(source)
    assert again.StudyDate == out.StudyDate  # the same patient, the same shift
    assert report.actions["shift"] >= 2


@pytest.mark.parametrize(("code", "sequence", "action"), [
    ("X", False, "remove"), ("Z", False, "empty"), ("D", False, "dummy"), ("U", False, "uid"), ("K", False, "keep"),
    ("X/Z", False, "empty"), ("X/D", False, "dummy"), ("Z/D", False, "dummy"), ("X/Z/D", False, "dummy"),
    ("X/Z/U*", True, "clean_sequence"), ("X/Z/U*", False, "uid"),
])
def test_combined_codes_resolve_towards_a_valid_file(code, sequence, action):
    from loupe.domains.medical.deid.profile import Rule

    assert resolve(Rule("00000000", "x", code), DeidOptions(SECRET), sequence) == action


def test_the_installation_secret_is_made_once_and_kept_private(tmp_path):
    import stat

    from loupe.core.secrets import installation_secret

    first = installation_secret(tmp_path, "deid")
    assert len(first) == 32 and installation_secret(tmp_path, "deid") == first
    assert installation_secret(tmp_path, "other") != first
    key = tmp_path / "secrets" / "deid.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in key.parent.iterdir()) == ["deid.key", "other.key"]  # no temporary file left
