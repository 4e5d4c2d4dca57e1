"""Fine-tuning a LoRA adapter: a real learning test on a tiny model, reload with identical logits, resume
on the same loss curve, bad JSONL lines named, the CLI with its adapter card."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.core.errors import AccessDenied, InputRejected, ModelUnavailable
from loupe.core.finetune.code_words import LEARNING_INIT_STD, WORDS, learning_config, write_code_words
from loupe.core.finetune.data import csv_to_jsonl, read_examples
from loupe.core.finetune.train import ADAPTER, TrainConfig, add_lora, encode_example, evaluate, lm_target_modules, train
from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.tiny import make_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny("smolvlm", tmp_path_factory.mktemp("ft-model"), init_std=LEARNING_INIT_STD)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_code_words(tmp_path_factory.mktemp("ft-data"))


def _vlm(model: Path) -> HFVLM:
    return HFVLM.from_pretrained(model, device="cpu", dtype="fp32", engine="plain")


@pytest.fixture(scope="module")
def trained(model, data, tmp_path_factory) -> dict:
    """The learning run, once per module: the base model's score, then LoRA on the 16 examples."""
    out = tmp_path_factory.mktemp("ft-out")
    examples = read_examples(data)
    vlm = _vlm(model)
    config = learning_config()
    items = [encode_example(vlm, e, config.detail) for e in examples]
    base = evaluate(vlm, items, config)
    state = train(vlm, examples, examples, out, config)
    return {"vlm": vlm, "out": out, "items": items, "base": base, "state": state, "config": config}


def test_lora_learns_the_answers_and_reloads_with_identical_logits(model, trained):
    vlm, items, state = trained["vlm"], trained["items"], trained["state"]
    assert trained["base"]["exact_match"] <= 0.1  # the base model does not know them
    assert state.evals[-1]["exact_match"] >= 0.9 and state.losses[-1] < state.losses[0] / 10
    # only the language model was adapted, and nothing else was saved beside the LoRA weights
    trained_params = {n for n, p in vlm.model.named_parameters() if p.requires_grad}
    assert trained_params and all("lora_" in n and "vision" not in n and "connector" not in n
                                  for n in trained_params)
    assert all(".text_model." in name for name in lm_target_modules(vlm.model, vlm.family))
    adapter_config = json.loads((trained["out"] / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"] is None
    vlm.use_adapter(ADAPTER)
    with torch.no_grad():
        expected = vlm.model(**items[3].inputs).logits
    fresh = _vlm(model)
    fresh.load_adapter(trained["out"] / "adapter", "med-v1")
    fresh.use_adapter("med-v1")
    with torch.no_grad():
        reloaded = fresh.model(**items[3].inputs).logits
    assert torch.equal(expected, reloaded)


def test_the_int8_engine_answers_with_a_hot_swapped_adapter(model, trained):
    """The app's default CPU engine carries the adapter (peft over the int8 layers); answers switch
    between base and adapter per request without reloading, the vision cache stays valid across
    the switch and a conversation cached under one adapter is not continued under another."""
    vlm = HFVLM.from_pretrained(model, device="cpu", engine="int8")
    vlm.load_adapter(trained["out"] / "adapter", "med-v1")
    items = trained["items"]

    def answers(adapter: str | None) -> list[str]:
        return [vlm.chat(item.prompt, GenerationOptions(max_new_tokens=12, detail="low", adapter=adapter)).text.strip()
                for item in items]

    adapted = answers("med-v1")
    base = answers(None)
    hits = sum(a == item.answer for a, item in zip(adapted, items, strict=True))
    assert hits / len(items) >= 0.9, adapted
    assert sum(a == item.answer for a, item in zip(base, items, strict=True)) / len(items) <= 0.1
    assert answers("med-v1") == adapted  # back and forth: the same weights each time
    vlm.load_adapter(trained["out"] / "adapter", "med-v1")  # the same files: nothing is loaded again
    assert vlm.adapters.names == ["med-v1"]
    first = list(vlm.stream(items[0].prompt, GenerationOptions(max_new_tokens=4, detail="low", adapter="med-v1"),
                            conversation="c"))[-1].run
    follow = [*items[0].prompt, Message("assistant", "x"), Message("user", "And again?")]
    other = list(vlm.stream(follow, GenerationOptions(max_new_tokens=4, detail="low"), conversation="c"))[-1].run
    assert first.adapter == "med-v1" and other.adapter is None
    assert other.extra["reused_tokens"] == 0 and other.extra["cached_features"] is True
    with pytest.raises(ModelUnavailable, match="not loaded"):
        vlm.chat(items[0].prompt, GenerationOptions(adapter="never-loaded"))
    # bad adapter files: one clear message, and the loaded adapter keeps answering
    empty = trained["out"].parent / "empty-adapter"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ModelUnavailable, match="no adapter weights"):
        vlm.load_adapter(empty, "broken")
    corrupt = trained["out"].parent / "corrupt-adapter"
    corrupt.mkdir(exist_ok=True)
    (corrupt / "adapter_config.json").write_bytes((trained["out"] / "adapter" / "adapter_config.json").read_bytes())
    (corrupt / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelUnavailable, match="cannot load adapter 'broken'"):
        vlm.load_adapter(corrupt, "broken")
    assert vlm.adapters.names == ["med-v1"] and answers("med-v1") == adapted
    # a giant image's tiles are scored with the adapter the answer will use, whatever ran before
    from types import SimpleNamespace

    from loupe.core.pyramid.attention import AttentionScorer

    tile = SimpleNamespace(image=Image.effect_noise((64, 64), 60).convert("RGB"))
    thumbnail = Image.new("RGB", (64, 64), (90, 90, 90))

    def scores(adapter: str | None) -> np.ndarray:
        return AttentionScorer(vlm, adapter=adapter).score("Which code?", thumbnail, [tile])[0]

    adapted_map = scores("med-v1")
    base_map = scores(None)
    assert not np.allclose(adapted_map, base_map)
    assert np.array_equal(scores("med-v1"), adapted_map)


def test_resume_continues_the_same_loss_curve(model, data, tmp_path):
    examples = read_examples(data)[:8]
    config = TrainConfig(learning_rate=1e-3, epochs=4, accumulate=2, checkpoint_every=5, eval_every=1000)
    whole = train(_vlm(model), examples, [], tmp_path / "whole", config)
    first = train(_vlm(model), examples, [], tmp_path / "cut", TrainConfig(**{**config.__dict__, "max_steps": 7}))
    assert first.step == 7  # as if killed after step 7 (its checkpoint written)
    resumed = train(_vlm(model), examples, [], tmp_path / "cut", config, resume=True)
    assert resumed.step == whole.step == 16
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)


