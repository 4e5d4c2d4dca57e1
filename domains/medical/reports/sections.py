"""Radiology reports as sections: from the public IU chest X-ray CSV layout, from JSONL, or from free
text with headings ("FINDINGS:", "IMPRESSION:" ...). Bad input names its line and field."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loupe.core.errors import InputRejected
from loupe.core.jsonl import json_objects

SECTIONS = ("indication", "comparison", "technique", "findings", "impression")
REQUIRED = ("findings", "impression")
_HEADINGS = {  # heading words -> section
    "indication": "indication", "history": "indication", "clinical history": "indication", "reason": "indication",
    "comparison": "comparison", "technique": "technique", "examination": "technique",
    "findings": "findings", "impression": "impression", "conclusion": "impression", "opinion": "impression",
}
# Indented by spaces or tabs only: "^\s*" could run over the following blank lines from every line start, a
# quadratic scan of a report of blank lines (the match ends are the same; section bodies are stripped).
_HEADING = re.compile(r"^[^\S\n]*(" + "|".join(sorted(map(re.escape, _HEADINGS), key=len, reverse=True))
                      + r")\s*:\s*", re.IGNORECASE | re.MULTILINE)
_SEX = re.compile(r"\b(female|woman|girl|male|man|boy)\b", re.IGNORECASE)


@dataclass
class Report:
    id: str
    sections: dict[str, str] = field(default_factory=dict)
    patient_sex: str | None = None  # "F" or "M" when known (DICOM Patient's Sex, or said in the indication)
    image_laterality: str | None = None  # "L" or "R" from the attached image's DICOM header

    def text(self, section: str) -> str:
        return self.sections.get(section, "")


def parse_report(report_id: str, text: str) -> Report:
    """Free text with headings into sections; text before any heading counts as findings."""
    parts: dict[str, list[str]] = {}  # a heading that comes again adds to its section
    matches = list(_HEADING.finditer(text))
    if not matches:
        return Report(report_id, {"findings": text.strip()})
    if text[:matches[0].start()].strip():
        parts["findings"] = [text[:matches[0].start()].strip()]
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        parts.setdefault(_HEADINGS[match.group(1).lower()], []).append(text[match.end():end].strip())
    return Report(report_id, {name: " ".join(body for body in bodies if body) for name, bodies in parts.items()})


def sex_from_text(text: str) -> str | None:
    match = _SEX.search(text)
    if match is None:
        return None
    return "F" if match.group(1).lower() in ("female", "woman", "girl") else "M"


def _field_text(row: dict, name: str, where: str) -> str:
    """A report field as text: JSON numbers are written out, a list or an object is refused (``str`` of it
    would be checked as if it were the report)."""
    value = row.get(name)
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InputRejected(f"{where}: the field {name!r} is a JSON {type(value).__name__.replace('dict', 'object')}, "
                        "not text.")


def _from_fields(report_id: str, row: dict, where: str) -> Report:
    if not report_id:
        raise InputRejected(f"{where}: the report has no id (column 'uid' or 'id').")
    if "text" in row and not any(row.get(s) for s in SECTIONS):
        report = parse_report(report_id, _field_text(row, "text", where))
    elif not any(s in row for s in SECTIONS):
        raise InputRejected(f"{where}: no report field (findings, impression or text).")
    else:  # a section left out or empty is a section the report does not have
        report = Report(report_id, {s: _field_text(row, s, where).strip() for s in SECTIONS if row.get(s)})
    if not any(report.sections.values()):
        raise InputRejected(f"{where}: the report text is empty.")
    sex = str(row.get("patient_sex") or row.get("sex") or "").upper()[:1]
    report.patient_sex = sex if sex in ("F", "M") else sex_from_text(report.text("indication"))
    return report


def read_reports(path: Path, problems: list[str] | None = None) -> Iterator[Report]:
    """Reports from a CSV (IU layout: ``uid``, ``findings``, ``impression``, optional ``indication``,
    ``comparison``) or a JSONL file (``id`` plus those fields, or ``id`` and ``text``). A file whose
    header lacks a column is refused; a bad row is skipped and described in ``problems`` (or refused,
    when no list is given)."""
    for item in _rows(path):
        if isinstance(item, Report):
            yield item
        elif problems is None:
            raise item
        else:
            problems.append(str(item))


def _rows(path: Path) -> Iterator[Report | InputRejected]:
    if path.suffix.lower() == ".jsonl":
        for number, row, wrong in json_objects(path):
            if row is None:
                yield InputRejected(f"{wrong}.")
                continue
            try:
                yield _from_fields(str(row.get("id") or row.get("uid") or ""), row, f"line {number}")
            except InputRejected as exc:
                yield exc
        return
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        missing = [c for c in REQUIRED if c not in columns] if "text" not in columns else []
        if "uid" not in columns and "id" not in columns:
            missing.insert(0, "uid")
        if missing:
            raise InputRejected(f"line 1: the header lacks column(s) {', '.join(missing)}.")
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:  # a field over csv's limit: this record is skipped, the reader goes on after it
                yield InputRejected(f"line {start}: a field is longer than the {csv.field_size_limit():,} characters "
                                    "Loupe reads from a CSV field.")
                continue
            try:  # reader.line_num: the file line where this record ends (fields may span lines)
                yield _from_fields(str(row.get("uid") or row.get("id") or "").strip(), row, f"line {reader.line_num}")
            except InputRejected as exc:
                yield exc
