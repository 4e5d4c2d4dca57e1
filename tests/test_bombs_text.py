"""Long and pathological radiology reports (issue 19): refused over ``max_text_chars`` before any work,
checked correctly just under it. The checker's time is printed for the record, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from loupe.apps.robustness import specimens
from loupe.apps.robustness.text import realistic_report
from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.jobs import JobRunner
from loupe.domains.medical.report_panel import check_text
from loupe.domains.medical.reports.rules import check_rules
from loupe.domains.medical.reports.sections import Report, parse_report

REPORTS = [s for s in specimens() if s.kind == "report"]


def _refusal(text: str, **options: object) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as caught:
        check_text(text, [], **options)
    return caught.value


@pytest.mark.parametrize("specimen", [s for s in REPORTS if s.expect == "refused"], ids=lambda s: s.name)
def test_a_report_over_the_limit_is_refused_naming_the_limit(specimen, tmp_path):
    text = specimen.make(tmp_path).read_text(encoding="utf-8")
    started = time.perf_counter()
    refused = _refusal(text)
    print(f"{specimen.name}: {len(text):,} characters refused in {time.perf_counter() - started:.4f} s")
    assert refused.budget == specimen.budget == "max_text_chars"
    message = str(refused)
    assert f"{len(text):,} characters" in message and "50,000 characters" in message
    assert "LOUPE_MAX_TEXT_CHARS" in message and "effusion" not in message  # the limit, not the report's words
    # The batch's entry point (loupe check-reports calls check_rules) refuses it too, by its sections' length.
    report = parse_report("long", text)
    with pytest.raises(BudgetExceeded, match="LOUPE_MAX_TEXT_CHARS"):
        check_rules(report)


def test_the_limit_is_the_budget_given_or_the_environments(monkeypatch):
    text = "FINDINGS: No effusion.\nIMPRESSION: Normal chest."
    assert _refusal(text, limits=Budgets(max_text_chars=20)).budget == "max_text_chars"
    with pytest.raises(BudgetExceeded, match="up to 20 characters"):
        check_rules(parse_report("r", text), limits=Budgets(max_text_chars=20))
    monkeypatch.setenv("LOUPE_MAX_TEXT_CHARS", "30")
    assert "up to 30 characters" in str(_refusal(text))
    monkeypatch.setenv("LOUPE_MAX_TEXT_CHARS", "100")
    assert check_text(text, []) == []


def test_a_report_just_under_the_limit_is_checked_and_its_error_found():
    error = " The nodule now measures 45 cm."  # 450 mm against the findings' 4 mm nodule: a unit slip
    clean = realistic_report(50_300)[:50_000 - len(error)].rsplit(".", 1)[0] + "."
    assert check_rules(parse_report("clean", clean)) == []  # everyday sentences that agree with each other
    text = clean + error
    assert 49_900 < len(text) <= 50_000
    started = time.perf_counter()
    findings = check_text(text, [])
    print(f"just-under-limit report ({len(text):,} characters) checked in {time.perf_counter() - started:.2f} s")
    [flag] = findings
    impression = parse_report("r", text).text("impression")
    start, end = flag["span"]
    assert flag["kind"] == "number_unit" and flag["section"] == "impression"
    assert impression[start:end] == "45 cm" and start > len(impression) - len(error)  # near the very end
    assert "the nodule measures 4 mm in the other section" in flag["reason"]


def test_pathological_reports_just_under_the_limit_are_checked_within_memory():
    # One unpunctuated 48 KB line: every mention shares one sentence, the shape that made flags quote the
    # whole report each (and the old checker quadratic). Run apart to read the checker's own peak memory.
    script = """
