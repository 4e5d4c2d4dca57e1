"""The rule checker: what one section of a report says against another, and against the patient.

Finding mentions and their polarity come from a spaCy pipeline (a blank English model, an entity ruler
with the finding vocabulary, negspacy's NegEx with its clinical term set), or from a short hand-written
cue list (``polarity="cues"``), which ``loupe bench reports`` measures beside it. Each flag has the
span it is about, its kind, a reason and a confidence.

Work is near-linear in the report's length (a long report must not hold a worker for minutes): NegEx's
scopes are found with one pass over the sentences and cue matches (negspacy applies them boundary by
boundary, each pass over the whole document), each sentence's text is made once and shared by its
mentions, and a flag quotes at most a few hundred characters of its sentence. Reports longer than the
``max_text_chars`` budget are refused before any of it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from loupe.core.budgets import Budgets

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
    # The other side of a contradiction, where the report has one: (section, start, end) of the words this
    # span contradicts ("No pleural effusion." in the impression for "effusion" in the findings).
    related: tuple[str, int, int] | None = None

    def as_dict(self) -> dict:
        return {**asdict(self), "span": list(self.span), "related": list(self.related) if self.related else None}


@dataclass(frozen=True)
class Mention:
    term: str  # canonical finding name
    section: str
    start: int
    end: int
    negated: bool
    sentence: str  # one string per sentence, shared by the sentence's mentions
    sentence_start: int = 0  # where the sentence starts in the section's text


EXCERPT = 300  # characters of a sentence a flag quotes at most (a sentence can be a whole unpunctuated report)


@functools.cache
def _pipeline():  # noqa: ANN202 - (a spaCy Language, negspacy's Negex), built once per process
    import spacy
    from negspacy.negation import Negex
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "FINDING", "pattern": [{"LOWER": w} for w in form.split()]}
                        for term in FINDINGS for form in _forms(term)])
    terms = termset("en_clinical")
    terms.add_patterns({"preceding_negations": list(CHEST_NEGATIONS)})  # "lungs are clear of ..."
    # Its cue matcher and scope boundaries are used; the scopes are applied by _negated, in one pass.
    negex = Negex(nlp, "negex", neg_termset=terms.get_patterns(), ent_types=["FINDING"])
    return nlp, negex


def _negated(doc, negex) -> list[bool]:  # noqa: ANN001 - a spaCy Doc and negspacy's Negex
    """For each entity of ``doc``, whether NegEx calls it negated: a preceding cue earlier in its scope
    or a following cue ending after it, where a scope runs from a sentence start or termination term to
    the next; cues inside a pseudo-negation ("no increase") do not count. The same answer as negspacy's
    ``Negex.negex``, in O(n log n) instead of a pass over the document per scope."""
    matches = negex.matcher(doc)
    kinds = [negex.nlp.vocab.strings[match_id] for match_id, _, _ in matches]
    pseudo = sorted((start, end) for kind, (_, start, end) in zip(kinds, matches, strict=True) if kind == "pseudo")
    pseudo_starts = [start for start, _ in pseudo]
    reach = list(itertools.accumulate((end for _, end in pseudo), max))  # furthest end of pseudo cues so far

    def in_pseudo(start: int) -> bool:
        i = bisect.bisect_right(pseudo_starts, start) - 1
        return i >= 0 and reach[i] >= start

    cues: dict[str, list[tuple[int, int]]] = {"Preceding": [], "Following": [], "Termination": []}
    for kind, (_, start, end) in zip(kinds, matches, strict=True):
        if kind in cues and not in_pseudo(start):
            cues[kind].append((start, end))
    boundaries = negex.termination_boundaries(doc, [(0, start, end) for start, end in cues["Termination"]])
    lows = [low for low, _ in boundaries]

    def scope(token: int) -> int:  # the scope a token starts in (the last of equal starts: the non-empty one)
        return bisect.bisect_right(lows, token) - 1

    first_preceding = [len(doc) + 1] * len(boundaries)
    last_following = [-1] * len(boundaries)
    for start, _ in cues["Preceding"]:
        first_preceding[scope(start)] = min(first_preceding[scope(start)], start)
    for start, end in cues["Following"]:
        last_following[scope(start)] = max(last_following[scope(start)], end)
    out = []
    for ent in doc.ents:
        i = scope(ent.start)
        inside = i >= 0 and ent.end <= boundaries[i][1]  # an entity across a scope's end is in no scope
        out.append(inside and (first_preceding[i] < ent.start or last_following[i] > ent.end))
    return out


def _forms(term: str) -> tuple[str, ...]:
    if term.endswith("thorax"):
        return (term, term[:-1] + "ces")  # pneumothorax, pneumothoraces
    plural = term + ("es" if term.endswith(("s", "x")) else "s")
    return (term, plural) if not term.endswith("ies") else (term,)


_FORMS = words(tuple(f for t in FINDINGS for f in _forms(t)))
_FINDING_WORDS = words(FINDINGS)


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
            nlp, negex = _pipeline()
            doc = nlp(text)
            sentences = list(doc.sents)
            firsts = [sent.start for sent in sentences]
            said: dict[int, str] = {}  # sentence index -> its text, made once
            for ent, negated in zip(doc.ents, _negated(doc, negex), strict=True):
                k = bisect.bisect_right(firsts, ent.start) - 1  # the sentence the entity starts in
                if k not in said:
                    said[k] = sentences[k].text
                found.append(Mention(canonical(ent.text), section, ent.start_char, ent.end_char, negated,
                                     said[k], sentences[k].start_char))
        else:  # a negation cue earlier in the same sentence
            for sentence in re.finditer(r"[^.]+\.?", text):
                said = sentence.group(0)
                cue = _CUE.search(said)
                for match in _FORMS.finditer(said):
                    found.append(Mention(canonical(match.group(0)), section, sentence.start() + match.start(),
                                         sentence.start() + match.end(), cue is not None and cue.end() <= match.start(),
                                         said, sentence.start()))
    return found


def _excerpt(sentence: str, offset: int, span: tuple[int, int]) -> str:
    """The sentence a flag is about (starting at ``offset`` in its section); of a very long one, the part
    around ``span``."""
    if len(sentence) <= EXCERPT:
        return sentence.strip()
    start = max(0, span[0] - offset - EXCERPT // 3)
    end = min(len(sentence), start + EXCERPT)
    return ("…" if start else "") + sentence[start:end].strip() + ("…" if end < len(sentence) else "")


def _sentence_span(m: Mention) -> tuple[int, int]:
    """Where the sentence of ``m`` is in its section, without its surrounding spaces; the mention alone in a
    sentence too long to mark whole."""
    if len(m.sentence) > EXCERPT:
        return m.start, m.end
    lead = len(m.sentence) - len(m.sentence.lstrip())
    return m.sentence_start + lead, m.sentence_start + len(m.sentence.rstrip())


def _quote(m: Mention, span: tuple[int, int] | None = None) -> str:
    return _excerpt(m.sentence, m.sentence_start, span or (m.start, m.end))


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
            denial = next(d for d in found if d.term == m.term and d.section == other and d.negated)
            flags.append(Flag("negation", m.section, (m.start, m.end), _quote(m),
                              f"'{m.term}' is present here but denied in the {other}", 0.8,
                              (other, *_sentence_span(denial))))
    impression = report.text("impression")
    acute_found = [m for m in found if m.section == "findings" and not m.negated and m.term in ACUTE]
    if normal := NORMAL_IMPRESSION.search(impression):
        for m in acute_found:
            flags.append(Flag("negation", "findings", (m.start, m.end), _quote(m),
                              f"the impression reports nothing acute, but the findings describe '{m.term}'", 0.7,
                              ("impression", *normal.span())))
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
    asserted: dict[tuple[str, int], list[Mention]] = {}  # by sentence (where it starts: equal sentences differ)
    for m in found:
        asserted.setdefault((m.section, m.sentence_start), []).append(m)
    for (section, _), listed in asserted.items():
        if len(listed) < 2 or any(m.negated for m in listed) or _CUE.search(listed[0].sentence):
            continue
        text = report.text(section)
        # the sentence up to the list; leading space stripped, as _LIST_LEAD's \s* before .* would backtrack on it
        lead = text[text.rfind(".", 0, listed[0].start) + 1:listed[0].start].lstrip()
        gaps = [text[a.end:b.start] for a, b in itertools.pairwise(listed)]
        # "There is X, Y or Z." / "X or Y." / "clear with X or Y": how "no X or Y" reads without its "no"
        # (not "may represent X or Y", a differential)
        if _LIST_LEAD.fullmatch(lead) and all(_LIST_GAP.fullmatch(g) for g in gaps) and re.search(r"\bor\b", gaps[-1]):
            span = (listed[0].start, listed[-1].end)
            flags.append(Flag("negation", section, span, _quote(listed[0], span),
                              "findings joined by 'or' are asserted: this reads like a denial missing its 'no'", 0.65))
    return flags


def _laterality_flags(found: Sequence[Mention], image_laterality: str | None) -> list[Flag]:
    flags = []
    said: dict[tuple[str, int], set[str]] = {}  # the sides each sentence names, found once per sentence

    def sides_of(m: Mention) -> set[str]:
        key = (m.section, m.sentence_start)
        if key not in said:
            said[key] = _sides(m.sentence)
        return said[key]

    sides: dict[str, dict[str, set[str]]] = {}
    for m in found:
        if not m.negated:
            sides.setdefault(m.term, {}).setdefault(m.section, set()).update(sides_of(m))
    for m in found:
        here = sides_of(m) if not m.negated else set()
        other = "impression" if m.section == "findings" else "findings"
        theirs = sides.get(m.term, {}).get(other, set())
        if here and theirs and not here & theirs:
            flags.append(Flag("laterality", m.section, (m.start, m.end), _quote(m),
                              f"'{m.term}' is on the {'/'.join(sorted(here))} here but on the "
                              f"{'/'.join(sorted(theirs))} in the {other}", 0.8))
        side = {"L": "left", "R": "right"}.get((image_laterality or "").upper())
        if side and here and side not in here:
            flags.append(Flag("laterality", m.section, (m.start, m.end), _quote(m),
                              f"the image is of the {side} side", 0.6))
    return flags


def _measurements(report: Report) -> list[tuple[str, str, float, re.Match, int]]:
    """(section, finding named in the sentence or "", size in mm, the match, where its sentence starts)."""
    out = []
    for section in ("findings", "impression"):
        text = report.text(section)
        for sentence in re.finditer(r"[^.]+\.?", text):
            said = sentence.group(0)
            sizes = list(MEASUREMENT.finditer(said))
            if not sizes:
                continue
            terms = {_CANONICAL.get(t.lower(), t.lower()) for t in _FINDING_WORDS.findall(said)}  # a few at most
            for match in sizes:
                millimetres = float(match.group(1)) * (10 if match.group(2).lower() == "cm" else 1)
                for term in terms or {""}:
                    out.append((section, term, millimetres, match, sentence.start()))
    return out


def _number_flags(report: Report) -> list[Flag]:
    flags = []
    sizes = _measurements(report)
    by_term: dict[tuple[str, str], list[float]] = {}  # (section, finding) -> its sizes, in reading order
    for section, term, mm, _, _ in sizes:
        by_term.setdefault((section, term), []).append(mm)
    ordered = {key: sorted(values) for key, values in by_term.items()}
    said: dict[tuple[str, str], str] = {}  # the sizes as a flag names them, made once per finding and section
    for section, term, mm, match, offset in sizes:
        key = ("impression" if section == "findings" else "findings", term)
        others = ordered.get(key, []) if term else []
        span = (offset + match.start(), offset + match.end())
        if others and not _near(others, mm):
            if key not in said:
                distinct = list(dict.fromkeys(by_term[key]))
                said[key] = ", ".join(f"{m:g} mm" for m in distinct[:4]) + (
                    f" and {len(distinct) - 4} other sizes" if len(distinct) > 4 else "")
            flags.append(Flag("number_unit", section, span, match.group(0),
                              f"the {term} measures {said[key]} in the other section", 0.75))
        elif mm > 300:
            flags.append(Flag("number_unit", section, span, match.group(0),
                              "larger than a chest can hold: check the number and unit", 0.6))
    return flags


def _near(ordered: list[float], mm: float) -> bool:
    """Whether a size of the sorted list is within 0.01 mm of ``mm``."""
    i = bisect.bisect_left(ordered, mm - 0.01)
    return i < len(ordered) and ordered[i] <= mm + 0.01


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


def report_chars(report: Report) -> int:
    """The length of a report as its budget counts it: the text of all its sections."""
    return sum(len(text) for text in report.sections.values())


def check_rules(report: Report, image_laterality: str | None = None, polarity: str = "negex",
                limits: Budgets | None = None) -> list[Flag]:
    """Every flag of ``report``; a report longer than ``limits.max_text_chars`` (default: the budgets the
    environment sets) is refused with ``BudgetExceeded`` before it is read."""
    (limits or Budgets.from_env()).check("max_text_chars", report_chars(report), "The report")
    found = mentions(report, polarity)
    side = image_laterality or report.image_laterality
    flags = (_negation_flags(report, found) + _laterality_flags(found, side) + _phrasing_flags(report, found)
             + _number_flags(report)
             + _sex_flags(report))
    unique = {(f.kind, f.section, f.span): f for f in flags}
    return sorted(unique.values(), key=lambda f: (f.section, f.span))
