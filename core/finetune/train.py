"""LoRA on the language model only, labels on the assistant's words only, resumable.

Adapters stay off the vision tower and use no ``modules_to_save``, which keeps them to what vLLM's
LoRA support covers (the language backbone) and keeps the per-tile vision feature cache valid under
any adapter. One example per forward pass (images make padding wasteful), gradients accumulated over
``accumulate``; bf16 autocast on CUDA, fp32 on the CPU. A checkpoint (adapter, optimizer, the data
order and where in it training stands) is written every ``checkpoint_every`` optimizer steps;
``resume`` continues from the newest one on the same loss curve. Evaluation every ``eval_every``
steps: loss and, for short answers, exact match of the greedy answer; training stops early after
``patience`` evaluations without a better eval loss, and the best adapter is the one saved.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import LoupeError
from ..vlm.base import GenerationOptions, Message
from ..vlm.families import language_model
from .data import Example

ADAPTER = "loupe"
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Progress = Callable[[dict], None]


@dataclass
class TrainConfig:
    rank: int = 8  # peft's default; 16 on SmolVLM-256M would be 2.2% of the base
    alpha: int = 16
    dropout: float = 0.05
    learning_rate: float = 2e-4
    epochs: int = 3
    accumulate: int = 4
    eval_every: int = 25  # optimizer steps
    checkpoint_every: int = 25
    patience: int = 3  # evaluations without a better eval loss before stopping
    seed: int = 0
    detail: str = "low"  # how much of each image the model sees while training (resolution.py)
    # Put before every conversation without a system turn: the domain's own, which the app always sends,
    # so the adapter learns under the framing it will answer under.
    system_prompt: str = ""
    short_answer_words: int = 8  # answers this short are scored by exact match
    max_steps: int | None = None  # stop after this many optimizer steps in this run (tests, trial runs)


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    seen: int = 0  # examples consumed in the current order
    epoch: int = 0
    order: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # mean loss per optimizer step
    evals: list[dict] = field(default_factory=list)
    best_eval_loss: float | None = None
    evals_without_gain: int = 0


def lm_target_modules(model: torch.nn.Module, family) -> list[str]:  # noqa: ANN001 - a Family
    """Names of the language model's projection layers (never the vision tower's or the connector's)."""
    text = language_model(model, family)
    prefix = next(name for name, module in model.named_modules() if module is text)
    return [f"{prefix}.{name}" for name, module in text.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in LM_PROJECTIONS]


def add_lora(vlm, config: TrainConfig) -> int:  # noqa: ANN001 - an HFVLM on the plain engine
    """A trainable LoRA adapter on the language model; returns the number of trainable parameters."""
    from peft import LoraConfig

    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=lm_target_modules(vlm.model, vlm.family), bias="none")
    vlm.model.add_adapter(lora, adapter_name=ADAPTER)
    vlm.adapters.adopt(ADAPTER)
    vlm.use_adapter(ADAPTER)
    for name, param in vlm.model.named_parameters():
        param.requires_grad = "lora_" in name
    return sum(p.numel() for p in vlm.model.parameters() if p.requires_grad)


@dataclass
class Encoded:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    prompt: list[Message]  # the conversation up to the last answer (for greedy evaluation)
    answer: str


def encode_example(vlm, example: Example, detail: str, vision_features: bool = True,  # noqa: ANN001
                   system_prompt: str = "") -> Encoded:
    """Token ids of the whole conversation with labels only on the assistant turns' tokens, opened by
    ``system_prompt`` when it has no system turn of its own. With ``vision_features`` the images are
    replaced by the vision tower's output, computed once here rather than at every step: LoRA never
    trains the vision tower (``False`` where it is trained)."""
    messages = example.to_messages()
    if system_prompt and messages[0].role != "system":
        messages = [Message("system", system_prompt), *messages]
    full = vlm.prepare(messages, detail, add_generation_prompt=False)
    labels = torch.full_like(full["input_ids"], -100)
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        start = vlm.prepare(messages[:i], detail, add_generation_prompt=True)["input_ids"].shape[-1]
        end = vlm.prepare(messages[:i + 1], detail, add_generation_prompt=False)["input_ids"].shape[-1]
        labels[0, start:end] = full["input_ids"][0, start:end]
    if vision_features:
        full = vlm.image_features(full)
    return Encoded(full, labels, messages[:-1], messages[-1].text)


def _loss(vlm, item: Encoded) -> torch.Tensor:  # noqa: ANN001
    device_type = vlm.placement.device.split(":")[0]
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
        return vlm.model(**item.inputs, labels=item.labels).loss