import json, resource, sys, time
from loupe.apps.robustness.text import unpunctuated_report
from loupe.domains.medical.reports.rules import _pipeline, check_rules
from loupe.domains.medical.reports.sections import parse_report
_pipeline()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = parse_report("p", unpunctuated_report(48_000))
started = time.perf_counter()
flags = check_rules(report)
print(json.dumps({"seconds": time.perf_counter() - started, "flags": len(flags),
                  "longest_quote": max(len(f.text) for f in flags),
                  "grew_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                    text=True, timeout=300).stdout)
    print(f"48 KB unpunctuated report: {out['seconds']:.2f} s, {out['flags']} flags, "
          f"peak RSS +{out['grew_kib'] / 1024:.0f} MiB")
    assert out["flags"] > 100 and out["longest_quote"] <= 310  # a flag quotes its neighbourhood, not the report
    assert out["grew_kib"] < 300 * 1024


@pytest.mark.parametrize("specimen", [s for s in REPORTS if s.expect == "accepted"], ids=lambda s: s.name)
def test_accepted_report_specimens_are_checked(specimen, tmp_path):
    text = specimen.make(tmp_path).read_text(encoding="utf-8")
    started = time.perf_counter()
    findings = check_text(text, [])
    print(f"{specimen.name}: {len(text):,} characters, {len(findings)} flags in {time.perf_counter() - started:.2f} s")
    sections = parse_report("r", text).sections
    for flag in findings:
        start, end = flag["span"]
        assert 0 <= start < end <= len(sections[flag["section"]])


def test_the_question_specimen_is_over_the_question_budget(tmp_path):
    [question] = [s for s in specimens() if s.kind == "question"]
    text = question.make(tmp_path).read_text(encoding="utf-8")
    assert question.expect == "refused" and question.budget == "max_question_chars"
    assert len(text) == 400_000 > Budgets().max_question_chars


class _Tab:
    """The workspace as the report panel sees it: one open case, its saved report versions."""

    def __init__(self) -> None:
        import gradio as gr

        self.case_id = gr.Number(1)
        self.shown_case = gr.Number(1)
        self.saved: list[str] = []
        self.budgets = Budgets()
        self.jobs = JobRunner(self.budgets)

    def run_job(self, request: object, label: str, fn, args: tuple = ()):  # noqa: ANN001, ANN201
        return self.jobs.run("reader", label, fn, args)  # a real worker process, as the app runs it

    def case_assets(self, case_id: int, request: object, with_bytes: bool = True) -> list:
        return []

    def save_report(self, case_id: int, request: object, text: str, findings: list[dict]) -> int:
        self.saved.append(text)
        return len(self.saved)

    def latest_report(self, case_id: int, request: object) -> None:
        return None


def test_the_report_panel_shows_the_refusal_and_saves_nothing():
    import gradio as gr

    from loupe.domains.medical.report_panel import add_report_panel

    tab = _Tab()
    with gr.Blocks() as page:
        add_report_panel(tab)
    check = next(fn.fn for fn in page.fns.values() if fn.api_name == "medical_check_report")
    shown, read = check(1, realistic_report(60_000), False, 7, None)
    assert "⚠️ The report is" in shown and "Loupe accepts up to 50,000 characters" in shown
    assert "LOUPE_MAX_TEXT_CHARS" in shown and "not checked or saved" in shown
    assert read == 7 and tab.saved == []  # the version on screen stays the one read
    shown, read = check(1, "FINDINGS: Small right pleural effusion.\nIMPRESSION: Normal chest.", False, 7, None)
    assert "Saved" in shown and read == 1 and len(tab.saved) == 1


def test_a_report_of_sections_counts_all_its_sections():
    report = Report("r", {"indication": "x" * 30_000, "findings": "No effusion.", "impression": "y" * 20_000})
    with pytest.raises(BudgetExceeded, match="50,012 characters"):
        check_rules(report)


def test_a_csv_report_over_the_csv_field_limit_is_listed_and_the_rest_read(tmp_path):
    from loupe.domains.medical.reports.sections import read_reports

    source = tmp_path / "reports.csv"
    source.write_text("uid,findings,impression\n1," + "x" * 200_000 + ",y\n2,No effusion.,Normal.\n")
    problems: list[str] = []
    assert [r.id for r in read_reports(source, problems)] == ["2"]  # before: csv.Error ended the whole file
    assert problems == ["line 2: a field is longer than the 131,072 characters Loupe reads from a CSV field."]


def test_check_reports_lists_an_over_limit_report_and_checks_the_rest(tmp_path):
    from loupe.domains.medical.reports.batch import check_file

    source, out = tmp_path / "reports.jsonl", tmp_path / "results.jsonl"
    rows = [{"id": "a", "findings": "No effusion.", "impression": "Normal."},
            {"id": "huge", "findings": realistic_report(60_000), "impression": "Normal."},
            {"id": "c", "findings": "Small left effusion.", "impression": "Left effusion."}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = check_file(source, out)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "c"]
    refused = [o for o in run.outcomes if o[1] == "refused"]
    assert [o[0] for o in refused] == ["huge"] and "LOUPE_MAX_TEXT_CHARS" in refused[0][2]


def test_a_report_field_that_is_not_text_is_listed_and_the_rest_read(tmp_path):
    from loupe.domains.medical.reports.sections import read_reports

    source = tmp_path / "reports.jsonl"
    rows = [{"id": "a", "text": {"findings": "No effusion."}}, {"id": "b", "findings": ["x"], "impression": "y"},
            {"id": "c", "text": "FINDINGS: No effusion.\nIMPRESSION: Normal."}, {"id": "d", "findings": 3}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    problems: list[str] = []
    assert [r.id for r in read_reports(source, problems)] == ["c", "d"]
    assert problems == ["line 1: the field 'text' is a JSON object, not text.",
                        "line 2: the field 'findings' is a JSON list, not text."]
