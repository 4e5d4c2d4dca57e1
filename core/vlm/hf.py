"""In-process transformers backend: any supported checkpoint by hub id or local path."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, StaticCache, TextIteratorStreamer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..errors import ModelUnavailable
from ..memory import release_free_memory
from ..ocr.queries import OCRQueryEncoder, QueryInjector, layout_batch, placeholder_id, with_placeholders
from ..tokens.attention import received_attention, token_scores
from ..tokens.prune import full_positions
from ..tokens.pruning import Pruning, pruning_setting
from . import worker
from .adapters import Adapters
from .base import Answer, GenerationOptions, Message, RunRecord, StreamChunk, collected
from .device import Placement, choose_placement
from .engine_choice import MeasuredEngine
from .engines import CACHE_ARG, EngineChoice, cache_bucket, choose_engine, generated_cache, rewind
from .families import Family, family_of, processor_class, vision_encoder
from .features import FeatureCache, encoder_inputs, features_key, weights_fingerprint
from .image_units import join_output, join_units, split_output, split_units
from .int8 import quantize_linears
from .registry import resolve
from .resolution import geometry, plan_resolution
from .reuse import CachedConversation, ConversationCaches, cache_nbytes, common_prefix, images_digest, layouts_digest


class _TimedStreamer(TextIteratorStreamer):
    """Records when the first generated token arrives and how many were generated."""

    def __init__(self, tokenizer, **kwargs) -> None:  # noqa: ANN001 - any HF tokenizer
        super().__init__(tokenizer, **kwargs)
        self.first_token_at: float | None = None
        self.generated = 0
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.generated += value.numel()
        self._prompt_seen = True
        super().put(value)


def to_chat_template(messages: Sequence[Message]) -> list[dict]:
    """Loupe messages -> the processor's chat format (images before text in each turn)."""
    out = []
    for msg in messages:
        content: list[dict] = [{"type": "image", "image": img} for img in msg.images]
        content.append({"type": "text", "text": msg.text})
        out.append({"role": msg.role, "content": content})
    return out


PLAIN = EngineChoice("plain", "as loaded")
# Vision units (tiles / images) encoded per call. Batching more saves nothing measurable on a CPU (8 tiles
# cost 8 times one) while the activations grow with the batch; a pyramid round can bring 7 at once.
ENCODE_BATCH = 4


