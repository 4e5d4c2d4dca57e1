"""The ``loupe`` command: help, users, models, db, and one-line errors."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loupe.apps.cli import cli
from loupe.apps.cli_common import open_store
from loupe.apps.firstrun import ensure_admin
from loupe.core.cases.db import head_revision
from loupe.core.config import Settings
from loupe.core.vlm.tiny import has_random_weights


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args: str, **env: str):
        return runner.invoke(cli, ["--home", str(tmp_path / "home"), *args], env=env)

    return invoke


def test_help_lists_every_command_group(run):
    result = run("--help")
    assert result.exit_code == 0
    for command in ("serve", "users", "models", "db", "bench"):
        assert f"  {command} " in result.output


def test_users_add_and_list(run):
    result = run("users", "add", "carol", "--role", "reviewer", LOUPE_NEW_PASSWORD="carol-password")
    assert result.exit_code == 0, result.output
    assert "carol\treviewer\tactive" in run("users", "list").output


def _user_events(home) -> list[tuple[int | None, str, dict]]:
    store = open_store(Settings(home=home, database_url=None))
    return [(e.user_id, e.action, e.detail) for e in store.audit_events() if e.action.startswith("user.")]


def test_users_passwd_disable_enable_role(run, tmp_path):
    run("users", "add", "root", "--role", "admin", LOUPE_NEW_PASSWORD="root-password")
    run("users", "add", "carol", LOUPE_NEW_PASSWORD="carol-password")
    runner = CliRunner()
    prompted = runner.invoke(cli, ["--home", str(tmp_path / "home"), "users", "passwd", "carol"],
                             input="carol-new-pass\ncarol-new-pass\n")
    assert prompted.exit_code == 0, prompted.output
    assert prompted.output == "Password: \nRepeat for confirmation: \npassword of 'carol' changed\n"
    assert run("users", "disable", "carol").output == "user 'carol' disabled\n"
    assert "carol\tuser\tdisabled" in run("users", "list").output
    assert run("users", "enable", "carol").output == "user 'carol' enabled\n"
    assert run("users", "role", "carol", "reviewer").output == "user 'carol' now has role reviewer\n"
    assert run("users", "role", "carol", "root").exit_code == 2
    store = open_store(Settings(home=tmp_path / "home", database_url=None))
    assert store.authenticate("carol", "carol-new-pass").role == "reviewer"
    cli_ = {"via": "cli"}
    assert _user_events(tmp_path / "home")[2:] == [
        (None, "user.passwd", {"username": "carol", **cli_}),
        (None, "user.disable", {"username": "carol", **cli_}),
        (None, "user.enable", {"username": "carol", **cli_}),
        (None, "user.role", {"username": "carol", "role": "reviewer", "previous": "user", **cli_}),
    ]


def test_users_commands_refuse_with_one_error_line(run):
    run("users", "add", "root", "--role", "admin", LOUPE_NEW_PASSWORD="root-password")
    for args, message in [(("disable", "root"), "error: cannot disable 'root': it is the last active admin"),
                          (("role", "root", "user"), "error: cannot demote 'root': it is the last active admin"),
                          (("enable", "nobody"), "error: no user named 'nobody'")]:
        result = run("users", *args)
        assert result.exit_code == 1 and result.output.startswith(message) and result.output.count("\n") == 1
    result = run("users", "passwd", "root", LOUPE_NEW_PASSWORD="short")
    assert result.exit_code == 1 and result.output == "error: passwords need at least 8 characters\n"


def test_users_passwd_admin_removes_the_first_start_password_file(run, tmp_path):
    settings = Settings(home=tmp_path / "home", database_url=None)
    ensure_admin(open_store(settings), settings.initial_password_file, interactive=False)
    assert stat.S_IMODE(settings.initial_password_file.stat().st_mode) == 0o600
    assert run("users", "passwd", "admin", LOUPE_NEW_PASSWORD="admin-chosen").exit_code == 0
    assert not settings.initial_password_file.exists()


def test_users_commands_are_quiet_and_import_no_model_or_web_stack(tmp_path):
    """Only the result is printed (no Alembic INFO lines, even when migrating) and torch & co stay unloaded."""
    home = tmp_path / "home"
    script = (
        "import sys\n"
        "from loupe.apps.cli import cli\n"
        "for args in (['users', 'add', 'erin'], ['users', 'list']):\n"
        f"    cli(['--home', {str(home)!r}, *args], standalone_mode=False)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'gradio'})\n"
        "print('heavy:', heavy)\n"
    )
    env = {"LOUPE_NEW_PASSWORD": "erin-password", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "user 'erin' added with role user\nerin\tuser\tactive\nheavy: []\n"
    assert result.stderr == ""


def test_errors_are_one_line_and_non_zero(tmp_path):
    home = tmp_path / "home"
    args = [sys.executable, "-m", "loupe.apps.cli", "--home", str(home), "users", "add", "dave"]
    env = {"LOUPE_NEW_PASSWORD": "dave-password", "PATH": "/usr/bin:/bin"}
    assert subprocess.run(args, env=env, capture_output=True, text=True).returncode == 0
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == "error: user 'dave' already exists"
    assert "Traceback" not in again.stderr


def test_db_upgrade_and_current(run):
    assert f"revision {head_revision()}" in run("db", "upgrade").output
    assert run("db", "current").output.strip() == head_revision()


def test_models_list_and_make_tiny(run, tmp_path):
    assert "HuggingFaceTB/SmolVLM-256M-Instruct" in run("models", "list").output
    target = tmp_path / "tiny-llava"
    result = run("models", "make-tiny", "--family", "llava-ov", str(target))
    assert result.exit_code == 0, result.output
    assert has_random_weights(target)
    assert json.loads((target / "config.json").read_text())["model_type"] == "llava_onevision"
    assert run("models", "make-tiny", "--family", "gpt", str(target)).exit_code == 2


def test_bench_chat_compares_loupe_with_plain_transformers(run):
    result = run("bench", "chat", "--size", "tiny", "--repeats", "1", "--new-tokens", "4", "--images", "512")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    baseline, loupe = report["results"]
    assert (baseline["config"], loupe["config"]) == ("baseline", "loupe")
    [base_row], [our_row] = baseline["images"], loupe["images"]
    assert our_row["detail"] == "standard" and our_row["visual_tokens"] <= base_row["visual_tokens"]
    assert base_row["time_to_first_token_s"] > 0 and our_row["followup_time_to_first_token_s"] > 0
    assert loupe["peak_rss_mib"] > 0
    summary = report["summary"]
    assert set(summary) == {"first_answer_speedup_512", "first_answer_speedup_1024x768", "followup_ttft_fraction",
                            "encoder_tile_speedup", "encoder_cosine", "decode_speedup"}
    assert summary["first_answer_speedup_512"] > 0 and summary["first_answer_speedup_1024x768"] is None
    # The encoder row: the same one-tile pixels through both configurations' encoders.
    assert baseline["encoder_one_tile_s"] > 0 and loupe["encoder_one_tile_s"] > 0
    assert summary["encoder_tile_speedup"] > 0 and 0.9 < summary["encoder_cosine"] <= 1.0001


def test_bench_layout_scores_both_methods_on_the_shipped_pages(run):
    result = run("bench", "layout")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert set(report["methods"]) == {"geometry", "model"}
    geometry = report["methods"]["geometry"]["files"]
    assert geometry["documents/multi_page.pdf"]["title"]["recall"] == 1.0
    assert geometry["documents/table_page.pdf"]["table"]["recall"] > 0.9
    summary = report["summary"]
    assert summary["title_recall_geometry"] >= summary["title_recall_model"] > 0.5
    assert summary["geometry_speedup_vs_model"] > 1


def test_bench_docs_scores_turned_scans_and_text_drawn_twice_against_the_reference(run, tmp_path):
    """The scanned page at every quarter turn reads as its reference, in order (0 garbage pages); a page whose
    text a PDF draws twice reads it once; the PDFs' own text layer is the baseline (nothing for a scan)."""
    import shutil

    (tmp_path / "groundtruth").mkdir()
    documents = Path(__file__).parents[1] / "data" / "documents"
    shutil.copy(documents / "ocr_test.pdf", tmp_path)
    shutil.copy(documents / "groundtruth" / "ocr_test.md", tmp_path / "groundtruth")
    result = run("bench", "docs", "--data", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    scores = {r["document"]: r for r in report["results"]}
    from loupe.apps.bench_docs_pages import GENERATED

    assert set(scores) == {"ocr_test.pdf", "ocr_test turned 90°", "ocr_test turned 180°", "ocr_test turned 270°",
                           "text drawn twice", *GENERATED, "rows ruled, columns not, scanned"}
    # the back cover's book number sits at the foot of its left column and is read after the title there
    assert all(r["text_similarity"] == 1.0 for name, r in scores.items() if name != "back cover"), report["results"]
    assert scores["back cover"]["text_similarity"] > 0.95
    assert scores["ocr_test turned 180°"]["baseline_text_similarity"] == 0.0  # a scan has no text layer
    summary = report["summary"]
    assert summary["garbage_pages"] == 0 and summary["text_similarity"] > 0.99
    assert summary["table_recall"] == summary["table_precision"] == summary["code_recall"] == 1.0
    assert summary["heading_recall"] == summary["heading_precision"] == 1.0
    assert {"text_similarity_vs_baseline", "baseline_text_similarity"} <= set(summary)


def test_bench_dicom_compares_de_identification_with_bare_reading(run):
    result = run("bench", "dicom", "--rounds", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["files"] == 9  # the shipped files both configurations can decode
    assert [r["config"] for r in report["results"]] == ["dcmread", "loupe"]
    assert report["summary"]["deid_throughput_ratio_vs_dcmread"] > 0


def test_bench_reports_gives_speed_and_accuracy_of_the_rule_checker(run):
    result = run("bench", "reports", "--seeds", "1", "--copies", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    summary = report["summary"]
    assert set(summary) == {"rules_reports_per_s_per_core", "workers2_speedup", "simple_balanced_accuracy_rule_kinds",
                            "clean_false_flag_rate", "simple_balanced_accuracy_rule_kinds_cues"}
    assert summary["rules_reports_per_s_per_core"] > 0 and 0.5 < summary["simple_balanced_accuracy_rule_kinds"] <= 1
    assert report["batch_reports"] == 2 * report["reports"] and report["rules_plus_tiny_vlm_reports_per_s"] > 0
