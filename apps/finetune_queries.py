"""``loupe finetune --target ocr-queries``: train a served model's OCR query module (core/ocr/queries.py)
on a domain's documents, the VLM frozen.

Each example is built the way the app builds a question: its image goes through the domain's ingest
(real OCR) and ``context``, then into the same conversation messages, so the module learns from the
prompts it will serve. Held-out examples are answered three ways: page text written into the prompt
(the default without a module), query tokens before training, and query tokens after.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from loupe.core.errors import InputRejected
from loupe.core.finetune.card import base_revision
from loupe.core.finetune.data import Example
from loupe.core.ocr.queries import OCRQueryEncoder
from loupe.core.ocr.query_training import QueryExample, fit_queries
from loupe.core.plugins import Budgets, Domain
from loupe.core.vlm.base import GenerationOptions, Message

from .service import conversation_messages

BATCH = 8
SEED = 0
LEARNING_RATE = 1e-3
MODULE_FOLDER = "ocr_queries"


@dataclass
class AppExample:
    query: QueryExample  # the prompt with the page as query tokens, and the answer to learn
    prompt_messages: list[Message]  # the same question with the page text written into the prompt


def app_examples(domain: Domain, examples: Sequence[Example], limits: Budgets,
                 advance: Callable[[int], object] | None = None) -> list[AppExample]:
    """The first question and answer of each example, as the app would send them; examples whose image
    the domain refuses, or on which OCR finds no text, are reported by line. ``advance(1)`` per example."""
    built, problems = [], []
    for example in examples:
        if advance is not None:
            advance(1)
        turns = example.to_messages()
        user = next(m for m in turns if m.role == "user")
        answer = next(m for m in turns[turns.index(user):] if m.role == "assistant").text
        if not example.images:
            problems.append(f"line {example.line}: no page image")
            continue
        try:
            assets = domain.ingest(Path(example.images[0]), limits)
        except InputRejected as exc:
            problems.append(f"line {example.line}: {exc}")
            continue
        context = domain.context(assets, user.text)
        if not context.layout:
            problems.append(f"line {example.line}: OCR found no text on the page")
            continue
        queried = conversation_messages(domain.system_prompt, context, [("user", user.text)], queries=True)
        in_prompt = conversation_messages(domain.system_prompt, context, [("user", user.text)], queries=False)
        system, question = queried[0], queried[1]
        built.append(AppExample(QueryExample(question.layout, question.text, answer, question.images, system.text),
                                in_prompt))
    if problems:
        raise InputRejected("examples the OCR query module cannot learn from:\n" + "\n".join(problems))
    return built


def _exact_match(vlm, items: Sequence[AppExample], with_queries: bool, detail: str) -> float | None:  # noqa: ANN001
    if not items:
        return None
    right = 0
    for item in items:
        messages = ([Message("system", item.query.system),
                     Message("user", item.query.question, item.query.images, item.query.layout)]
                    if with_queries else item.prompt_messages)
        options = GenerationOptions(max_new_tokens=len(vlm.processor.tokenizer(item.query.answer)["input_ids"]) + 4,
                                    detail=detail)
        right += vlm.chat(messages, options).text.strip() == item.query.answer.strip()
    return round(right / len(items), 4)


def train_queries(vlm, domain: Domain, train: Sequence[AppExample], held_out: Sequence[AppExample],  # noqa: ANN001
                  out: Path, epochs: int, learning_rate: float | None, detail: str, data_digest: str,
                  progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train a fresh module for ``vlm``'s base on ``train``, save it with its card under ``out``; the card."""
    torch.manual_seed(SEED)  # the module's initial weights: a rerun on the same data gives the same module
    module = OCRQueryEncoder.for_model(vlm.model, base_model=vlm.model_id)
    vlm.attach_queries(module)
    evaluation = {"text_in_prompt": _exact_match(vlm, held_out, False, detail),
                  "query_tokens_untrained": _exact_match(vlm, held_out, True, detail)}
    steps = epochs * math.ceil(len(train) / BATCH)
    losses = fit_queries(vlm, [item.query for item in train], steps, BATCH, learning_rate or LEARNING_RATE, detail,
                         seed=SEED, progress=progress)
    evaluation["query_tokens_trained"] = _exact_match(vlm, held_out, True, detail)
    folder = module.save(out / MODULE_FOLDER)
    card = {"target": "ocr-queries", "domain": domain.name, "base_model": vlm.model_id,
            "base_revision": base_revision(vlm.model),
            "data": {"sha256": data_digest, "examples": len(train), "eval_examples": len(held_out)},
            "hyperparameters": {"steps": steps, "batch": BATCH, "learning_rate": learning_rate or LEARNING_RATE,
                                "detail": detail, "queries": module.config.queries, "width": module.config.width,
                                "layers": module.config.layers},
            "trainable_parameters": sum(p.numel() for p in module.parameters()),
            "module_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "first_train_loss": losses[0], "final_train_loss": losses[-1],
            "exact_match": evaluation, "use": f"LOUPE_OCR_QUERIES={folder.resolve()}"}
    (out / "adapter_card.json").write_text(json.dumps(card, indent=2))
    return card
