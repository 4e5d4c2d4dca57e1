"""Every hostile specimen (loupe.apps.robustness) through the app's own path: the upload read in a worker under
the default budgets, as ``loupe serve`` runs it. Each must be refused with the budget it names, the refusal
must name the setting, and reaching it must cost the worker little memory. Outcomes of everyday files, and a
second user's page loads meanwhile, are measured by ``loupe bench robustness``."""

from __future__ import annotations

from pathlib import Path

import pytest

from loupe.apps.bench_robustness import check_report_in_worker
from loupe.apps.robustness import Specimen, specimens
from loupe.apps.service import LoupeService, ingest_in_worker
from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.config import Settings
from loupe.core.errors import InputRejected

# Medical specimens go through tests/test_bombs_medical.py, which runs them all in one child with a tighter memory
# bound (peak over the child's base); generating the deflate bombs twice would cost the suite half a minute.
REFUSED = [s for s in specimens() if s.expect == "refused" and s.domain != "medical"]
# A refusal before decoding costs the worker far less than this, over what it held when the job began (a
# worker keeps what earlier jobs loaded, OCR models and the like: its total says which jobs ran before, not
# what this file cost).
PEAK_RSS_MARGIN = 256 * 2**20


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> LoupeService:
    home = tmp_path_factory.mktemp("bombs") / "home"
    return LoupeService.open(Settings(home=home, database_url=None, model="unused", budgets=Budgets()))


@pytest.mark.parametrize("specimen", REFUSED, ids=[s.name for s in REFUSED])
def test_a_hostile_file_is_refused_cheaply_naming_its_budget(service: LoupeService, specimen: Specimen,
                                                              tmp_path: Path) -> None:
    path = specimen.make(tmp_path)
    with pytest.raises(InputRejected) as refused:
        if specimen.kind == "question":
            service.limits.check("max_question_chars", len(path.read_text().strip()), "The question")
        elif specimen.kind == "report":
            service.jobs.run("bombs", "Checking the report", check_report_in_worker,
                             (path.read_text(), service.limits))
        else:
            service.jobs.run("bombs", "Reading the file", ingest_in_worker,
                             (service.settings, type(service.domains[specimen.domain]), path))
    message = str(refused.value)
    assert str(path) not in message and path.name not in message  # no server path, no file name
    if specimen.budget is not None:
        assert isinstance(refused.value, BudgetExceeded) and refused.value.budget == specimen.budget, message
        setting = Budgets.__dataclass_fields__[specimen.budget].metadata["limit"].setting
        assert setting in message
    stats = getattr(refused.value, "job_stats", None)
    if specimen.kind != "question":
        assert stats is not None, "the refusal came from the worker"
        grown, peak = stats.grown_bytes / 2**20, stats.peak_rss_bytes / 2**20
        print(f"{specimen.name}: worker peak {peak:.0f} MiB (+{grown:.0f} since its start), {stats.cpu_seconds:.2f} s")
        assert stats.grown_bytes < PEAK_RSS_MARGIN
