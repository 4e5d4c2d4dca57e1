"""Radiology report error-checking: sections, the injector, the rule checker, the resumable batch
(killed with SIGKILL and rerun), and the scores."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from loupe.core.errors import InputRejected
from loupe.domains.medical.reports.batch import check_file, finished_ids
from loupe.domains.medical.reports.evaluate import confusion_png, evaluate
from loupe.domains.medical.reports.inject import INJECTORS, build_eval
from loupe.domains.medical.reports.rules import check_rules
from loupe.domains.medical.reports.sections import Report, parse_report, read_reports

IU = Path(__file__).parents[1] / "data" / "medical" / "reports" / "iu_xray_reports_300.csv"
RICH = Report("r1", {"indication": "45-year-old female with cough",
                     "findings": "There is a small left pleural effusion measuring 12 mm. No pneumothorax. "
                                 "Mild cardiomegaly. The right upper lobe is clear.",
                     "impression": "Small left pleural effusion, 12 mm. Mild cardiomegaly."}, "F")


def test_free_text_is_split_into_sections_and_the_iu_csv_is_read():
    report = parse_report("x", "INDICATION: cough\nFindings: Lungs clear.\nIMPRESSION:\nNo acute disease.")
    assert report.sections == {"indication": "cough", "findings": "Lungs clear.", "impression": "No acute disease."}
    problems: list[str] = []
    reports = list(read_reports(IU, problems))
    assert len(reports) == 299 and problems == ["line 122: the report text is empty."]
    assert reports[1].id == "72" and reports[1].patient_sex == "F"  # "XXXX-year-old female" in the indication


def test_bad_report_files_name_the_line(tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("uid,findings\n1,Lungs clear.\n")
    with pytest.raises(InputRejected, match="line 1: the header lacks column"):
        list(read_reports(missing))
    lines = tmp_path / "reports.jsonl"
    lines.write_text('{"id": "a", "findings": "Clear."}\nnot json\n{"id": "c"}\n{"findings": "x"}\n[1]\n')
    problems: list[str] = []
    assert [r.id for r in read_reports(lines, problems)] == ["a"]
    assert problems == ["line 2: not valid JSON (Expecting value).",
                        "line 3: no report field (findings, impression or text).",
                        "line 4: the report has no id (column 'uid' or 'id').", "line 5: expected a JSON object."]


@pytest.mark.parametrize("kind", sorted(INJECTORS))
def test_each_injected_error_is_labelled_where_it_is(kind):
    changed, injected = INJECTORS[kind](RICH, random.Random(3))
    assert injected.kind == kind and changed.sections != RICH.sections
    start, end = injected.span
    assert changed.text(injected.section)[start:end] == injected.replacement
    assert injected.original != injected.replacement


def test_an_evaluation_set_is_reproducible_and_has_the_requested_rate():
    reports = list(read_reports(IU, []))
    first, again = build_eval(reports, 0.5, 7), build_eval(reports, 0.5, 7)
    assert [label for _, label in first] == [label for _, label in again]
    share = sum(label["has_error"] for _, label in first) / len(first)
    assert 0.4 < share < 0.6
    assert len({label["kind"] for _, label in first if label["has_error"]}) >= 7


def _kinds(report: Report, **options: object) -> set[str]:
    return {flag.kind for flag in check_rules(report, **options)}


def test_rules_see_contradictions_laterality_numbers_and_anatomy():
    assert _kinds(RICH) == set()  # consistent report, no flag
    swapped = Report("l", {**RICH.sections, "impression": "Small right pleural effusion, 12 mm. Mild cardiomegaly."})
    assert "laterality" in _kinds(swapped)
    flipped = Report("n", {"findings": "Lungs are clear of consolidation. There is pneumothorax.",
                           "impression": "No acute cardiopulmonary disease."})
    assert _kinds(flipped) == {"negation"}
    declared = Report("d", {"findings": "Lungs are clear without effusion.", "impression": "There is acute disease."})
    assert _kinds(declared) == {"negation"}
    sized = Report("s", {**RICH.sections, "impression": "Small left pleural effusion, 12 cm. Mild cardiomegaly."})
    assert "number_unit" in _kinds(sized)
    anatomy = Report("a", {"findings": "Surgical clips in the prostate bed.", "impression": "No acute disease."}, "F")
    assert _kinds(anatomy) == {"sex_anatomy"}
    image_side = Report("i", {"findings": "Right upper lobe nodule.", "impression": "Nodule."})
    assert "laterality" in _kinds(image_side, image_laterality="L")


def _write_many(path: Path, copies: int) -> list[str]:
    reports = list(read_reports(IU, []))
    ids = []
    with path.open("w") as handle:
        for n in range(copies):
            for report in reports:
                ids.append(f"{report.id}-{n}")
                handle.write(json.dumps({"id": ids[-1], **report.sections}) + "\n")
    return ids


def test_a_killed_run_resumes_without_losing_or_duplicating_a_report(tmp_path):
    source, out = tmp_path / "many.jsonl", tmp_path / "results.jsonl"
    ids = _write_many(source, 4)
    command = [sys.executable, "-m", "loupe.apps.cli", "check-reports", str(source), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 100):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = out.read_bytes().count(b"\n")
    assert 100 <= partial < len(ids)  # killed part-way
    with out.open("ab") as handle:
        handle.write(b'{"id": "torn')  # as if the kill had landed mid-line
    run = check_file(source, out)
    assert run.skipped == partial and run.checked == len(ids) - partial
    written = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(written) == sorted(ids) and len(set(written)) == len(ids)
    assert finished_ids(out) == set(ids)


def test_check_reports_keeps_its_results_in_the_case_database_once(tmp_path):
    import hashlib

    from click.testing import CliRunner

    from loupe.apps.cli import cli
    from loupe.core.cases.assets import AssetStore
    from loupe.core.cases.db import open_database
    from loupe.core.cases.store import CaseStore

    source, out, home = tmp_path / "Doe_Jane_reports.jsonl", tmp_path / "out.jsonl", tmp_path / "home"
    ids = _write_many(source, 1)
    for _ in range(2):  # the rerun finds everything done and adds nothing
        result = CliRunner().invoke(cli, ["--home", str(home), "check-reports", str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
    store = CaseStore(open_database(f"sqlite:///{home / 'loupe.db'}"), AssetStore(tmp_path / "assets"))
    kept = store.report_checks(hashlib.sha256(source.read_bytes()).hexdigest())
    assert sorted(r.report_id for r in kept) == sorted(ids)
    lines = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert all(r.has_error == lines[r.report_id]["has_error"] and r.checker == "rules" for r in kept)
    events = [e for e in store.audit_events() if e.action == "reports.check"]
    assert [e.detail["new"] for e in events] == [len(ids), 0]
    assert "Doe" not in json.dumps([e.detail for e in events])  # the file is named by its hash only


def test_two_workers_give_the_same_results_as_one(tmp_path):
    source = tmp_path / "some.jsonl"
    _write_many(source, 1)
    check_file(source, tmp_path / "one.jsonl", workers=1)
    check_file(source, tmp_path / "two.jsonl", workers=2)
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()


def test_check_reports_on_a_local_ray_matches_local_processes_and_resumes(tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    source = tmp_path / "some.jsonl"
    ids = _write_many(source, 1)
    check_file(source, tmp_path / "local.jsonl", workers=1)
    out = tmp_path / "ray.jsonl"
    out.write_text("".join(line + "\n" for line in (tmp_path / "local.jsonl").read_text().splitlines()[:40]))
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "check-reports", str(source), "--out", str(out),
                                      "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["already_done"] == 40 and summary["checked"] == len(ids) - 40
    assert sorted(out.read_text().splitlines()) == sorted((tmp_path / "local.jsonl").read_text().splitlines())


def test_scores_and_confusion_matrix(tmp_path):
    labels = [{"id": "a", "has_error": True, "kind": "laterality"}, {"id": "b", "has_error": True, "kind": "negation"},
              {"id": "c", "has_error": False}, {"id": "d", "has_error": False}]
    results = [{"id": "a", "has_error": True, "findings": [{"kind": "laterality", "confidence": 0.8}]},
               {"id": "b", "has_error": False, "findings": []},
               {"id": "c", "has_error": True, "findings": [{"kind": "negation", "confidence": 0.7}]},
               {"id": "d", "has_error": False, "findings": []}]
    report = evaluate(results, labels)
    assert report["simple"]["accuracy"] == 0.5 and report["simple"]["recall"] == 0.5
    assert report["simple"]["balanced_accuracy"] == 0.5 and report["clean_false_flag_rate"] == 0.5
    assert report["complex"]["laterality"]["kind_recall"] == 1.0 and report["complex"]["negation"]["detected"] == 0.0
    confusion_png(report, tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").size[0] > 400


class _ScriptedVLM:
    """Answers in turn from a script: the voting logic under test, not a model's judgement."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.asked = list(answers), []

    def chat(self, messages, options=None):  # noqa: ANN001, ANN201 - the core VLM protocol
        from loupe.core.vlm.base import Answer, RunRecord

        self.asked.append(messages)
        return Answer(self.answers.pop(0), RunRecord("scripted", None, "cpu", "fp32"))


