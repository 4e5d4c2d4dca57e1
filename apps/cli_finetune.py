"""``loupe finetune``, ``loupe adapters`` and ``loupe eval``: train a domain adapter, choose the one each
domain answers with, and compare it with the base model on held-out examples."""

from __future__ import annotations

import json
from pathlib import Path

import click

from loupe.core.config import Settings

from .cli_common import open_store


@click.group(invoke_without_command=True)
@click.option("--domain", help="The domain the adapter is for (recorded in its card).")
@click.option("--base", "base_model", help="Base model: hub id, local folder, or a short name (smolvlm-256m...).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training JSONL: one conversation per line (images relative to the file).")
@click.option("--eval", "eval_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out JSONL for loss, exact match and early stopping.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Folder for the adapter.")
@click.option("--target", type=click.Choice(["lora", "ocr-queries"]), default="lora", show_default=True,
              help="lora: a LoRA adapter on the language model. ocr-queries: the OCR query module that reads a "
                   "page's text into a few learned tokens (documents; the VLM stays frozen).")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rank", default=8, show_default=True, type=click.IntRange(1, 512), help="LoRA rank.")
@click.option("--lr", "learning_rate", type=float, help="Learning rate [default: 2e-4 for lora, 1e-3 for ocr-queries].")
@click.option("--accumulate", default=4, show_default=True, type=click.IntRange(1, 1024),
              help="Examples per optimizer step (lora).")
@click.option("--eval-every", default=25, show_default=True, type=click.IntRange(1, 100_000),
              help="Optimizer steps between evaluations of --eval (lora; the last step is always evaluated).")