@pytest.mark.parametrize("family", ["smolvlm", "qwen2vl", "llava-ov"])
def test_training_on_stored_vision_features_computes_what_the_pixels_give(family, tiny_model_dir, data):
    """Examples carry the frozen vision tower's output instead of pixels (encoded once, not every step):
    the loss and its LoRA gradients are those of the pixel path."""
    vlm = _vlm(tiny_model_dir(family))
    example = read_examples(data)[5]
    add_lora(vlm, TrainConfig())
    vlm.model.eval()  # LoRA dropout off: both passes must see the same network
    results = []
    for stored in (False, True):
        item = encode_example(vlm, example, "low", vision_features=stored)
        assert ("pixel_values" in item.inputs) is not stored
        vlm.model.zero_grad(set_to_none=True)
        loss = vlm.model(**item.inputs, labels=item.labels).loss
        loss.backward()
        grads = [p.grad.clone() for n, p in vlm.model.named_parameters() if "lora_B" in n]
        results.append((loss.detach(), grads))
    (pixel_loss, pixel_grads), (stored_loss, stored_grads) = results
    assert torch.allclose(pixel_loss, stored_loss, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(pixel_grads, stored_grads, strict=True))


def test_the_domains_system_prompt_opens_each_example_and_is_never_a_label(model, data):
    vlm = _vlm(model)
    example = read_examples(data)[2]
    plain = encode_example(vlm, example, "low", vision_features=False)
    framed = encode_example(vlm, example, "low", vision_features=False, system_prompt="You read codes.")
    tokenizer = vlm.processor.tokenizer
    assert "You read codes." in tokenizer.decode(framed.inputs["input_ids"][0])
    assert framed.prompt[0].role == "system" and plain.prompt[0].role == "user"
    for item in (plain, framed):
        labelled = item.inputs["input_ids"][0][item.labels[0] != -100]
        assert tokenizer.decode(labelled, skip_special_tokens=True).strip() == "charlie"


