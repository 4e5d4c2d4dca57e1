"""The rule checker: what one section of a report says against another, and against the patient.

Finding mentions and their polarity come from a spaCy pipeline (a blank English model, an entity ruler
with the finding vocabulary, negspacy's NegEx with its clinical term set), or from a short hand-written
cue list (``polarity="cues"``), which ``loupe bench reports`` measures beside it. Each flag has the
span it is about, its kind, a reason and a confidence.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .sections import Report
from .taxonomy import ACUTE, FEMALE_ONLY, FINDINGS, MALE_ONLY, MEASUREMENT, SIDES, words

NORMAL_IMPRESSION = re.compile(
    r"\b(no acute|no active|negative (acute |chest|study|exam)|normal (chest|study|exam|radiograph)|unremarkable|"
    r"no (evidence of )?(acute )?cardiopulmonary (disease|abnormality|process))", re.IGNORECASE)
# An impression that declares acute disease as such (not a named finding).
ACUTE_IMPRESSION = re.compile(r"\b(there (is|are) (an? )?(acute|active)|(acute|active) "
                              r"(cardiopulmonary |radiographic )*(disease|process|abnormalit|finding))", re.IGNORECASE)
CHEST_NEGATIONS = ("clear of", "free of", "no evidence of", "no radiographic evidence of")
_CUE = re.compile(r"\b(no|without|negative for|free of|absence of|not)\b", re.IGNORECASE)
_CANONICAL = {"pleural effusion": "effusion", "opacities": "opacity", "pneumothoraces": "pneumothorax"}
# "left greater than left": a comparison of one side with itself, so one of the two sides is wrong.
SELF_COMPARISON = re.compile(r"\b(left|right)\b(?:\s+\w+){0,3}?\s+(?:greater|more|worse|larger) than\s+(?:the\s+)?\1\b",
                             re.IGNORECASE)
_LIST_LEAD = re.compile(r"\s*(?:there (?:is|are)\s+|.*\b(?:clear|normal|unremarkable) with\s+)?(?:\w+\s+)?",
                        re.IGNORECASE)
_LIST_GAP = re.compile(r",?\s*(?:(?:and/)?or\s+)?(?:\w+\s+)?", re.IGNORECASE)
# Words that say a finding exists; right after a negation they contradict it ("no stable nodule").
_NEGATED_EXISTING = re.compile(r"\b(?:no|without)\s+(stable|persistent|unchanged|redemonstrated|again|"
                               r"mild|moderate|marked|severe|minimal)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Flag:
    kind: str
    section: str
    span: tuple[int, int]
    text: str
    reason: str
    confidence: float

    def as_dict(self) -> dict:
        return {**asdict(self), "span": list(self.span)}


@dataclass(frozen=True)
class Mention:
    term: str  # canonical finding name
    section: str
    start: int
    end: int
    negated: bool
    sentence: str


@functools.cache
def _pipeline():  # noqa: ANN202 - a spaCy Language, built once per process
    import spacy
    from negspacy.negation import Negex  # noqa: F401 - registers the "negex" factory
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "FINDING", "pattern": [{"LOWER": w} for w in form.split()]}
                        for term in FINDINGS for form in _forms(term)])
    terms = termset("en_clinical")
    terms.add_patterns({"preceding_negations": list(CHEST_NEGATIONS)})  # "lungs are clear of ..."
    nlp.add_pipe("negex", config={"ent_types": ["FINDING"], "neg_termset": terms.get_patterns()})
    return nlp


def _forms(term: str) -> tuple[str, ...]:
    if term.endswith("thorax"):
        return (term, term[:-1] + "ces")  # pneumothorax, pneumothoraces
    plural = term + ("es" if term.endswith(("s", "x")) else "s")
    return (term, plural) if not term.endswith("ies") else (term,)


def canonical(term: str) -> str:
    term = term.lower()
    term = _CANONICAL.get(term, term)
    for suffix in ("es", "s"):
        if term.endswith(suffix) and term[:-len(suffix)] in FINDINGS:
            return _CANONICAL.get(term[:-len(suffix)], term[:-len(suffix)])
    return term


def mentions(report: Report, polarity: str = "negex") -> list[Mention]:
    found = []
    for section in ("findings", "impression"):
        text = report.text(section)
        if not text:
            continue
        if polarity == "negex":
            doc = _pipeline()(text)
            for ent in doc.ents:
                found.append(Mention(canonical(ent.text), section, ent.start_char, ent.end_char,
                                     bool(ent._.negex), ent.sent.text))
        else:  # a negation cue earlier in the same sentence
            for sentence in re.finditer(r"[^.]+\.?", text):
                for match in words(tuple(f for t in FINDINGS for f in _forms(t))).finditer(sentence.group(0)):
                    before = sentence.group(0)[:match.start()]
                    found.append(Mention(canonical(match.group(0)), section, sentence.start() + match.start(),
                                         sentence.start() + match.end(), bool(_CUE.search(before)), sentence.group(0)))
    return found


def _sides(sentence: str) -> set[str]:
    return {m.group(0).lower() for m in words(SIDES).finditer(sentence)} - (
        {"left", "right"} if re.search(r"\bbilateral", sentence, re.IGNORECASE) else set())


def _negation_flags(report: Report, found: Sequence[Mention]) -> list[Flag]:
    flags = []
    by_term: dict[str, dict[str, set[bool]]] = {}
    for m in found:
        by_term.setdefault(m.term, {}).setdefault(m.section, set()).add(m.negated)
    for m in found:
        other = "impression" if m.section == "findings" else "findings"
        theirs = by_term[m.term].get(other, set())
        if not m.negated and theirs == {True}:
            flags.append(Flag("negation", m.section, (m.start, m.end), m.sentence.strip(),
                              f"'{m.term}' is present here but denied in the {other}", 0.8))
    impression = report.text("impression")
    acute_found = [m for m in found if m.section == "findings" and not m.negated and m.term in ACUTE]
    if NORMAL_IMPRESSION.search(impression):
        for m in acute_found:
            flags.append(Flag("negation", "findings", (m.start, m.end), m.sentence.strip(),
                              f"the impression reports nothing acute, but the findings describe '{m.term}'", 0.7))
    declared = ACUTE_IMPRESSION.search(impression)
    if declared and not _CUE.search(impression[max(0, declared.start() - 30):declared.start()]) and not acute_found \
            and not any(m.section == "impression" and not m.negated and m.term in ACUTE for m in found):
        flags.append(Flag("negation", "impression", declared.span(), declared.group(0),
                          "the impression reports acute disease that the findings do not describe", 0.7))
    return flags


def _phrasing_flags(report: Report, found: Sequence[Mention]) -> list[Flag]:
    """Errors one sentence shows by itself: a side compared with itself, a denial of something called
    stable or mild, and findings listed with 'or' but asserted (the way a dropped 'no' reads)."""
    flags = []
    for section in ("findings", "impression"):
        text = report.text(section)
        for match in SELF_COMPARISON.finditer(text):
            flags.append(Flag("laterality", section, match.span(), match.group(0),
                              f"compares the {match.group(1).lower()} side with itself", 0.85))
        for match in _NEGATED_EXISTING.finditer(text):
            flags.append(Flag("negation", section, match.span(), match.group(0),
                              f"denies something it calls '{match.group(1).lower()}'", 0.6))
    asserted: dict[tuple[str, str], list[Mention]] = {}
    for m in found:
        asserted.setdefault((m.section, m.sentence), []).append(m)
    for (section, sentence), listed in asserted.items():
        if len(listed) < 2 or any(m.negated for m in listed) or _CUE.search(sentence):
            continue
        text = report.text(section)
        lead = text[text.rfind(".", 0, listed[0].start) + 1:listed[0].start]  # the sentence up to the list
        gaps = [text[a.end:b.start] for a, b in itertools.pairwise(listed)]
        # "There is X, Y or Z." / "X or Y." / "clear with X or Y": how "no X or Y" reads without its "no"
        # (not "may represent X or Y", a differential)
        if _LIST_LEAD.fullmatch(lead) and all(_LIST_GAP.fullmatch(g) for g in gaps) and re.search(r"\bor\b", gaps[-1]):
            flags.append(Flag("negation", section, (listed[0].start, listed[-1].end), sentence.strip(),
                              "findings joined by 'or' are asserted: this reads like a denial missing its 'no'", 0.65))
    return flags


def _laterality_flags(found: Sequence[Mention], image_laterality: str | None) -> list[Flag]:
    flags = []
    sides: dict[str, dict[str, set[str]]] = {}
    for m in found:
        if not m.negated:
            sides.setdefault(m.term, {}).setdefault(m.section, set()).update(_sides(m.sentence))
    for m in found:
        here = _sides(m.sentence) if not m.negated else set()
        other = "impression" if m.section == "findings" else "findings"
        theirs = sides.get(m.term, {}).get(other, set())
        if here and theirs and not here & theirs:
            flags.append(Flag("laterality", m.section, (m.start, m.end), m.sentence.strip(),
                              f"'{m.term}' is on the {'/'.join(sorted(here))} here but on the "
                              f"{'/'.join(sorted(theirs))} in the {other}", 0.8))
        side = {"L": "left", "R": "right"}.get((image_laterality or "").upper())
        if side and here and side not in here:
            flags.append(Flag("laterality", m.section, (m.start, m.end), m.sentence.strip(),
                              f"the image is of the {side} side", 0.6))
    return flags


def _measurements(report: Report) -> list[tuple[str, str, float, re.Match]]:
    out = []
    for section in ("findings", "impression"):
        text = report.text(section)
        for sentence in re.finditer(r"[^.]+\.?", text):
            terms = {_CANONICAL.get(t.lower(), t.lower()) for t in words(FINDINGS).findall(sentence.group(0))}
            for match in MEASUREMENT.finditer(sentence.group(0)):
                millimetres = float(match.group(1)) * (10 if match.group(2).lower() == "cm" else 1)
                for term in terms or {""}:
                    out.append((section, term, millimetres, match, sentence.start()))
    return out


def _number_flags(report: Report) -> list[Flag]:
    flags = []
    sizes = _measurements(report)
    for section, term, mm, match, offset in sizes:
        others = [m for s, t, m, _, _ in sizes if s != section and t == term and term]
        if others and all(abs(m - mm) > 0.01 for m in others):
            flags.append(Flag("number_unit", section, (offset + match.start(), offset + match.end()), match.group(0),
                              f"the {term} measures {', '.join(f'{m:g} mm' for m in others)} in the other section",
                              0.75))
        elif mm > 300:
            flags.append(Flag("number_unit", section, (offset + match.start(), offset + match.end()), match.group(0),
                              "larger than a chest can hold: check the number and unit", 0.6))
    return flags


def _sex_flags(report: Report) -> list[Flag]:
    wrong = {"M": FEMALE_ONLY, "F": MALE_ONLY}.get(report.patient_sex or "")
    if not wrong:
        return []
    flags = []
    for section in ("findings", "impression"):
        for match in words(wrong).finditer(report.text(section)):
            flags.append(Flag("sex_anatomy", section, (match.start(), match.end()), match.group(0),
                              f"'{match.group(0)}' for a {'female' if report.patient_sex == 'F' else 'male'} patient",
                              0.9))
    return flags


def check_rules(report: Report, image_laterality: str | None = None, polarity: str = "negex") -> list[Flag]:
    found = mentions(report, polarity)
    side = image_laterality or report.image_laterality
    flags = (_negation_flags(report, found) + _laterality_flags(found, side) + _phrasing_flags(report, found)
             + _number_flags(report)
             + _sex_flags(report))
    unique = {(f.kind, f.section, f.span): f for f in flags}
    return sorted(unique.values(), key=lambda f: (f.section, f.span))