@click.option("--detail", type=click.Choice(["low", "standard", "high"]), default="low", show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint under --out (lora).")
@click.pass_context
def finetune(ctx: click.Context, domain: str | None, base_model: str | None, data_file: Path | None,
             eval_file: Path | None, out_dir: Path | None, target: str, epochs: int, rank: int,
             learning_rate: float | None, accumulate: int, eval_every: int, detail: str, resume: bool) -> None:
    """Train a domain adapter: LoRA on the language model only (the part vLLM's LoRA support covers),
    or the OCR query module."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, value in (("--domain", domain), ("--base", base_model), ("--data", data_file),
                                        ("--out", out_dir)) if value is None]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}")
    from loupe.core.errors import InputRejected, LoupeError
    from loupe.core.finetune.data import read_examples
    from loupe.core.finetune.train import TrainConfig
    from loupe.core.plugins import discover
    from loupe.core.vlm.hf import HFVLM

    domains = discover()
    if domain not in domains:
        raise click.UsageError(f"unknown domain {domain!r}; installed: {', '.join(sorted(domains))}")
    if target == "lora":  # the adapter is registered under its folder's name: refuse a clash before training
        clash = open_store(ctx.obj).adapter(out_dir.name)
        if clash is not None and clash.domain != domain:
            raise click.UsageError(f"an adapter named {out_dir.name!r} (the --out folder's name) already exists for "
                                   f"{clash.domain}; choose another --out folder")
    try:
        examples = read_examples(data_file)
        held_out = read_examples(eval_file) if eval_file else []
        vlm = HFVLM.from_pretrained(base_model, engine="plain")  # training needs fp32/bf16 weights, not int8
    except (InputRejected, LoupeError) as exc:
        raise click.ClickException(str(exc)) from None
    if target == "ocr-queries":
        summary = _train_queries(ctx.obj, vlm, domains[domain], examples, held_out, data_file, out_dir, epochs,
                                 learning_rate, detail)
    else:
        config = TrainConfig(rank=rank, alpha=2 * rank, learning_rate=learning_rate or 2e-4, epochs=epochs,
                             accumulate=accumulate, eval_every=eval_every, detail=detail,
                             system_prompt=domains[domain].system_prompt)
        summary = _train_lora(ctx.obj, vlm, domain, examples, held_out, data_file, out_dir, config, resume)
    click.echo(json.dumps(summary))


def _train_lora(settings: Settings, vlm, domain: str, examples: list, held_out: list, data_file: Path,  # noqa: ANN001
                out_dir: Path, config, resume: bool) -> dict:  # noqa: ANN001 - a TrainConfig
    from tqdm import tqdm

    from loupe.core.finetune.card import base_revision, write_card
    from loupe.core.finetune.data import data_digest
    from loupe.core.finetune.train import train

    base_params = sum(p.numel() for p in vlm.model.parameters())
    with tqdm(desc="training", unit="step", disable=None) as bar:
        def step(report: dict) -> None:
            bar.total = report["total"]
            bar.update(report["step"] - bar.n)
            bar.set_postfix(loss=f"{report['loss']:.4f}")

        state = train(vlm, examples, held_out, out_dir, config, resume=resume, progress=step)
    trainable = sum(p.numel() for n, p in vlm.model.named_parameters() if "lora_" in n)
    card = write_card(out_dir, domain=domain, base=vlm.model_id, revision=base_revision(vlm.model),
                      data_digest=data_digest(data_file), examples=len(examples), eval_examples=len(held_out),
                      config=config, state=state, trainable=trainable, base_params=base_params - trainable)
    open_store(settings).register_adapter(out_dir.name, domain, vlm.model_id, str((out_dir / "adapter").resolve()),
                                          {k: card[k] for k in ("steps", "final_train_loss", "best_eval_loss",
                                                                "trainable_fraction", "adapter_bytes")})
    return {"adapter": str(out_dir / "adapter"), "registered_as": out_dir.name, "steps": card["steps"],
            "final_train_loss": card["final_train_loss"], "best_eval_loss": card["best_eval_loss"],
            "trainable_fraction": card["trainable_fraction"], "adapter_bytes": card["adapter_bytes"]}


def _train_queries(settings: Settings, vlm, domain, examples: list, held_out: list, data_file: Path,  # noqa: ANN001
                   out_dir: Path, epochs: int, learning_rate: float | None, detail: str) -> dict:
    from tqdm import tqdm

    from loupe.core.errors import InputRejected
    from loupe.core.finetune.data import data_digest

    from .finetune_queries import app_examples, train_queries

    limits = settings.budgets
    try:
        with tqdm(desc="reading pages (OCR)", unit="page", total=len(examples) + len(held_out), disable=None) as bar:
            train = app_examples(domain, examples, limits, bar.update)
            evaluation = app_examples(domain, held_out, limits, bar.update)
    except InputRejected as exc:
        raise click.ClickException(str(exc)) from None
    with tqdm(desc="training the OCR query module", unit="step", disable=None) as bar:
        def step(done: int, total: int, loss: float) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}")

        card = train_queries(vlm, domain, train, evaluation, out_dir, epochs, learning_rate, detail,
                             data_digest(data_file), step)
    return {"ocr_queries": card["use"].split("=", 1)[1], "use": card["use"], "steps": card["hyperparameters"]["steps"],
            "first_train_loss": card["first_train_loss"], "final_train_loss": card["final_train_loss"],
            "exact_match": card["exact_match"]}


def _require_domain(name: str) -> None:
    from loupe.core.plugins import discover

    installed = discover()
    if name not in installed:
        raise click.UsageError(f"unknown domain {name!r}; installed: {', '.join(sorted(installed))}")


@click.group()
def adapters() -> None:
    """Trained adapters: the registry, and which one each domain answers with."""


@adapters.command("list")
@click.pass_obj
def adapters_list(settings: Settings) -> None:
    """One JSON line per adapter: name, domain, base model, whether active, metrics, path."""
    for adapter in open_store(settings).adapters():
        click.echo(json.dumps({"name": adapter.name, "domain": adapter.domain, "base_model": adapter.base_model,
                               "active": adapter.active, "metrics": adapter.metrics, "path": adapter.path}))


@adapters.command("activate")
@click.argument("name")
@click.option("--domain", required=True, help="The domain that should answer with it.")
@click.pass_obj
def adapters_activate(settings: Settings, name: str, domain: str) -> None:
    """Make NAME the adapter DOMAIN answers with (audited)."""
    from loupe.core.errors import LoupeError

    _require_domain(domain)
    try:
        open_store(settings).activate_adapter(name, domain)
    except LoupeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"active": name, "domain": domain}))


@adapters.command("deactivate")
@click.option("--domain", required=True, help="The domain that should answer with the base model again.")
@click.pass_obj
def adapters_deactivate(settings: Settings, domain: str) -> None:
    """Make DOMAIN answer with the base model (audited)."""
    _require_domain(domain)
    open_store(settings).activate_adapter(None, domain)
    click.echo(json.dumps({"active": None, "domain": domain}))


@adapters.command("remove")
@click.argument("name")
@click.pass_obj
def adapters_remove(settings: Settings, name: str) -> None:
    """Forget NAME (its files are left where they are; audited)."""
    from loupe.core.errors import LoupeError

    try:
        open_store(settings).remove_adapter(name)
    except LoupeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"removed": name}))


@finetune.command("export-reviews")
@click.option("--domain", required=True, help="Domain whose reviewed answers to export.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training JSONL; the images go to an images/ folder beside it, named by content hash.")
@click.pass_obj
def finetune_export_reviews(settings: Settings, domain: str, out: Path) -> None:
    """Accepted and corrected answers of a domain as training data (audited as reviews.export)."""
    from loupe.core.finetune.reviews import export_reviews

    click.echo(json.dumps(export_reviews(open_store(settings), domain, out)))


@finetune.command("convert-csv")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def finetune_convert_csv(source: Path, out: Path) -> None:
    """A CSV with columns image, question, answer into training JSONL."""
    from loupe.core.errors import InputRejected
    from loupe.core.finetune.data import csv_to_jsonl

    try:
        count = csv_to_jsonl(source, out)
    except InputRejected as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"examples": count, "out": str(out)}))


@click.command("eval")
@click.option("--adapter", "name", required=True, help="A registered adapter (see: loupe adapters list).")
@click.option("--data", "data_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out JSONL, in the training format.")
@click.option("--engine", type=click.Choice(["auto", "plain", "int8"]), default="auto", show_default=True,
              help="auto: the engine the app answers with on this machine.")
@click.option("--detail", type=click.Choice(["low", "standard", "high"]), default=None,
              help="Image detail (default: the detail the adapter was trained at).")
@click.pass_obj
def evaluate_adapter(settings: Settings, name: str, data_file: Path, engine: str, detail: str | None) -> None:
    """Base model and adapter on the same examples: loss and exact match of short answers, side by side."""
    from tqdm import tqdm

    from loupe.core.finetune.card import read_card
    from loupe.core.finetune.data import read_examples
    from loupe.core.finetune.train import TrainConfig, encode_example, evaluate
    from loupe.core.vlm.hf import HFVLM

    record = open_store(settings).adapter(name)
    if record is None:
        raise click.ClickException(f"There is no adapter named {name!r} (see: loupe adapters list).")
    trained = ((read_card(record.path) or {}).get("hyperparameters") or {})
    config = TrainConfig(detail=detail or trained.get("detail", "low"),
                         short_answer_words=trained.get("short_answer_words", TrainConfig.short_answer_words),
                         system_prompt=trained.get("system_prompt", ""))
    examples = read_examples(data_file)
    vlm = HFVLM.from_pretrained(record.base_model, engine=engine)
    vlm.load_adapter(record.path, name)
    items = [encode_example(vlm, e, config.detail, system_prompt=config.system_prompt) for e in examples]
    results = {}
    for label, adapter in (("base", None), ("adapter", name)):
        with tqdm(desc=f"{label} ({adapter or record.base_model})", unit="step", disable=None, leave=False) as bar:
            def tick(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            results[label] = evaluate(vlm, items, config, adapter, progress=tick)
    base, tuned = results["base"], results["adapter"]
    gain = (None if base["exact_match"] is None or tuned["exact_match"] is None
            else round(tuned["exact_match"] - base["exact_match"], 4))
    click.echo(json.dumps({"adapter": name, "domain": record.domain, "base_model": record.base_model,
                           "engine": vlm.engine.name, "detail": config.detail, "examples": len(items),
                           "base": base, name: tuned, "exact_match_gain": gain,
                           "eval_loss_change": round(tuned["eval_loss"] - base["eval_loss"], 4)}))
