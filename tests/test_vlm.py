"""The transformers backend on tiny real-architecture checkpoints of all three families."""

import json

import pytest
import torch
from PIL import Image

from loupe.core.errors import ModelUnavailable
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import FAMILIES, UnsupportedModel, family_of, language_model, vision_encoder
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.registry import DEFAULT, resolve
from loupe.core.vlm.tiny import has_random_weights

FAMILY_NAMES = sorted(FAMILIES)
IMAGE = Image.new("RGB", (120, 90), (30, 90, 200))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_chat_returns_text_and_a_complete_run_record(tiny_model_dir, family):
    path = tiny_model_dir(family)
    vlm = HFVLM.from_pretrained(path, device="cpu", dtype="fp32")
    assert vlm.family.name == family
    answer = vlm.chat([Message("user", "What is shown?", [IMAGE])],
                      GenerationOptions(max_new_tokens=6, min_new_tokens=6))
    run = answer.run
    assert run.model_id == str(path) and run.adapter is None
    assert (run.device, run.dtype) == ("cpu", "float32")
    assert run.output_tokens == 6
    # visual tokens are counted from the placeholders the processor inserted for this image
    inputs = vlm.prepare([Message("user", "What is shown?", [IMAGE])])
    assert run.visual_tokens == int((inputs["input_ids"] == vlm.image_token_id).sum()) > 0
    assert run.prompt_tokens == inputs["input_ids"].shape[-1] > run.visual_tokens
    assert 0 < run.time_to_first_token_s <= run.total_time_s
    assert run.tokens_per_s > 0
    assert isinstance(answer.text, str)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_stream_yields_the_same_greedy_answer_as_chat(tiny_model_dir, family):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), dtype="fp32")
    messages = [Message("system", "Be brief."), Message("user", "Describe it.", [IMAGE])]
    options = GenerationOptions(max_new_tokens=8, min_new_tokens=8)
    chunks = list(vlm.stream(messages, options))
    assert chunks[-1].run is not None and all(c.run is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == vlm.chat(messages, options).text


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_submodules_are_where_the_family_table_says(tiny_model_dir, family):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), dtype="fp32")
    assert isinstance(vision_encoder(vlm.model, vlm.family), torch.nn.Module)
    assert isinstance(language_model(vlm.model, vlm.family), torch.nn.Module)


def test_dtype_override_loads_bf16_weights(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), dtype="bf16")
    assert next(vlm.model.parameters()).dtype == torch.bfloat16
    assert vlm.chat([Message("user", "Hi", [IMAGE])], GenerationOptions(max_new_tokens=3)).run.dtype == "bfloat16"


def test_tiny_checkpoints_are_marked_as_random_weights(tiny_model_dir, tmp_path):
    assert has_random_weights(tiny_model_dir("qwen2vl"))
    assert not has_random_weights(tmp_path)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="cannot load model"):
        HFVLM.from_pretrained(tmp_path / "nowhere", local_files_only=True)


def test_unsupported_architecture_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(UnsupportedModel, match="not supported"):
        family_of("bert")
    broken = tmp_path / "m"
    broken.mkdir()
    config = json.loads((tiny_model_dir("smolvlm") / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelUnavailable):
        HFVLM.from_pretrained(broken, local_files_only=True)


def test_registry_resolves_short_names():
    assert resolve("smolvlm-256m") == DEFAULT.repo_id == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert resolve("/some/local/path") == "/some/local/path"


def test_the_torch_thread_runs_again_in_a_forked_process():
    """A fork copies only the forking thread: model work in the child (a benchmark's forkserver child,
    a job worker) must start its own torch thread rather than wait on the parent's forever."""
    import multiprocessing as mp

    from loupe.core.vlm import worker

    assert worker.call(lambda: 1) == 1  # the parent's torch thread is running when the child forks
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_on_torch_thread).get(timeout=30) == 6  # the old thread: waited forever


def _on_torch_thread() -> int:
    from loupe.core.vlm import worker

    return worker.call(lambda: 2 * 3)
