"""Specimens for text inputs (see loupe.apps.robustness): radiology reports for the rule checker
(``kind="report"``, read as a ``.txt`` report with FINDINGS:/IMPRESSION: headings) and a question
(``kind="question"``). The limits are the defaults of ``max_text_chars`` (50,000) and
``max_question_chars`` (4,000)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from . import Specimen

SENTENCES = ("There is a small left pleural effusion measuring 12 mm.", "No pneumothorax.", "Mild cardiomegaly.",
             "The right upper lobe is clear.", "Lungs are clear of consolidation.", "No focal airspace disease.",
             "Stable 4 mm nodule in the right lower lobe.", "There is no effusion, pneumothorax or edema.",
             "Heart size is normal.", "Degenerative changes of the thoracic spine.")


def realistic_report(chars: int, seed: int = 1) -> str:
    """A report of about ``chars`` characters (never more) made of everyday sentences: 70% findings."""
    rng = random.Random(seed)
    findings: list[str] = []
    impression: list[str] = []
    for part, share in ((findings, 0.7), (impression, 0.3)):
        while sum(len(s) + 1 for s in part) < chars * share - 80:
            part.append(rng.choice(SENTENCES))
    return f"FINDINGS: {' '.join(findings)}\nIMPRESSION: {' '.join(impression)}"[:chars]


def unpunctuated_report(chars: int) -> str:
    """One line, no full stop, dense with findings, sides, negation cues and 'or' lists: the shape that
    made the old checker quadratic (every cue scope and sentence was the whole report)."""
    phrase = "no left effusion or right nodule or 12 mm mass and left greater than left without edema "
    return ("FINDINGS: " + phrase * (chars // len(phrase) + 1))[:chars]


def blank_lines_report(chars: int) -> str:
    """Headings and blank lines (the old heading pattern rescanned the blank lines from every line)."""
    block = "FINDINGS: no effusion.\n\n\n\n\n\n\n\n\n\nIMPRESSION: effusion.\n\n\n\n\n\n\n\n\n\n"
    return (block * (chars // len(block) + 1))[:chars]


def _writer(name: str, text: Callable[[], str]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / f"{name}.txt"
        path.write_text(text(), encoding="utf-8")
        return path
    return make


def _specimen(name: str, text: Callable[[], str], expect: str, budget: str | None, about: str,
              kind: str = "report", domain: str = "medical") -> Specimen:
    return Specimen(name, domain, _writer(name, text), expect, budget, about, kind)


SPECIMENS: list[Specimen] = [
    _specimen("report-96kb", lambda: realistic_report(96_000), "refused", "max_text_chars",
              "a 96 KB radiology report of everyday sentences (52 s in the old checker)"),
    _specimen("report-96kb-unpunctuated", lambda: unpunctuated_report(96_000), "refused", "max_text_chars",
              "a 96 KB report on one line without full stops, dense with findings and negation cues"),
    _specimen("report-40kb", lambda: realistic_report(40_000), "accepted", None,
              "a 40 KB radiology report of everyday sentences, under the 50,000-character limit"),
    _specimen("report-48kb-unpunctuated", lambda: unpunctuated_report(48_000), "accepted", None,
              "a 48 KB report on one line without full stops, just under the limit"),
    _specimen("report-48kb-blank-lines", lambda: blank_lines_report(48_000), "accepted", None,
              "a 48 KB report of headings and blank lines, just under the limit"),
    _specimen("question-400kb", lambda: ("Is there a fracture of the left wrist? " * 10_300)[:400_000], "refused",
              "max_question_chars", "a 400 KB question (held the model queue 53 s)", kind="question",
              domain="general"),
]
