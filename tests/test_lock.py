"""The lock file: every install (make install/serve/test, .ci/run) takes exact versions that the suite
passed with, inside pyproject.toml's honest ranges, and a clean venv resolves to exactly that set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)")


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[3]
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_dependency_is_pinned_inside_its_declared_range():
    pins = locked()
    assert len(pins) > 50, "the lock must cover the whole tree, not only the direct dependencies"
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not locked"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"{req.name}=={pins[name]} is outside pyproject's {req.specifier}"


def test_known_break_is_bounded_in_pyproject():
    """transformers >= 5.24 refuses the published peft (< 0.22) for adapters: the range must say so."""
    transformers = next(r for r in declared() if canonicalize_name(r.name) == "transformers")
    peft = Version(locked()["peft"])
    if peft < Version("0.22"):
        assert not transformers.specifier.contains("5.24.0"), "transformers 5.24+ needs peft >= 0.22"


def test_torch_is_the_cpu_build():
    assert locked()["torch"].endswith("+cpu")
    assert not any(name.startswith("nvidia-") for name in locked()), "a CUDA torch slipped into the lock"


@pytest.mark.skipif(os.environ.get("LOUPE_CHECK_LATEST") == "1", reason="check-latest runs newer versions")
def test_the_running_environment_is_the_lock():
    """The suite runs on the locked versions, so a green run vouches for the lock."""
    drift = {}
    for name, version in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(version):
            drift[name] = (version, installed)
    assert not drift, f"installed versions differ from requirements.lock (locked, installed): {drift}"


def test_the_lock_alone_resolves_to_exactly_itself(tmp_path):
    """What a fresh clone installs: the lock resolved on its own (nothing installed counts), with nothing added
    or changed. uv's resolver answers in seconds where pip's dry run took 85 s; `make install` (pip, from the
    same lock, then `pip check`) is what every CI run starts with."""
    uv = Path(sys.executable).with_name("uv")
    resolved_file = tmp_path / "resolved.txt"
    run = subprocess.run(
        [str(uv), "pip", "compile", str(LOCK), "--python-version", "3.11", "--find-links", "/opt/wheels",
         "--no-emit-find-links", "--no-header", "--no-annotate", "-q", "-o", str(resolved_file)],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    resolved = {canonicalize_name(m[1]): m[3] for line in resolved_file.read_text().splitlines()
                if (m := PIN.match(line))}
    assert resolved == locked()
