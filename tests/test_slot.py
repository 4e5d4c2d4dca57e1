"""The served-model slot: honest status when loading fails, and the demo fallback."""

import pytest

from loupe.core.errors import ModelUnavailable
from loupe.core.vlm.slot import ModelSlot


def test_failed_load_reports_why_and_serves_nothing(tmp_path):
    slot = ModelSlot(local_files_only=True)
    slot.load(tmp_path / "missing-model")
    assert slot.status.state == "failed" and "cannot load model" in slot.status.error
    with pytest.raises(ModelUnavailable, match="No model is available: cannot load model"):
        slot.get()


def test_background_load_becomes_ready(tiny_model_dir):
    slot = ModelSlot(dtype="fp32")
    slot.load(tiny_model_dir("qwen2vl"), background=True)
    import time

    for _ in range(200):
        if slot.status.state != "loading":
            break
        time.sleep(0.05)
    assert slot.status.state == "ready" and slot.status.demo
    assert slot.get().family.name == "qwen2vl"


def test_demo_model_is_built_once_and_flagged(tmp_path):
    slot = ModelSlot(dtype="fp32")
    slot.load_demo(tmp_path)
    assert slot.status.state == "ready" and slot.status.demo
    built = sorted(p.name for p in (tmp_path / "demo-smolvlm").iterdir())
    slot.load_demo(tmp_path)
    assert sorted(p.name for p in (tmp_path / "demo-smolvlm").iterdir()) == built


def test_a_failed_switch_keeps_the_model_that_answered(tmp_path, tiny_model_dir):
    """A switch keeps the loaded model answering while the new one loads, and keeps it when the new one fails;
    a plain load (a start) drops it first."""
    from loupe.apps.web.render import status_banner

    slot = ModelSlot(dtype="fp32", local_files_only=True)
    slot.load_demo(tmp_path)
    demo = slot.get()
    slot.load(tmp_path / "absent-model", keep_current=True)
    assert slot.get() is demo and slot.status.state == "ready" and slot.status.demo
    assert "cannot load model" in slot.status.switch_error and slot.status.switching_to is None
    banner = status_banner(slot.status)
    assert "The model switch failed" in banner and "This model still answers" in banner
    slot.load(tiny_model_dir("smolvlm"), keep_current=True)  # a switch that works replaces it
    assert slot.get() is not demo and slot.status.switch_error is None
    slot.load(tmp_path / "absent-model")  # not a switch: nothing is left to answer
    with pytest.raises(ModelUnavailable):
        slot.get()