def test_the_vlm_checker_votes_over_prompts_and_asks_the_kind_only_on_a_yes():
    from loupe.domains.medical.reports.vlm_check import VLMChecker, combine, parse_kind, parse_yes_no

    assert parse_yes_no("Yes, the side is wrong.") is True and parse_yes_no("No.") is False
    assert parse_yes_no("maybe") is None and parse_kind("I do not know") is None
    assert parse_kind("Laterality.") == "laterality" and parse_kind("a number/unit error") == "number_unit"
    image = Image.new("RGB", (32, 32))
    yes = _ScriptedVLM(["Yes.", "no", "YES", "Laterality"])
    (flag,) = VLMChecker(yes).flags(RICH, image)
    assert (flag.kind, flag.section, flag.confidence) == ("laterality", "impression", 0.667)
    assert len(yes.asked) == 4 and yes.asked[0][0].images == [image] and "with its image" in yes.asked[0][0].text
    no = _ScriptedVLM(["no", "No.", "yes"])
    assert VLMChecker(no).flags(RICH) == [] and len(no.asked) == 3  # no kind question after a majority no
    rule_flags = check_rules(Report("l", {**RICH.sections, "impression": "Small right pleural effusion, 12 mm."}))
    (boosted,) = [f for f in combine(rule_flags, [flag]) if f.reason.startswith("the model")]
    assert boosted.confidence == pytest.approx(0.767)  # the rules name the same kind


