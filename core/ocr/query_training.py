"""Train an OCR query module with the VLM frozen: teacher-forced answers, loss on the answer tokens
only, gradients into the module alone. The fine-tuning command drives this for real data; tests use
it on a synthetic key-value task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812 - the usual alias

from ..errors import ModelUnavailable
from ..vlm import worker
from ..vlm.base import Message
from .queries import LayoutUnit, layout_batch

IGNORE = -100  # label of tokens the loss skips (prompt, padding)
Progress = Callable[[int, int, float], None]  # (step, steps, loss)


@dataclass(frozen=True)
class QueryExample:
    layout: Sequence[LayoutUnit]  # OCR text with boxes on the 0-1000 grid
    question: str
    answer: str
    images: Sequence[Image.Image] = ()
    system: str = ""  # the system prompt the app sends before the question, if any


@dataclass(eq=False)
class _Prepared:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # [1, T]: the answer's tokens, IGNORE elsewhere
    example: QueryExample


def _teacher_forced(vlm, example: QueryExample, detail: str) -> _Prepared:  # noqa: ANN001 - an HFVLM
    """The prompt as the app builds it, followed by the answer turn; labels cover the answer only."""
    turns = [*([Message("system", example.system)] if example.system else []),
             Message("user", example.question, example.images, example.layout)]
    prompt = vlm.prepare(turns, detail)
    full = vlm.prepare([*turns, Message("assistant", example.answer)], detail, add_generation_prompt=False)
    n = prompt["input_ids"].shape[-1]
    if not torch.equal(full["input_ids"][0, :n], prompt["input_ids"][0]):
        raise ModelUnavailable(f"{vlm.model_id}: the chat template does not extend the prompt with the answer")
    labels = full["input_ids"].clone()
    labels[:, :n] = IGNORE
    return _Prepared(vlm.image_features(full), labels, example)  # the frozen tower runs once per page


def _answer_tokens(items: Sequence[_Prepared]) -> int:
    return sum(int((item.labels != IGNORE).sum()) for item in items)


def _groups(items: Sequence[_Prepared]) -> list[list[_Prepared]]:
    """Text-only prompts run as one padded batch; prompts with images run one by one (each family
    batches pixels its own way)."""
    text_only = [set(item.inputs) <= {"input_ids", "attention_mask"} for item in items]
    batched = [item for item, plain in zip(items, text_only, strict=True) if plain]
    return ([batched] if batched else []) + [[item] for item, plain in zip(items, text_only, strict=True) if not plain]


def _collate(group: Sequence[_Prepared], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-padded input ids, attention mask and labels of a group."""
    if len(group) == 1:
        return group[0].inputs, group[0].labels
    length = max(item.labels.shape[-1] for item in group)
    ids = torch.full((len(group), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), length), dtype=torch.long)
    labels = torch.full((len(group), length), IGNORE, dtype=torch.long)
    for row, item in enumerate(group):
        n = item.labels.shape[-1]
        ids[row, :n] = item.inputs["input_ids"][0]
        mask[row, :n] = 1
        labels[row, :n] = item.labels[0]
    device = group[0].inputs["input_ids"].device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, labels


def fit_queries(vlm, examples: Sequence[QueryExample], steps: int, batch_size: int = 8,  # noqa: ANN001 - an HFVLM
                lr: float = 1e-3, detail: str = "low", seed: int = 0, progress: Progress | None = None) -> list[float]:
    """Train the module attached to ``vlm`` (``vlm.attach_queries``) on ``examples``; returns the loss
    of every step. The base model's weights do not change."""
    if vlm.queries is None:
        raise ValueError("attach an OCR query module first (vlm.attach_queries)")
    if vlm.engine.name == "int8":
        raise ModelUnavailable("training the OCR query module needs the plain engine (LOUPE_ENGINE=plain)")
    if not examples:
        raise ValueError("no training examples")
    return worker.call(_fit, vlm, examples, steps, batch_size, lr, detail, seed, progress)


def _fit(vlm, examples: Sequence[QueryExample], steps: int, batch_size: int, lr: float,  # noqa: ANN001
         detail: str, seed: int, progress: Progress | None) -> list[float]:
    module, model, injector = vlm.queries, vlm.model, vlm._injector
    embed = model.get_input_embeddings()
    model.requires_grad_(False)
    prepared = [_teacher_forced(vlm, ex, detail) for ex in examples]
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.01)
    picker = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    module.train()
    try:
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            picked = [prepared[i] for i in torch.randint(len(prepared), (batch_size,), generator=picker).tolist()]
            total = 0.0
            for group in _groups(picked):
                batch = layout_batch(vlm.processor.tokenizer,
                                     [(item.example.layout, item.example.question) for item in group],
                                     module.config.max_tokens)
                queries = module(batch, embed)  # [b, K, width]
                injector.pending = queries.reshape(-1, queries.shape[-1])
                inputs, labels = _collate(group, vlm.processor.tokenizer.pad_token_id or 0)
                logits = model(**inputs).logits  # [b, T, vocab]
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                                       ignore_index=IGNORE, reduction="sum") / _answer_tokens(picked)
                loss.backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            losses.append(total)
            if progress is not None:
                progress(step + 1, steps, total)
    finally:
        injector.pending = None
        module.eval()
    return losses
