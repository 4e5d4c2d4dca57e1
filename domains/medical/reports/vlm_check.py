"""The VLM checker: the report (and its image, when there is one) put to the model at the paper's two
levels — SIMPLE: does the report contain an error; COMPLEX: which kind — with several phrasings of
each question and a majority vote (an ensemble over prompts). Its flags join the rule checker's."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from loupe.core.vlm.base import GenerationOptions, Message

from .rules import Flag
from .sections import Report
from .taxonomy import KINDS

SIMPLE_PROMPTS = (
    "Here is a radiology report{image}. Does the report contain an error? Answer yes or no.\n\n{report}",
    "You check radiology reports before they are sent{image}. Is there any mistake in this report "
    "(wrong side, wrong finding, a denied finding asserted, a wrong number)? Answer yes or no.\n\n{report}",
    "Read this report{image}. Answer 'yes' if something in it is wrong or contradicts itself, else 'no'.\n\n{report}",
)
COMPLEX_PROMPT = ("This radiology report{image} contains one error. Which kind is it? Answer with one of: "
                  + ", ".join(k.replace("_", " ") for k in KINDS) + ".\n\n{report}")
OPTIONS = GenerationOptions(max_new_tokens=8, detail="low")


def parse_yes_no(answer: str) -> bool | None:
    match = re.search(r"\b(yes|no)\b", answer.lower())
    return None if match is None else match.group(1) == "yes"


def parse_kind(answer: str) -> str | None:
    text = answer.lower().replace("/", " ").replace("-", " ")
    for kind in KINDS:
        if kind.replace("_", " ") in text or kind in text:
            return kind
    return None


def report_text(report: Report) -> str:
    return "\n".join(f"{name.upper()}: {body}" for name, body in report.sections.items() if body)


@dataclass
class Vote:
    has_error: bool
    share: float  # of the prompts that said so
    kind: str | None


class VLMChecker:
    def __init__(self, vlm, prompts: Sequence[str] = SIMPLE_PROMPTS) -> None:  # noqa: ANN001 - any core VLM
        self.vlm = vlm
        self.prompts = prompts

    @property
    def served(self) -> bool:
        """Whether the model answers from a server (several reports may then be asked at once)."""
        return getattr(getattr(self.vlm, "engine", None), "name", None) == "served"

    def _ask(self, template: str, report: Report, image: Image.Image | None) -> str:
        text = template.format(image=" with its image" if image is not None else "", report=report_text(report))
        return self.vlm.chat([Message("user", text, [image] if image is not None else [])], OPTIONS).text

    def vote(self, report: Report, image: Image.Image | None = None) -> Vote:
        answers = [parse_yes_no(self._ask(p, report, image)) for p in self.prompts]
        said = [a for a in answers if a is not None]
        yes = sum(said)
        has_error = bool(said) and yes > len(said) / 2
        kind = parse_kind(self._ask(COMPLEX_PROMPT, report, image)) if has_error else None
        return Vote(has_error, round(yes / len(answers), 3), kind)

    def flags(self, report: Report, image: Image.Image | None = None) -> list[Flag]:
        return vote_flags(report, self.vote(report, image), len(self.prompts))

    def vote_and_flags(self, report: Report, image: Image.Image | None = None) -> tuple[Vote, list[Flag]]:
        vote = self.vote(report, image)
        return vote, vote_flags(report, vote, len(self.prompts))


def vote_flags(report: Report, vote: Vote, prompts: int) -> list[Flag]:
    """The model's vote as a flag over the impression (or the findings), or none when it found no error."""
    if not vote.has_error:
        return []
    section = "impression" if report.text("impression") else "findings"
    return [Flag(vote.kind or "unspecified", section, (0, len(report.text(section))), report.text(section),
                 f"the model found an error ({vote.share:.0%} of {prompts} prompts)", vote.share)]


def combine(rule_flags: list[Flag], model_flags: list[Flag]) -> list[Flag]:
    """Rules and model together: every flag kept; a kind both name gains confidence."""
    named = Counter(f.kind for f in rule_flags)
    boosted = [Flag(f.kind, f.section, f.span, f.text, f.reason, min(1.0, f.confidence + 0.1))
               if named[f.kind] else f for f in model_flags]
    return [*rule_flags, *boosted]