def test_bad_lines_are_reported_with_their_numbers(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    lines = [
        json.dumps({"images": ["ok.png"], "messages": [{"role": "user", "content": "<image>Q?"},
                                                       {"role": "assistant", "content": "A."}]}),
        "{not json",
        json.dumps({"images": ["missing.png"], "messages": [{"role": "user", "content": "<image>Q?"},
                                                            {"role": "assistant", "content": "A."}]}),
        json.dumps({"messages": [{"role": "user", "content": "Q?"}]}),
        json.dumps({"images": ["../../etc/passwd"], "messages": [{"role": "robot", "content": "hi"}]}),
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputRejected) as refused:
        read_examples(tmp_path / "bad.jsonl")
    message = str(refused.value)
    assert "line 2: not valid JSON" in message and "line 3, field 'images': 'missing.png' does not exist" in message
    assert "line 4, field 'messages': no assistant answer" in message
    assert "line 5, field 'images': '../../etc/passwd' is outside the data folder" in message
    assert "line 5, field 'messages[0]'" in message and "line 1" not in message


def test_the_cli_trains_from_a_csv_and_writes_the_adapter_card(model, tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli

    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 20, 20)).save(tmp_path / f"p{i}.png")
    (tmp_path / "pairs.csv").write_text("image,question,answer\n" + "".join(
        f"p{i}.png,What is item {i}?,{WORDS[i]}\n" for i in range(4)))
    assert csv_to_jsonl(tmp_path / "pairs.csv", tmp_path / "train.jsonl") == 4
    home = ["--home", str(tmp_path / "home")]
    result = CliRunner().invoke(cli, [*home, "finetune", "--domain", "general", "--base", str(model), "--data",
                                      str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "train.jsonl"),
                                      "--out", str(tmp_path / "adapter-v1"), "--epochs", "2", "--accumulate", "2"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "adapter-v1" / "adapter_card.json").read_text())
    assert card["domain"] == "general" and card["data"]["examples"] == 4 and card["steps"] == 4
    assert 0 < card["trainable_fraction"] < 1 and card["adapter_bytes"] > 0
    assert [e["step"] for e in card["evaluations"]] == [4]  # fewer steps than eval_every: the last is evaluated
    assert len(card["data"]["sha256"]) == 64 and card["hyperparameters"]["rank"] == 8
    from loupe.domains.general import GeneralDomain

    assert card["hyperparameters"]["system_prompt"] == GeneralDomain.system_prompt  # what the app will send
    bad = CliRunner().invoke(cli, [*home, "finetune", "--domain", "general", "--base", str(model)])
    assert bad.exit_code != 0 and "missing --data, --out" in bad.output
    train_args = ["--base", str(model), "--data", str(tmp_path / "train.jsonl"), "--epochs", "1"]
    again = CliRunner().invoke(cli, [*home, "finetune", "--domain", "general", *train_args,
                                     "--out", str(tmp_path / "adapter-v1")])
    assert again.exit_code != 0 and "already holds a training run: add --resume" in again.output
    clash = CliRunner().invoke(cli, [*home, "finetune", "--domain", "documents", *train_args,
                                     "--out", str(tmp_path / "elsewhere" / "adapter-v1")])
    assert clash.exit_code != 0 and "already exists for general; choose another --out" in clash.output
    assert not (tmp_path / "elsewhere").exists()  # refused before any training
    # the registry: listed, activated for its domain only, removed
    runner = CliRunner()
    (listed,) = [json.loads(line) for line in runner.invoke(cli, [*home, "adapters", "list"]).output.splitlines()]
    assert listed["name"] == "adapter-v1" and listed["domain"] == "general" and listed["active"] is False
    assert listed["metrics"]["steps"] == 4 and Path(listed["path"]).is_dir()
    wrong = runner.invoke(cli, [*home, "adapters", "activate", "adapter-v1", "--domain", "medical"])
    assert wrong.exit_code == 1 and "trained for general, not medical" in wrong.output
    unknown = runner.invoke(cli, [*home, "adapters", "deactivate", "--domain", "radiology"])
    assert unknown.exit_code != 0 and "unknown domain 'radiology'" in unknown.output
    assert runner.invoke(cli, [*home, "adapters", "activate", "adapter-v1", "--domain", "general"]).exit_code == 0
    assert json.loads(runner.invoke(cli, [*home, "adapters", "list"]).output)["active"] is True
    assert runner.invoke(cli, [*home, "adapters", "remove", "adapter-v1"]).exit_code == 0
    assert runner.invoke(cli, [*home, "adapters", "list"]).output == ""
    assert (tmp_path / "adapter-v1" / "adapter").is_dir()  # the files stay


