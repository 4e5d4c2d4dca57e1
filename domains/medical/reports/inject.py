"""Synthetic errors in real reports, to build evaluation sets (the approach of the radiology report
error-checking paper): each erroneous report gets one error of one kind, in one section, and a label
that says where. SIMPLE level = has an error or not; COMPLEX level = which kind."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from .sections import SECTIONS, Report
from .taxonomy import (
    FINDINGS,
    INSERTIONS,
    KINDS,
    LOCATION,
    MEASUREMENT,
    SEVERITY,
    SEX_INSERTIONS,
    SIDES,
    SUBSTITUTES,
    words,
)

EDITABLE = ("findings", "impression")


@dataclass(frozen=True)
class Injected:
    kind: str
    section: str
    span: tuple[int, int]  # of the changed text in the new section text (empty span: where text was removed)
    original: str
    replacement: str


def _keep_case(template: str, word: str) -> str:
    return word.capitalize() if template[:1].isupper() else word


def _swap(report: Report, rng: random.Random, kind: str, table: dict) -> tuple[Report, Injected] | None:
    """Replace one whole-word occurrence of a key of ``table`` by its value, in a random section."""
    pattern = words(table)
    spots = [(s, m) for s in EDITABLE for m in pattern.finditer(report.text(s))]
    if not spots:
        return None
    section, match = rng.choice(spots)
    new = _keep_case(match.group(0), table[match.group(0).lower()])
    return _replace(report, section, match.start(), match.end(), new, kind)


def _replace(report: Report, section: str, start: int, end: int, new: str, kind: str) -> tuple[Report, Injected]:
    text = report.text(section)
    changed = Report(report.id, {**report.sections, section: text[:start] + new + text[end:]}, report.patient_sex)
    return changed, Injected(kind, section, (start, start + len(new)), text[start:end], new)


_NEGATED = [(re.compile(r"\bthere (is|are) no\b", re.I), lambda m: f"there {m.group(1)}"),
            (re.compile(r"(?:^|(?<=\. ))no\b", re.I), lambda m: "There is"),
            (re.compile(r"\bwithout\b", re.I), lambda m: "with"),
            (re.compile(r"\bnegative for\b", re.I), lambda m: "positive for")]
_AFFIRMED = [(re.compile(r"\bthere (is|are)\b(?! no\b)", re.I), lambda m: f"there {m.group(1)} no")]


def _negation(report: Report, rng: random.Random) -> tuple[Report, Injected] | None:
    spots = [(s, m, make) for s in EDITABLE for pattern, make in _NEGATED + _AFFIRMED
             for m in pattern.finditer(report.text(s))]
    if not spots:
        return None
    section, match, make = rng.choice(spots)
    return _replace(report, section, match.start(), match.end(), _keep_case(match.group(0), make(match)), "negation")


def _sentences(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"[^.]+\.?\s*", text) if m.group(0).strip()]


def _omission(report: Report, rng: random.Random) -> tuple[Report, Injected] | None:
    """Drop a sentence of the findings that states something (not a negative)."""
    text = report.text("findings")
    stated = [(a, b) for a, b in _sentences(text) if words(FINDINGS).search(text[a:b])
              and not re.search(r"\b(no|without|negative)\b", text[a:b], re.I)]
    if not stated or len(_sentences(text)) < 2:
        return None
    start, end = rng.choice(stated)
    return _replace(report, "findings", start, end, "", "omission")


def _insertion(report: Report, rng: random.Random, sentence: str | None = None,
               kind: str = "insertion") -> tuple[Report, Injected] | None:
    text = report.text("findings")
    if not text:
        return None
    cuts = [b for _, b in _sentences(text)]
    at = rng.choice(cuts)
    addition = (" " if at and not text[at - 1].isspace() else "") + (sentence or rng.choice(INSERTIONS)) + " "
    return _replace(report, "findings", at, at, addition, kind)


def _number_unit(report: Report, rng: random.Random) -> tuple[Report, Injected] | None:
    spots = [(s, m) for s in EDITABLE for m in MEASUREMENT.finditer(report.text(s))]
    if not spots:
        return None
    section, match = rng.choice(spots)
    value, unit = match.group(1), match.group(2)
    swapped_unit = f"{value} {'cm' if unit.lower() == 'mm' else 'mm'}"
    new = swapped_unit if rng.random() < 0.5 else f"{float(value) * 10:g} {unit}"
    return _replace(report, section, match.start(), match.end(), new, "number_unit")


def _sex_anatomy(report: Report, rng: random.Random) -> tuple[Report, Injected] | None:
    if report.patient_sex not in SEX_INSERTIONS:
        return None
    return _insertion(report, rng, SEX_INSERTIONS[report.patient_sex], "sex_anatomy")


INJECTORS: dict[str, Callable[[Report, random.Random], tuple[Report, Injected] | None]] = {
    "laterality": lambda r, g: _swap(r, g, "laterality", SIDES),
    "negation": _negation,
    "substitution": lambda r, g: _swap(r, g, "substitution", SUBSTITUTES),
    "omission": _omission,
    "insertion": _insertion,
    "number_unit": _number_unit,
    "severity": lambda r, g: _swap(r, g, "severity", SEVERITY),
    "location": lambda r, g: _swap(r, g, "location", LOCATION),
    "sex_anatomy": _sex_anatomy,
}
assert set(INJECTORS) == set(KINDS)


def inject(report: Report, rng: random.Random, kinds: Iterable[str] = KINDS) -> tuple[Report, Injected] | None:
    """One error of a kind picked at random among those that apply to this report (None if none does)."""
    order = list(kinds)
    rng.shuffle(order)
    for kind in order:
        result = INJECTORS[kind](report, rng)
        if result is not None:
            return result
    return None


def build_eval(reports: Iterable[Report], rate: float, seed: int) -> list[tuple[Report, dict]]:
    """Each report, with an injected error at probability ``rate``; its label alongside."""
    rng = random.Random(seed)
    out = []
    for report in reports:
        result = inject(report, rng) if rng.random() < rate else None
        if result is None:
            out.append((report, {"id": report.id, "has_error": False}))
        else:
            changed, injected = result
            out.append((changed, {"id": report.id, "has_error": True, **asdict(injected)}))
    return out


def report_row(report: Report) -> dict:
    sections = {name: report.sections.get(name, "") for name in SECTIONS}
    return {"id": report.id, **sections, **({"patient_sex": report.patient_sex} if report.patient_sex else {})}