def evaluate(vlm, items: Sequence[Encoded], config: TrainConfig, adapter: str | None = None,  # noqa: ANN001
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Mean loss over ``items`` and exact match of greedy answers to the short ones, with ``adapter``
    (None: the base weights). ``progress(done, total)`` is told after each example."""
    training = vlm.model.training
    vlm.model.eval()
    vlm.use_adapter(adapter)
    total = len(items) + sum(len(item.answer.split()) <= config.short_answer_words for item in items)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with torch.no_grad():
        losses = []
        for item in items:
            losses.append(float(_loss(vlm, item)))
            tick()
    loss = sum(losses) / max(1, len(items))
    short = [item for item in items if len(item.answer.split()) <= config.short_answer_words]
    matched = 0
    for item in short:
        options = GenerationOptions(max_new_tokens=len(vlm.processor.tokenizer(item.answer)["input_ids"]) + 4,
                                    detail=config.detail, adapter=adapter)
        matched += vlm.chat(item.prompt, options).text.strip() == item.answer.strip()
        tick()
    vlm.model.train(training)
    return {"eval_loss": round(loss, 4), "exact_match": round(matched / len(short), 4) if short else None,
            "short_answers": len(short)}


def _save_checkpoint(vlm, folder: Path, optimizer: torch.optim.Optimizer, state: TrainState) -> None:  # noqa: ANN001
    folder.mkdir(parents=True, exist_ok=True)
    vlm.model.save_pretrained(folder / "adapter", selected_adapters=[ADAPTER])
    torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "python_rng": random.getstate()}, folder / "trainer.pt")
    (folder / "state.json").write_text(json.dumps(asdict(state)))


def _newest_checkpoint(out: Path) -> Path | None:
    found = sorted((p for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists()),
                   key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def _load_checkpoint(vlm, folder: Path, optimizer: torch.optim.Optimizer) -> TrainState:  # noqa: ANN001
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(next((folder / "adapter").rglob("adapter_model.safetensors"))))
    set_peft_model_state_dict(vlm.model, weights, adapter_name=ADAPTER)
    saved = torch.load(folder / "trainer.pt", weights_only=False)  # written by this module only
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    random.setstate(saved["python_rng"])
    return TrainState(**json.loads((folder / "state.json").read_text()))


def train(vlm, examples: Sequence[Example], eval_examples: Sequence[Example], out: Path,  # noqa: ANN001, C901
          config: TrainConfig, resume: bool = False, progress: Progress | None = None) -> TrainState:
    """Train a LoRA adapter on ``examples``; the best one (by eval loss, else the last) goes to ``out/adapter``.
    Held-out examples are evaluated every ``eval_every`` steps and at the last step."""
    if not resume and _newest_checkpoint(out) is not None:  # a later --resume would pick up the old run
        raise LoupeError(f"{out} already holds a training run: add --resume to continue it, or choose another "
                         "--out folder.")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    items = [encode_example(vlm, e, config.detail, system_prompt=config.system_prompt) for e in examples]
    held_out = [encode_example(vlm, e, config.detail, system_prompt=config.system_prompt) for e in eval_examples]
    trainable = add_lora(vlm, config)
    optimizer = torch.optim.AdamW([p for p in vlm.model.parameters() if p.requires_grad], lr=config.learning_rate)
    state = TrainState()
    newest = _newest_checkpoint(out) if resume else None
    if newest is not None:
        state = _load_checkpoint(vlm, newest, optimizer)
    steps_per_epoch = math.ceil(len(items) / config.accumulate)
    total_steps = steps_per_epoch * config.epochs
    vlm.model.train()
    started = time.perf_counter()
    first_step = state.step
    while state.epoch < config.epochs and state.step < total_steps:
        if not state.order or state.seen >= len(state.order):
            state.order = random.sample(range(len(items)), len(items))
            state.seen = 0
        batch = state.order[state.seen:state.seen + config.accumulate]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for index in batch:
            loss = _loss(vlm, items[index]) / len(batch)
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        state.seen += len(batch)
        state.step += 1
        state.losses.append(round(total, 5))
        if state.seen >= len(state.order):
            state.epoch += 1
        stop = False
        if held_out and (state.step % config.eval_every == 0 or state.step >= total_steps):
            result = {"step": state.step, **evaluate(vlm, held_out, config, ADAPTER)}
            state.evals.append(result)
            if state.best_eval_loss is None or result["eval_loss"] < state.best_eval_loss:
                state.best_eval_loss, state.evals_without_gain = result["eval_loss"], 0
                vlm.model.save_pretrained(out / "adapter", selected_adapters=[ADAPTER])
            else:
                state.evals_without_gain += 1
                stop = state.evals_without_gain >= config.patience
        if state.step % config.checkpoint_every == 0 or stop or state.step >= total_steps:
            _save_checkpoint(vlm, out / "checkpoints" / f"step-{state.step}", optimizer, state)
        if progress is not None:
            rate = (time.perf_counter() - started) / max(1, state.step - first_step)
            progress({"step": state.step, "total": total_steps, "loss": total,
                      "eta_s": round(rate * (total_steps - state.step)), "trainable": trainable})
        if stop or (config.max_steps is not None and state.step - first_step >= config.max_steps):
            if not stop and state.step % config.checkpoint_every:
                _save_checkpoint(vlm, out / "checkpoints" / f"step-{state.step}", optimizer, state)
            break
    if not held_out or state.best_eval_loss is None:
        vlm.model.save_pretrained(out / "adapter", selected_adapters=[ADAPTER])
    vlm.model.eval()
    return state