def test_a_dicom_beside_the_report_gives_its_laterality_and_sex_to_the_rules(tmp_path):
    import pydicom

    dx = Path(__file__).parents[1] / "data" / "medical" / "dicom" / "DX_chest_MONOCHROME1.dcm"
    images = tmp_path / "images"
    images.mkdir()
    ds = pydicom.dcmread(dx)  # Image Laterality L, Patient's Sex F
    ds.save_as(images / "a.dcm")
    source = tmp_path / "reports.jsonl"
    same = {"findings": "Right pleural effusion. Prostatic calcification.", "impression": "Right pleural effusion."}
    source.write_text(json.dumps({"id": "a", **same}) + "\n" + json.dumps({"id": "b", **same}) + "\n")
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.jsonl"
        check_file(source, out, workers=workers, images=images)
        results = {r["id"]: {f["kind"] for f in r["findings"]} for r in map(json.loads, out.read_text().splitlines())}
        assert results == {"a": {"laterality", "sex_anatomy"}, "b": set()}  # b has no study beside it


def test_check_reports_with_a_real_tiny_vlm_and_images(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    source = tmp_path / "two.jsonl"
    source.write_text(json.dumps({"id": "a", **RICH.sections}) + "\n"
                      + json.dumps({"id": "b", "findings": "Clear lungs.", "impression": "Normal."}) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(images / "a.png")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "check-reports", str(source), "--out",
                                      str(out), "--checker", "both", "--model", str(tiny_model_dir("smolvlm")),
                                      "--images", str(images)])
    assert result.exit_code == 0, result.output
    summary = result.output[result.output.index('{"total"'):].splitlines()[0]  # after the loader's progress bar
    assert json.loads(summary)["checked"] == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]
    refused = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "check-reports", str(source), "--out",
                                       str(tmp_path / "o2.jsonl"), "--checker", "vlm", "--workers", "2",
                                       "--model", str(tiny_model_dir("smolvlm"))])
    assert refused.exit_code == 1 and "rules-only" in refused.output
