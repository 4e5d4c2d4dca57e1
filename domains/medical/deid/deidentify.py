"""De-identification by PS3.15's Basic Application Level Confidentiality Profile, driven by Table E.1-1.

Every attribute the table lists gets its action, at every depth of every sequence; private attributes
go; UIDs are replaced by UIDs derived from the original and a per-installation secret, so the same
study de-identified twice (or its series sent separately) still fits together; dates can be shifted
by a per-patient offset instead of being removed (the Retain Longitudinal Temporal Information with
Modified Dates option). Combined codes are resolved towards a valid file: where the table allows a
choice, an attribute is emptied (Z) or given a dummy (D) rather than removed, so Type 1 and Type 2
attributes stay present.

The report names what was done to which attributes, never their values.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import uuid
from collections import Counter
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .profile import Profile, Rule, basic_profile

METHOD = "Loupe, PS3.15 Basic Profile (Table E.1-1, {edition})"  # LO: at most 64 characters
# CID 7050 (De-identification Method): the profile and the options applied.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
MAX_SHIFT_DAYS = 3650

_DUMMY_TEXT = {"PN": "ANONYMOUS", "AE": "ANONYMOUS", "CS": "ANONYMIZED", "SH": "ANONYMIZED", "LO": "ANONYMIZED",
               "ST": "ANONYMIZED", "LT": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "UR": "ANONYMIZED",
               "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0"}
_NUMERIC = {"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"}


@dataclass(frozen=True)
class DeidOptions:
    secret: bytes  # per installation: keys UID replacement and date shifts
    shift_dates: bool = False  # keep intervals between dates, moved by a per-patient number of days


@dataclass
class DeidReport:
    """What was done, by attribute name (never a value)."""

    actions: Counter = field(default_factory=Counter)  # action -> count
    attributes: dict[str, set[str]] = field(default_factory=dict)  # action -> attribute names
    private_removed: int = 0
    burned_in_annotation: bool = False  # the header says text is burned into the pixels

    def note(self, action: str, name: str) -> None:
        self.actions[action] += 1
        self.attributes.setdefault(action, set()).add(name)

    def as_dict(self) -> dict:
        return {"actions": dict(self.actions), "private_removed": self.private_removed,
                "burned_in_annotation": self.burned_in_annotation,
                "attributes": {k: sorted(v) for k, v in sorted(self.attributes.items())}}


def resolve(rule: Rule, options: DeidOptions, is_sequence: bool) -> str:
    """One action for a rule: remove, empty, dummy, uid, keep, shift or clean_sequence."""
    if options.shift_dates and rule.options.get("retain_longitudinal_modified_dates") == "C":
        return "shift"
    code = rule.basic
    if code == "X/Z/U*":  # a sequence of references: keep it, with every UID inside replaced
        return "clean_sequence" if is_sequence else "uid"
    if code.endswith("D"):  # D, X/D, Z/D, X/Z/D: a dummy keeps Type 1 attributes valid
        return "dummy"
    if code in ("Z", "X/Z"):
        return "empty"
    return {"X": "remove", "U": "uid", "K": "keep", "C": "remove"}.get(code, "remove")


class Deidentifier:
    def __init__(self, options: DeidOptions, profile: Profile | None = None) -> None:
        self.options = options
        self.profile = profile or basic_profile()

    def __call__(self, source: Dataset, in_place: bool = False) -> tuple[Dataset, DeidReport]:
        """A de-identified copy of ``source`` (or ``source`` itself, changed, with ``in_place``: no copy of
        the pixel data) and what was done to it."""
        ds = source if in_place else copy.deepcopy(source)
        report = DeidReport(burned_in_annotation=str(ds.get("BurnedInAnnotation", "")).upper() == "YES")
        shift = self._shift_days(source) if self.options.shift_dates else 0
        self._clean(ds, report, shift)
        self._mark(ds, shift)
        if hasattr(ds, "file_meta"):
            self._clean_file_meta(ds)
        return ds, report

    # -- the walk ---------------------------------------------------------------------------------
    def _clean(self, ds: Dataset, report: DeidReport, shift: int) -> None:
        # By tag, converting an element from its raw bytes only when its value is needed: most
        # elements are kept as read, and are written back as read.
        for tag in list(ds.keys()):
            if tag.is_private:
                del ds[tag]
                report.private_removed += 1
                continue
            if tag.group == 0:  # DIMSE command elements never belong in a stored object
                del ds[tag]
                report.note("remove", "command element")
                continue
            rule = self.profile.rule_for(tag)
            vr = ds.get_item(tag).VR or ds[tag].VR  # implicit-VR files name the VR only once converted
            if rule is None:
                if vr == "SQ":
                    for item in ds[tag].value:
                        self._clean(item, report, shift)
                continue
            action = resolve(rule, self.options, vr == "SQ")
            if action == "remove":
                del ds[tag]
            elif action != "keep" or vr == "SQ":
                self._apply(ds, ds[tag], action, report, shift)
            report.note(action, rule.name)

    def _apply(self, ds: Dataset, elem: DataElement, action: str, report: DeidReport, shift: int) -> None:
        """Any action but removal, on a converted element (sequences: their items are cleaned)."""
        if elem.VR == "SQ":
            if action in ("empty", "remove"):
                elem.value = Sequence()
            else:  # keep, dummy, uid, clean_sequence, shift: what is inside is cleaned by the same rules
                for item in elem.value:
                    self._clean(item, report, shift)
        elif action == "empty":
            elem.value = None
        elif action == "dummy":
            elem.value = self._dummy(elem)
        elif action == "uid":
            elem.value = self._uid_value(elem.value)
        elif action == "shift":
            elem.value = self._shifted(elem, shift)

    def _dummy(self, elem: DataElement) -> object:
        if elem.VR == "UI":
            return self._uid_value(elem.value)
        if elem.VR in _NUMERIC:
            return 0
        if elem.VR in _DUMMY_TEXT:
            return _DUMMY_TEXT[elem.VR]
        return b"\x00" * {"OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(elem.VR, 2)  # binary: zeros, nothing else

    def _uid_value(self, value: object) -> object:
        if value is None or value == "":
            return value
        if isinstance(value, str):
            return self.new_uid(value)
        return [self.new_uid(str(v)) for v in value]  # a multi-valued UID attribute

    def new_uid(self, uid: str) -> str:
        """A UUID-derived 2.25 UID (PS3.5 B.2) keyed by the installation's secret: the same input gives the
        same UID, and without the secret the original cannot be recovered or tested for."""
        digest = hmac.new(self.options.secret, uid.encode(), hashlib.sha256).digest()
        return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"

    def _shift_days(self, ds: Dataset) -> int:
        patient = f"{ds.get('PatientID', '')}|{ds.get('PatientName', '')}|{ds.get('PatientBirthDate', '')}"
        digest = hmac.new(self.options.secret, patient.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:4], "big") % MAX_SHIFT_DAYS + 1

    def _shifted(self, elem: DataElement, days: int) -> object:
        """Dates moved back by ``days``; times kept (whole days keep them right); unreadable values dummied."""
        if elem.VR not in ("DA", "DT") or elem.value in (None, ""):
            return elem.value if elem.VR == "TM" else self._dummy(elem)
        text = str(elem.value)
        try:
            day = dt.datetime.strptime(text[:8], "%Y%m%d") - dt.timedelta(days=days)
        except ValueError:
            return self._dummy(elem)
        return day.strftime("%Y%m%d") + (text[8:] if elem.VR == "DT" else "")

    # -- what the file says about itself ----------------------------------------------------------
    def _mark(self, ds: Dataset, shift: int) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD.format(edition=self.profile.edition)
        codes = [BASIC_PROFILE_CODE] + ([MODIFIED_DATES_CODE] if shift else [])
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift else "REMOVED"

    def _clean_file_meta(self, ds: Dataset) -> None:
        meta = ds.file_meta
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                        "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
            if keyword in meta:
                delattr(meta, keyword)