def test_export_reviews_keeps_accepted_and_corrected_answers_of_the_domain_only(tmp_path, tiny_model_dir):

    from click.testing import CliRunner

    from loupe.apps.cli import cli
    from loupe.apps.service import LoupeService
    from loupe.core.config import Settings
    from loupe.core.vlm.base import GenerationOptions

    home = tmp_path / "home"
    service = LoupeService.open(Settings(home=home, database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    ana = service.store.add_user("ana", "ana-password-12", "user")
    photo = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(photo, "PNG")
    case_id = service.create_case(ana, "general", io.BytesIO(photo.getvalue()), "Jane Doe 1961 knee")  # PHI in title
    verdicts = {"Is it sharp?": ("accepted", None), "What is shown?": ("edited", "A grey noise pattern."),
                "Any fracture?": ("rejected", None), "Unreviewed?": (None, None)}
    answers = {}
    for question, (verdict, edited) in verdicts.items():
        final = list(service.ask(ana, case_id, question, GenerationOptions(max_new_tokens=3)))[-1]
        answers[question] = final.text
        if verdict:
            service.store.review(ana, final.message_id, verdict, edited)
    other = service.create_case(ana, "documents", io.BytesIO(photo.getvalue()), "a page")
    final = list(service.ask(ana, other, "Read it.", GenerationOptions(max_new_tokens=3)))[-1]
    service.store.review(ana, final.message_id, "accepted")
    out = tmp_path / "export" / "train.jsonl"
    result = CliRunner().invoke(cli, ["--home", str(home), "finetune", "export-reviews", "--domain", "general",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"domain": "general", "examples": 2, "cases": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    pairs = {row["messages"][0]["content"].replace("<image>", ""): row["messages"][1]["content"] for row in rows}
    assert pairs == {"Is it sharp?": answers["Is it sharp?"], "What is shown?": "A grey noise pattern."}
    assert "Doe" not in out.read_text() and all(len(Path(p).stem) == 64 for r in rows for p in r["images"])
    assert len(read_examples(out)) == 2  # valid training data as written
    events = [e for e in service.store.audit_events() if e.action == "reviews.export"]
    assert events and events[-1].detail == {"domain": "general", "examples": 2, "cases": 1}


def test_the_app_answers_with_the_domains_active_adapter(model, trained, tmp_path):
    """loupe adapters activate -> the next question of the domain goes through the adapter, on the same
    loaded model; the run record and the footnote name it; the base model is back after deactivation."""

    from loupe.apps.service import LoupeService
    from loupe.apps.web.render import run_footnote
    from loupe.core.config import Settings

    service = LoupeService.open(Settings(home=tmp_path / "home", database_url=None, model="unused"))
    service.slot.load(model)  # the app's own engine for this machine
    vlm = service.slot.get()
    store = service.store
    ana = store.add_user("ana", "ana-password-12", "user")
    root = store.add_user("root", "root-password-12", "admin")
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (3 * 15, 255 - 3 * 15, 120)).save(photo, "PNG")  # item 3's image
    case_id = service.create_case(ana, "general", io.BytesIO(photo.getvalue()), "")
    store.register_adapter("codes-v1", "general", vlm.model_id, str(trained["out"] / "adapter"), {"steps": 1})
    options = GenerationOptions(max_new_tokens=6)

    def ask(question: str):
        return list(service.ask(ana, case_id, question, options))[-1]

    base = ask("Which code is item 3?")
    store.activate_adapter("codes-v1", "general", actor=root)
    adapted = ask("Which code is item 3?")
    again = ask("And once more?")
    assert service.slot.get() is vlm  # switched beside the loaded base, never reloaded
    assert base.run.adapter is None and adapted.run.adapter == again.run.adapter == "codes-v1"
    assert adapted.text != base.text
    assert adapted.run.extra["cached_features"] is True  # the vision cache is valid under any adapter
    assert adapted.run.extra["reused_tokens"] == 0 < again.run.extra["reused_tokens"]  # not the base's cache
    stored = store.open_case(ana, case_id).messages
    assert [m.model_run.adapter for m in stored if m.model_run] == [None, "codes-v1", "codes-v1"]
    assert "+ adapter codes-v1" in run_footnote(stored[3].model_run)
    activation = [e for e in store.audit_events() if e.action == "adapter.activate"][-1]
    assert activation.user_id == root.id and activation.detail == {"name": "codes-v1", "domain": "general"}
    with pytest.raises(AccessDenied):
        store.activate_adapter(None, "general", actor=ana)
    store.activate_adapter(None, "general", actor=root)
    assert ask("Which code is item 3?").run.adapter is None
    # an adapter trained on another base is refused with the reason, before anything is stored
    store.register_adapter("elsewhere", "general", "HuggingFaceTB/SmolVLM-256M-Instruct",
                           str(trained["out"] / "adapter"), {})
    store.activate_adapter("elsewhere", "general")
    with pytest.raises(ModelUnavailable, match="was trained on HuggingFaceTB/SmolVLM-256M-Instruct"):
        ask("Which code is item 3?")
    assert len(store.open_case(ana, case_id).messages) == 8


def test_loupe_eval_prints_base_and_adapter_side_by_side(model, data, trained, tmp_path):
    from click.testing import CliRunner

    from loupe.apps.cli import cli
    from loupe.apps.cli_common import open_store
    from loupe.core.config import Settings

    home = tmp_path / "home"
    store = open_store(Settings(home=home, database_url=None))
    store.register_adapter("codes-v1", "general", str(model), str(trained["out"] / "adapter"), {})
    result = CliRunner().invoke(cli, ["--home", str(home), "eval", "--adapter", "codes-v1", "--data", str(data),
                                      "--engine", "plain"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 16 and report["detail"] == "low"
    assert report["base"]["exact_match"] <= 0.1 and report["codes-v1"]["exact_match"] >= 0.9
    assert report["exact_match_gain"] >= 0.8 and report["eval_loss_change"] < 0
    missing = CliRunner().invoke(cli, ["--home", str(home), "eval", "--adapter", "nope", "--data", str(data)])
    assert missing.exit_code != 0 and "no adapter named 'nope'" in missing.output


def test_the_ocr_query_module_trains_from_document_pages_through_the_domain(model, tmp_path):
    """--target ocr-queries: each page goes through the documents domain's ingest (real OCR) and prompt;
    the module trains with the VLM frozen, is saved with its card, and attaches to its base model."""
    from click.testing import CliRunner
    from PIL import ImageDraw, ImageFont

    from loupe.apps.cli import cli
    from loupe.core.ocr.queries import OCRQueryEncoder

    font = ImageFont.load_default(size=36)
    lines = []
    for i, word in enumerate("739152"):
        page = Image.new("RGB", (480, 240), "white")
        ImageDraw.Draw(page).text((30, 40), f"Invoice {WORDS[i]}", fill="black", font=font)
        ImageDraw.Draw(page).text((30, 130), f"Code {word}", fill="black", font=font)
        page.save(tmp_path / f"page{i}.png")
        lines.append(json.dumps({"images": [f"page{i}.png"], "messages": [
            {"role": "user", "content": "<image>What is the code?"}, {"role": "assistant", "content": word}]}))
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(lines[:2]) + "\n")  # each page costs an OCR run
    Image.new("RGB", (200, 100), "white").save(tmp_path / "blank.png")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"images": ["blank.png"], "messages": [
        {"role": "user", "content": "<image>Code?"}, {"role": "assistant", "content": "none"}]}) + "\n")
    home = ["--home", str(tmp_path / "home")]
    common = ["finetune", "--target", "ocr-queries", "--domain", "documents", "--base", str(model)]
    result = CliRunner().invoke(cli, [*home, *common, "--data", str(tmp_path / "docs.jsonl"), "--eval",
                                      str(tmp_path / "eval.jsonl"), "--out", str(tmp_path / "q"), "--epochs", "30",
                                      "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 30 and summary["final_train_loss"] < summary["first_train_loss"] * 0.75
    assert set(summary["exact_match"]) == {"text_in_prompt", "query_tokens_untrained", "query_tokens_trained"}
    card = json.loads((tmp_path / "q" / "adapter_card.json").read_text())
    assert card["target"] == "ocr-queries" and card["domain"] == "documents" and card["data"]["examples"] == 6
    vlm = _vlm(model)
    vlm.attach_queries(OCRQueryEncoder.load(summary["ocr_queries"]))  # built for this base: it fits
    assert vlm.query_tokens == card["hyperparameters"]["queries"]
    blank = CliRunner().invoke(cli, [*home, *common, "--data", str(tmp_path / "blank.jsonl"), "--out",
                                     str(tmp_path / "q2")])
    assert blank.exit_code != 0 and "line 1: OCR found no text on the page" in blank.output
    assert not (tmp_path / "q2").exists()
    unknown = CliRunner().invoke(cli, [*home, "finetune", "--domain", "radiology", "--base", str(model), "--data",
                                       str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "q3")])
    assert unknown.exit_code != 0 and "unknown domain 'radiology'" in unknown.output
