"""The ``loupe`` command: help, users, models, db, and one-line errors."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from loupe.apps.cli import cli
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
    assert "revision 0001" in run("db", "upgrade").output
    assert run("db", "current").output.strip() == "0001"


def test_models_list_and_make_tiny(run, tmp_path):
    assert "HuggingFaceTB/SmolVLM-256M-Instruct" in run("models", "list").output
    target = tmp_path / "tiny-llava"
    result = run("models", "make-tiny", "--family", "llava-ov", str(target))
    assert result.exit_code == 0, result.output
    assert has_random_weights(target)
    assert json.loads((target / "config.json").read_text())["model_type"] == "llava_onevision"
    assert run("models", "make-tiny", "--family", "gpt", str(target)).exit_code == 2


def test_bench_chat_prints_json_per_dtype(run):
    result = run("bench", "chat", "--size", "tiny", "--repeats", "1", "--new-tokens", "4",
                 "--dtypes", "auto,fp32")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert [r["dtype_requested"] for r in report["results"]] == ["auto", "fp32"]
    fp32 = report["results"][1]
    assert fp32["output_tokens"] == 4 and fp32["visual_tokens"] > 0 and fp32["peak_rss_mib"] > 0
    assert fp32["ttft_speedup_vs_fp32"] == 1.0
