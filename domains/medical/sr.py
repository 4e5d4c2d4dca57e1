"""DICOM structured reports (SR) as readable text, with identifiers taken out.

The Basic Profile removes the whole Content Sequence, so the text is read from the original and
cleaned the way PS3.15's Clean Structured Content option asks: person names, dates, times and UID
references are replaced; free text has the header's names (each of a name's alphabetic, ideographic
and phonetic groups too), identifiers, dates and dotted UIDs cut out wherever they appear. Free text
can still name someone the header does not: the viewer says so.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from loupe.core.errors import InputRejected

MAX_DEPTH = 32  # nesting a real report never reaches: a guard against crafted files
MAX_LINES = 5000
REMOVED = "[removed]"
# Header attributes whose values may turn up inside the report's free text.
IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
               "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
               "OperatorsName", "InstitutionName", "StudyID", "PatientAddress", "PatientTelephoneNumbers")
_RUN_OF_REMOVED = re.compile(re.escape(REMOVED) + r"(?:\s+" + re.escape(REMOVED) + ")+")
# Word edges where "_" counts as a separator too: "DOE_JOHN_19800101" hides a name and a date.
_START, _END = r"(?<![^\W_])", r"(?![^\W_])"
_DATE_IN_TEXT = re.compile(_START + r"(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|(19|20)\d{6})"
                           + _END)
_UID_IN_TEXT = re.compile(_START + r"\d+(?:\.\d+){3,}" + _END)  # 1.2.840.113619.2.55...: a study's or image's UID
_NAME_PARTS = re.compile(r"[\^ ,=]+")  # PN components, and "=" between a name's alphabetic/ideographic groups
_TOO_LONG = "This structured report is nested too deeply or is too long to show."


def is_structured_report(ds: Dataset) -> bool:
    return "ContentSequence" in ds and ds.get("ValueType") == "CONTAINER"


def _identifiers(ds: Dataset) -> list[str]:
    """Words and numbers from the header that identify someone, longest first (so a full name goes
    before its parts)."""
    found: set[str] = set()

    def add(value: object) -> None:  # the whole value and each part of a name
        text = str(value or "").strip()
        if text:
            found.add(text.replace("^", " ").strip())
            found.update(group.replace("^", " ").strip() for group in text.split("=") if group.strip("^ "))
            found.update(part for part in _NAME_PARTS.split(text) if len(part) >= 2)

    for keyword in IDENTIFYING:
        value = ds.get(keyword)
        for item in value if isinstance(value, (list, tuple, MultiValue)) else [value]:
            add(item)
    stack = [(item, 1) for item in ds.get("ContentSequence", [])]
    visited = 0
    while stack:  # names recorded inside the content (observers, physicians): all of them, or no text at all
        item, depth = stack.pop()
        visited += 1
        if visited > MAX_LINES or depth > MAX_DEPTH:  # more than the text would show: refused before the work
            raise InputRejected(_TOO_LONG)
        if item.get("ValueType") == "PNAME":
            add(item.get("PersonName"))
        stack.extend((child, depth + 1) for child in item.get("ContentSequence", []))
    found.discard("")
    return sorted(found, key=len, reverse=True)


def _scrubber(ds: Dataset):  # noqa: ANN202 - a closure over the header's identifiers
    words = _identifiers(ds)
    pattern = re.compile(_START + "(" + "|".join(map(re.escape, words)) + ")" + _END, re.IGNORECASE) if words else None

    def scrub(text: str) -> str:
        text = _DATE_IN_TEXT.sub("[date]", _UID_IN_TEXT.sub("[uid]", text))
        if pattern is None:
            return text
        return _RUN_OF_REMOVED.sub(REMOVED, pattern.sub(REMOVED, text))  # "Jane Doe" -> one mark, not two
    return scrub


def _label(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].get("CodeMeaning", "")) if names else ""


def _value(item: Dataset, scrub) -> str | None:  # noqa: ANN001
    kind = item.get("ValueType", "")
    if kind == "TEXT":
        return scrub(str(item.get("TextValue", "")))
    if kind == "CODE":
        codes = item.get("ConceptCodeSequence")
        return str(codes[0].get("CodeMeaning", "")) if codes else ""
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured:
            return "(no value)"
        units = measured[0].get("MeasurementUnitsCodeSequence")
        unit = str(units[0].get("CodeValue", "")) if units else ""
        return f"{measured[0].get('NumericValue', '')} {unit}".strip()
    if kind == "PNAME":
        return "[name removed]"
    if kind in ("DATE", "TIME", "DATETIME"):
        return "[date removed]"
    if kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        return "(refers to an image or object in the study)"
    if kind in ("SCOORD", "SCOORD3D", "TCOORD"):
        return "(coordinates on an image)"
    return None  # UIDREF and anything unknown: nothing a reader needs


def structured_text(ds: Dataset) -> str:
    """The report as indented lines; top-level containers become ``HEADING:`` lines so the report
    checker finds its sections (``FINDINGS:``, ``IMPRESSION:``)."""
    scrub = _scrubber(ds)
    lines = [_label(ds).upper() or "STRUCTURED REPORT"]

    def add(entry: str, depth: int) -> None:
        """One item's text; a free-text value's own line breaks are lines too, indented with the item."""
        for line in entry.splitlines() or [""]:
            if len(lines) >= MAX_LINES:  # checked per line: one container may hold any number of items
                raise InputRejected(_TOO_LONG)
            lines.append(f"{'  ' * (depth - 1)}{line}")

    def walk(items, depth: int) -> None:  # noqa: ANN001
        if depth > MAX_DEPTH:
            raise InputRejected(_TOO_LONG)
        for item in items:
            label, kind = _label(item), item.get("ValueType", "")
            if kind == "CONTAINER":
                add(f"{label.upper() if depth == 1 else label}:", depth)
            else:
                value = _value(item, scrub)
                if value is not None:
                    add(f"{label}: {value}" if label else value, depth)
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    walk(ds.ContentSequence, 1)
    return "\n".join(lines)
