"""The budgets: one place, set from the environment, refusals that name the limit and the setting."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from loupe.core.budgets import BudgetExceeded, Budgets

DOCS = Path(__file__).resolve().parents[1] / "docs" / "budgets.md"


def test_budgets_come_from_the_environment_and_bad_values_are_named() -> None:
    budgets = Budgets.from_env({"LOUPE_MAX_FRAMES": "5_000", "LOUPE_MAX_PAGES": "12"})
    assert (budgets.max_frames, budgets.max_pages, budgets.max_slices) == (5000, 12, Budgets().max_slices)
    with pytest.raises(ValueError, match="LOUPE_MAX_PAGES must be a whole number"):
        Budgets.from_env({"LOUPE_MAX_PAGES": "many"})


def test_a_refusal_names_the_amount_the_limit_and_the_setting() -> None:
    budgets = Budgets(max_pixels=1_000_000)
    budgets.check("max_pixels", 1_000_000, "The image")  # at the limit: accepted
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check("max_pixels", 144_000_000, "Page 2 of the TIFF")
    assert str(refused.value) == ("Page 2 of the TIFF is 144.0 megapixels; Loupe accepts up to 1.0 megapixels "
                                  "(an administrator can raise LOUPE_MAX_IMAGE_PIXELS).")
    with pytest.raises(BudgetExceeded, match="1,000,001 pixels; Loupe accepts up to 1,000,000 pixels"):
        budgets.check("max_pixels", 1_000_001, "The image")  # rounding would hide the difference
    copy = pickle.loads(pickle.dumps(refused.value))  # crosses from a worker process intact
    assert (str(copy), copy.budget) == (str(refused.value), "max_pixels")


def test_the_operator_docs_list_every_budget_with_its_default() -> None:
    text = DOCS.read_text()
    for name, limit, default in Budgets.described():
        row = re.search(rf"^\| `{limit.setting}` \| ([\d,]+)", text, re.MULTILINE)
        assert row, f"{limit.setting} is missing from docs/budgets.md"
        assert int(row.group(1).replace(",", "")) == default, name