class HFVLM:
    """A loaded model + processor. Thread-safe for one generation at a time per instance."""

    def __init__(self, model, processor, model_id: str, family: Family, placement: Placement,  # noqa: ANN001
                 kv_cache_mb: int = 1024, feature_cache_mb: int = 512,
                 engine: EngineChoice = PLAIN, feature_cache_dir: Path | None = None, feature_disk_mb: int = 0) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.family = family
        self.placement = placement
        self.engine = engine
        self.conversations = ConversationCaches(kv_cache_mb * 2**20)
        self.features = FeatureCache(feature_cache_mb * 2**20, feature_cache_dir, feature_disk_mb * 2**20,
                                     placement.device)
        # Taken before int8 swaps the layers: the engine is part of it, so its features never mix with others.
        self._fingerprint = weights_fingerprint(
            f"{model_id}|{engine.name}", vision_encoder(model, family), placement.dtype)
        if engine.name == "int8":
            quantize_linears(model)
        self.adapters = Adapters(model, int8=engine.name == "int8")
        self._lock = threading.Lock()
        self.queries: OCRQueryEncoder | None = None  # reads Message.layout into K prompt tokens when attached
        self._injector: QueryInjector | None = None
        self._queries_serial = 0  # tells conversations cached with one module from those of the next
        self.last_encoded_units = 0  # tiles / images the last encode had to run the vision encoder for
        self.last_unit_attention: list[torch.Tensor] | None = None  # per unit, when the last encode read it
        self.pruning: Pruning | None = None  # visual-token pruning after the encoder (core/tokens)
        config = model.config
        self.image_token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | None = None, dtype: str | None = None,
                        local_files_only: bool = False, kv_cache_mb: int = 1024, feature_cache_mb: int = 512,
                        engine: str | None = None, feature_cache_dir: Path | None = None,
                        feature_disk_mb: int = 0, ocr_queries: Path | None = None, engine_cache: Path | None = None,
                        remeasure_engine: bool = False, **processor_kwargs) -> HFVLM:
        """Load a checkpoint. ``device``, ``dtype`` and ``engine`` default to the automatic choice
        (see device.py, engines.py and engine_choice.py: on CPU, ``auto`` measures the engines once per
        machine and model and keeps the result in ``engine_cache``, default LOUPE_HOME/cache/engines.json;
        ``remeasure_engine`` ignores what is kept there). Loading runs on the torch thread, like all
        model work. ``ocr_queries`` names a trained OCR query module directory to attach."""
        measuring = MeasuredEngine(engine_cache, remeasure_engine)
        vlm = worker.call(cls._load, name_or_path, device, dtype, local_files_only, kv_cache_mb, feature_cache_mb,
                          engine, feature_cache_dir, feature_disk_mb, processor_kwargs, measuring)
        if ocr_queries is not None:
            vlm.attach_queries(worker.call(OCRQueryEncoder.load, ocr_queries))
        return vlm

    @classmethod
    def _load(cls, name_or_path: str | Path, device: str | None, dtype: str | None, local_files_only: bool,
              kv_cache_mb: int, feature_cache_mb: int, engine: str | None, feature_cache_dir: Path | None,
              feature_disk_mb: int, processor_kwargs: dict, measuring: MeasuredEngine | None = None) -> HFVLM:
        model_id = resolve(str(name_or_path))
        placement = choose_placement(device, dtype)
        choice = choose_engine(engine, placement.device, dtype_forced=dtype not in (None, "auto"))
        try:
            config = AutoConfig.from_pretrained(model_id, local_files_only=local_files_only)
            if choice.name == "auto":  # CPU: the cached measurement, or fp32 to measure from
                measuring = measuring or MeasuredEngine()
                choice = measuring.cached(model_id, getattr(config, "_commit_hash", None))
            if choice.name in ("int8", "auto"):  # int8 weights and fp32 activations; or measuring from fp32
                placement = Placement(placement.device, torch.float32)
            elif choice.report is not None:
                placement = Placement(placement.device, choice.report.dtype)
            family = family_of(config.model_type)
            processor = processor_class(family).from_pretrained(
                model_id, local_files_only=local_files_only, **processor_kwargs)
            model = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=placement.dtype, local_files_only=local_files_only)
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelUnavailable(f"cannot load model {model_id!r}: {first_line}") from exc
        model.to(placement.device).eval()
        if choice.name == "auto" and measuring is not None:
            choice = measuring.measure(model, processor, family.name, placement.device)
            placement = Placement(placement.device, choice.report.dtype if choice.report else torch.float32)
            model.to(placement.dtype)
        vlm = cls(model, processor, model_id, family, placement, kv_cache_mb, feature_cache_mb, choice,
                   feature_cache_dir, feature_disk_mb)
        release_free_memory()  # the loader's and the quantiser's temporary copies
        return vlm

    # -- adapters (peft, adapters.py) -----------------------------------------------------------
    def load_adapter(self, path: str | Path, name: str) -> None:
        """Load a LoRA adapter folder as ``name`` (again only if its files changed); answers use it when
        their ``GenerationOptions.adapter`` names it."""
        worker.call(self.adapters.load, name, path)

    def use_adapter(self, name: str | None) -> None:
        """Run direct forward passes (training, evaluation) with adapter ``name``; None: base weights."""
        worker.call(self.adapters.use, name)

    # -- OCR query tokens (core/ocr/queries.py) -------------------------------------------------
    def attach_queries(self, module: OCRQueryEncoder | None) -> None:
        """Answer messages that carry a ``layout`` through this OCR query module (``None`` detaches).
        Conversations cached with another module are not continued."""
        worker.call(self._attach_queries, module)

    def _attach_queries(self, module: OCRQueryEncoder | None) -> None:
        if module is not None:
            module.check_fits(self.model)
        if self._injector is not None:
            self._injector.remove()
            self._injector = None
        self.queries = None
        self._queries_serial += 1
        if module is not None:
            self.queries = module.to(self.placement.device).eval()
            self._injector = QueryInjector(self.model.get_input_embeddings(), placeholder_id(self.processor.tokenizer))

    @property
    def query_tokens(self) -> int:
        """Prompt tokens one layout costs with the attached module; 0 when none is attached."""
        return self.queries.config.queries if self.queries is not None else 0

    def _queried(self, messages: Sequence[Message]) -> list[Message]:
        return [msg for msg in messages if msg.layout] if self.queries is not None else []

    def _query_embeddings(self, queried: Sequence[Message]) -> torch.Tensor:
        """[n * K, width]: one block of K per message with a layout, in prompt order."""
        assert self.queries is not None
        batch = layout_batch(self.processor.tokenizer, [(m.layout, m.text) for m in queried],
                             self.queries.config.max_tokens)
        with torch.inference_mode():
            out = self.queries(batch, self.model.get_input_embeddings())
        return out.reshape(-1, out.shape[-1])

    def forget(self, conversation: str | None = None) -> None:
        """Drop cached image features (memory and disk) and, if named, a conversation's KV cache."""
        self.features.clear()
        if conversation is not None:
            self.conversations.take(conversation)

    # -- inference ------------------------------------------------------------------------------
    def prepare(self, messages: Sequence[Message], detail: str = "standard",
                add_generation_prompt: bool = True) -> dict[str, torch.Tensor]:
        """Tokenise a conversation with its images at the requested detail level (see resolution.py)."""
        if self.queries is not None:  # each layout is read through K placeholder tokens before its text
            messages = [replace(msg, text=with_placeholders(msg.text, self.query_tokens)) if msg.layout else msg
                        for msg in messages]
        images = [img for msg in messages for img in msg.images]
        plan = plan_resolution(self.family.name, self.processor.image_processor, images, detail)
        if plan.images != images:  # the plan resized some images: put them back in their messages
            resized = iter(plan.images)
            messages = [replace(msg, images=[next(resized) for _ in msg.images]) for msg in messages]
        inputs = self.processor.apply_chat_template(
            to_chat_template(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs=plan.processor_kwargs)
        return {k: (v.to(self.placement.device, dtype=self.placement.dtype) if v.is_floating_point()
                    else v.to(self.placement.device)) for k, v in inputs.items()}

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Answer:
        return collected(self.stream(messages, options))

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None,
               conversation: str | None = None) -> Iterator[StreamChunk]:
        """Stream an answer. With a ``conversation`` key, the KV cache of its previous turn is reused.
        The work runs on the torch thread (worker.py); this generator only relays the text."""
        opts = options or GenerationOptions()
        with self._lock:
            start = time.perf_counter()
            streamer = _TimedStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
            job = worker.submit(self._answer, messages, opts, conversation, streamer)
            for text in streamer:
                if text:
                    yield StreamChunk(text)
            done = job.result()  # raises what the torch thread raised
            end = done.pop("finished_at")
            ttft = (streamer.first_token_at or end) - start
            decode_time = end - (streamer.first_token_at or end)
            yield StreamChunk("", RunRecord(
                model_id=self.model_id, adapter=opts.adapter, device=self.placement.device,
                dtype=self.placement.dtype_name, prompt_tokens=done.pop("prompt_tokens"),
                visual_tokens=done.pop("visual_tokens"), output_tokens=streamer.generated,
                time_to_first_token_s=round(ttft, 4), total_time_s=round(end - start, 4),
                tokens_per_s=round((streamer.generated - 1) / decode_time, 2) if decode_time > 0 else 0.0,
                extra={"engine": self.engine.name, "engine_reason": self.engine.reason, "detail": opts.detail, **done}))

    def _answer(self, messages: Sequence[Message], opts: GenerationOptions, conversation: str | None,
                streamer: _TimedStreamer) -> dict:
        """On the torch thread: prepare, reuse or encode, generate into ``streamer``; what the record needs."""
        try:
            adapter_slot = self.adapters.use(opts.adapter)
            inputs = self.prepare(messages, opts.detail)
            ids = inputs["input_ids"]
            facts = {"prompt_tokens": int(ids.shape[-1]), **geometry(self.family.name, inputs),
                     "visual_tokens": int((ids == self.image_token_id).sum()) if self.image_token_id is not None else 0}
            images = [img for msg in messages for img in msg.images]
            key = f"{self.model_id}|{adapter_slot}|{opts.detail}|{images_digest(images)}"
            queried = self._queried(messages)
            if queried:
                assert self._injector is not None
                self._injector.pending = self._query_embeddings(queried)
                key += f"|queries{self._queries_serial}|{layouts_digest([m.layout for m in queried])}"
                facts["ocr_query_tokens"] = self.query_tokens * len(queried)
            pruning = self.pruning if opts.visual_keep is None else pruning_setting(opts.visual_keep)
            if pruning is not None:
                key += f"|prune:{pruning.label}"
            gen_inputs, reused, kept = self._reuse(inputs, conversation, key, opts.max_new_tokens)
            cached_features = False
            if not reused:
                gen_inputs, cached_features = self._encode_once(
                    inputs, with_attention=pruning is not None and pruning.scorer.needs_attention)
                if pruning is not None and "mm_encoder_outputs" in gen_inputs:
                    pruned = pruning.apply(self, inputs, gen_inputs)
                    gen_inputs, kept = pruned.inputs, pruned.kept
                    facts.update(visual_tokens=pruned.visual_after, visual_tokens_unpruned=pruned.visual_before,
                                 pruning=pruning.label)
                if self.engine.name == "static":
                    gen_inputs[CACHE_ARG] = StaticCache(
                        config=self.model.config, max_cache_len=cache_bucket(ids.shape[-1] + opts.max_new_tokens))
            if opts.seed is not None:
                torch.manual_seed(opts.seed)
            with torch.inference_mode():
                output = self.model.generate(**gen_inputs, **self._generation_kwargs(opts), streamer=streamer,
                                             return_dict_in_generate=True)
        except BaseException:
            streamer.end()  # the reader must not wait for text that will never come
            raise
        finally:
            if self._injector is not None:
                self._injector.pending = None
        finished_at = time.perf_counter()
        if conversation is not None:
            self._keep(conversation, key, gen_inputs["input_ids"] if kept is not None else ids, output, kept)
        del output, gen_inputs, inputs
        release_free_memory()  # the prefill's activations: memory should track what is kept
        return {**facts, "reused_tokens": reused, "cached_features": cached_features, "finished_at": finished_at}

    def image_features(self, inputs: dict[str, torch.Tensor]) -> dict:
        """``inputs`` with the pixels replaced by the vision encoder's output, usable in a training pass:
        what trains only the language model (LoRA, the OCR query module) encodes each image once."""
        encoded, _ = worker.call(self._encode_once, inputs)
        outputs = encoded.get("mm_encoder_outputs")
        if outputs is not None:  # made under inference_mode: a plain copy can enter an autograd graph
            pooled = outputs["image"].pooler_output  # a tensor, or one per image for some families
            copy = [t.clone() for t in pooled] if isinstance(pooled, (list, tuple)) else pooled.clone()
            encoded["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=copy)}
        return encoded

    def _encode_once(self, inputs: dict[str, torch.Tensor], with_attention: bool = False) -> tuple[dict, bool]:
        """Replace pixels by their encoder output. Features are cached per unit (a tile or an image, see
        image_units.py): only units never seen with these weights are encoded, a few per call. With
        ``with_attention``, the attention each unit's tokens receive in the encoder is read as well
        (core/tokens/attention.py), cached beside the features, and left in ``last_unit_attention``."""
        get_features = self.model.model.get_image_features
        pixels = encoder_inputs(get_features, inputs)
        if "pixel_values" not in pixels:
            return inputs, False
        family = self.family.name
        units = split_units(family, pixels)
        keys = [features_key(self._fingerprint, unit) for unit in units]
        parts = [self.features.get(key) for key in keys]
        scores = [self.features.get(f"{key}|received") for key in keys] if with_attention else [None] * len(keys)
        missing = [i for i, part in enumerate(parts) if part is None or (with_attention and scores[i] is None)]
        encoder = vision_encoder(self.model, self.family)
        for start in range(0, len(missing), ENCODE_BATCH):  # a few units per call: activations stay small
            chunk = missing[start:start + ENCODE_BATCH]
            chunk_units = [units[i] for i in chunk]
            with received_attention(encoder) if with_attention else contextlib.nullcontext([]) as rows, \
                    torch.inference_mode():
                pooled = get_features(**join_units(family, chunk_units), return_dict=True).pooler_output
            for i, part in zip(chunk, split_output(family, pooled, len(chunk))[:len(chunk)], strict=True):
                parts[i] = part
                self.features.put(keys[i], part)
            if with_attention:
                for i, received in zip(chunk, token_scores(self, chunk_units, rows), strict=True):
                    scores[i] = received
                    self.features.put(f"{keys[i]}|received", received)
        self.last_encoded_units = len(missing)
        self.last_unit_attention = scores if with_attention else None
        # Qwen2-VL still needs the patch grid for its 3-D rotary positions.
        rest = {k: v for k, v in inputs.items() if k not in pixels or k == "image_grid_thw"}
        joined = join_output(family, parts)
        return {**rest, "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=joined)}}, not missing

    def _reuse(self, inputs: dict[str, torch.Tensor], conversation: str | None, key: str,
               max_new_tokens: int) -> tuple[dict, int, torch.Tensor | None]:
        """Generation inputs continuing the conversation's cached prefix, or the full inputs (reused 0),
        and the pruning mask of the cached first prompt (None when it was not pruned)."""
        original = inputs
        entry = self.conversations.take(conversation) if conversation else None
        if entry is None or entry.key != key:
            return original, 0, None
        positions = None
        if entry.pruned is not None:  # the cache holds a pruned prompt: prune the new one the same way
            like, positions = self._pruned_like(entry.pruned, inputs)
            if like is None:
                return original, 0, None
            inputs = like
        ids = inputs["input_ids"][0]
        shared = common_prefix(entry.token_ids, ids)
        if not entry.image_end <= shared < ids.numel():  # images must be covered; one new token at least
            return original, 0, None
        capacity = entry.cache.get_max_length()  # -1: grows as needed; a static cache has a fixed size
        if 0 <= capacity < ids.numel() + max_new_tokens:
            return original, 0, None
        rewind(entry.cache, shared)  # drop what the new prompt does not share
        if entry.rope_deltas is not None:  # Qwen2-VL keeps one conversation's M-RoPE offset on the model
            self.model.model.rope_deltas = entry.rope_deltas
        # Text only from here on: the images live in the cached prefix, so no pixels are passed again.
        kept = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        if positions is not None:
            kept["position_ids"] = positions
        return {**kept, CACHE_ARG: entry.cache}, shared, entry.pruned

    def _pruned_like(self, pruned: torch.Tensor, inputs: dict[str, torch.Tensor]) -> tuple[dict | None, Any]:
        """``inputs`` with the image tokens a cached first turn dropped dropped too, and their full positions."""
        full = inputs["input_ids"]
        if full.shape[-1] < pruned.numel():
            return None, None
        keep = torch.cat([pruned.to(full.device), torch.ones(full.shape[-1] - pruned.numel(), dtype=torch.bool,
                                                            device=full.device)])
        positions = full_positions(self.model, self.family.name, inputs)[..., keep]
        out = {k: (v[:, keep] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
               for k, v in inputs.items()}
        return out, positions

    def _keep(self, conversation: str, key: str, prompt_ids: torch.Tensor, output: Any,
              pruned: torch.Tensor | None = None) -> None:
        cache = generated_cache(output)
        length = int(cache.get_seq_length())
        image_positions = (prompt_ids[0] == self.image_token_id).nonzero()
        rope_deltas = getattr(self.model.model, "rope_deltas", None)
        self.conversations.put(conversation, CachedConversation(
            key=key, token_ids=output.sequences[0, :length].clone(), cache=cache,
            image_end=int(image_positions[-1]) + 1 if image_positions.numel() else 0,
            rope_deltas=rope_deltas.clone() if isinstance(rope_deltas, torch.Tensor) else None, pruned=pruned,
            nbytes=cache_nbytes(cache)))

    def _generation_kwargs(self, opts: GenerationOptions) -> dict:
        sampling = opts.temperature > 0
        kwargs: dict = {"max_new_tokens": opts.max_new_tokens, "min_new_tokens": opts.min_new_tokens,
                        "do_sample": sampling,
                        "repetition_penalty": opts.repetition_penalty}
        if sampling:
            kwargs |= {"temperature": opts.temperature, "top_p": opts.top_p}
        tokenizer = self.processor.tokenizer
        if self._injector is not None:  # a placeholder is never an answer
            kwargs["suppress_tokens"] = [self._injector.placeholder]
        if tokenizer.pad_token_id is None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id
        return kwargs
