"""A model served elsewhere: an OpenAI-compatible chat server (vLLM first; llama.cpp's server too).

The server batches many users' requests (continuous batching, paged KV cache, prefix caching), so a
department's processes share one model instead of each holding its own. What Loupe decides stays in
Loupe: each image is sized by the same detail policy as in-process (resolution.py; the processor
settings go with the request as ``mm_processor_kwargs``), the domain's LoRA adapter is named per
request (vLLM multi-LoRA: one served name per adapter version), and the run record is filled from the
server's token usage and the times seen here. What needs the model's insides (question-steered focus
on giant images, visual-token pruning, OCR query tokens) does not run against a served model; the run
record's ``served_off`` lists what was off for that answer.

Only the model's processor settings are read locally (a few small files), never its weights.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

from ..errors import ModelUnavailable
from .base import Answer, GenerationOptions, Message, RunRecord, StreamChunk, collected
from .engines import EngineChoice
from .families import Family
from .resolution import plan_resolution

CONNECT_TIMEOUT_S = 5.0
# Between two streamed pieces. A new large image on a busy CPU server takes tens of seconds to prefill.
READ_TIMEOUT_S = 300.0
# The features that need the model's weights in this process.
OFF_WHEN_SERVED = ("focus", "pruning", "ocr_query_tokens")


def served_adapter_name(name: str, path: str | Path) -> str:
    """The name an adapter is served under: its Loupe name and a digest of its weights' size and time,
    so a re-trained adapter is a new served model and never answers with the server's older copy."""
    folder = Path(path)
    weights = next((folder / n for n in ("adapter_model.safetensors", "adapter_model.bin")
                    if (folder / n).is_file()), None)
    stamp = f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}" if weights else str(folder)
    return f"{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:8]}"


def image_url(image: Image.Image) -> str:
    """A data URL with the image losslessly encoded (PNG): what the model sees is what Loupe chose."""
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("RGB", "L") else image.mode).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: Sequence[Message]) -> list[dict]:
    out: list[dict] = []
    for msg in messages:
        if msg.role == "user" and msg.images:
            content: object = [*({"type": "image_url", "image_url": {"url": image_url(img)}} for img in msg.images),
                               {"type": "text", "text": msg.text}]
        else:
            content = msg.text
        out.append({"role": msg.role, "content": content})
    return out


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    served_name: str  # the base model's name on the server
    root: str  # what the server loaded (its path or hub id)
    adapters: frozenset[str]  # LoRA adapters it serves, by served name
    kind: str  # "vllm" | "llama.cpp" | "openai": which server answered


class RemoteVLM:
    """The core VLM contract over an OpenAI-compatible server. Thread-safe: concurrent users' requests
    go out concurrently, and the server batches them."""

    query_tokens = 0

    def __init__(self, base_url: str, model_id: str, family: Family, image_processor: object,
                 api_key: str | None = None, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model_id
        self.family = family
        self.image_processor = image_processor
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(
            timeout_s, connect=CONNECT_TIMEOUT_S))
        self.server = self._describe()
        self._served_adapters: dict[str, str] = {}  # Loupe adapter name -> served name
        host = urlsplit(self.base_url).netloc
        self.engine = EngineChoice("served", f"{self.server.kind} at {host} serving {self.server.root}")

    @classmethod
    def connect(cls, model: str | Path, base_url: str, api_key: str | None = None) -> RemoteVLM:
        """Connect to the server at ``base_url``; ``model`` names the served checkpoint (hub id or folder)
        whose processor settings size the images here."""
        from transformers import AutoConfig

        from .families import family_of, processor_class
        from .registry import resolve

        model_id = resolve(str(model))
        try:
            config = AutoConfig.from_pretrained(model_id)
            family = family_of(config.model_type)
            processor = processor_class(family).from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"the served model's processor settings were not found for {model_id!r}: set LOUPE_MODEL to the "
                f"served checkpoint's folder or hub id (only its small config files are read)") from exc
        return cls(base_url, model_id, family, processor.image_processor, api_key)

    # -- the server ---------------------------------------------------------------------------------
    def _get(self, path: str) -> httpx.Response:
        try:
            response = self._http.get(path, timeout=CONNECT_TIMEOUT_S * 2)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"the model server at {self.base_url} did not answer ({type(exc).__name__})") from exc
        return response

    def _describe(self) -> ServerInfo:
        response = self._get("/v1/models")
        if response.status_code != 200:
            raise ModelUnavailable(f"the model server at {self.base_url} answered {response.status_code} to /v1/models")
        models = response.json().get("data", [])
        if not models:
            raise ModelUnavailable(f"the model server at {self.base_url} serves no model")
        bases = [m for m in models if not m.get("parent")] or models[:1]
        owner = str(bases[0].get("owned_by", ""))
        kind = "vllm" if owner == "vllm" else "llama.cpp" if "llama" in owner.lower() else "openai"
        adapters = frozenset(str(m["id"]) for m in models if m.get("parent"))
        return ServerInfo(self.base_url, str(bases[0]["id"]), str(bases[0].get("root") or bases[0]["id"]),
                          adapters, kind)

    def ready(self) -> bool:
        try:
            return self._http.get("/v1/models", timeout=CONNECT_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    # -- adapters ---------------------------------------------------------------------------------
    def load_adapter(self, path: str | Path, name: str) -> None:
        """Make ``name`` answerable: the server serves it already (``loupe serve-model`` registers the
        registry's adapters at start), or it is loaded there now (vLLM with runtime LoRA updating; the
        server must see ``path``)."""
        served = served_adapter_name(name, path)
        if self._served_adapters.get(name) == served:  # asked at every question: known, nothing to do
            return
        if served not in self._describe().adapters:
            try:
                response = self._http.post("/v1/load_lora_adapter",
                                           json={"lora_name": served, "lora_path": str(Path(path).resolve())})
            except httpx.HTTPError as exc:
                raise ModelUnavailable(
                    f"the model server did not load adapter {name!r} ({type(exc).__name__})") from exc
            if response.status_code != 200:
                raise ModelUnavailable(
                    f"the model server does not serve adapter {name!r} and could not load it ({response.status_code}): "
                    f"restart it with `loupe serve-model`, which registers every adapter in the registry")
        self._served_adapters[name] = served

    def forget(self, conversation: str | None = None) -> None:
        """Nothing is cached here; the server's prefix cache evicts by itself."""

    # -- answers ----------------------------------------------------------------------------------
    def request_body(self, messages: Sequence[Message], opts: GenerationOptions) -> dict:
        images = [img for msg in messages for img in msg.images]
        plan = plan_resolution(self.family.name, self.image_processor, images, opts.detail)
        if plan.images != images:  # the plan resized some images: put them back in their messages
            resized = iter(plan.images)
            messages = [replace(msg, images=[next(resized) for _ in msg.images]) for msg in messages]
        model = self.server.served_name
        if opts.adapter is not None:
            if opts.adapter not in self._served_adapters:
                raise ModelUnavailable(f"adapter {opts.adapter!r} was not registered with the model server")
            model = self._served_adapters[opts.adapter]
        body: dict = {"model": model, "messages": openai_messages(messages), "stream": True,
                      "stream_options": {"include_usage": True}, "max_tokens": opts.max_new_tokens,
                      "temperature": opts.temperature, "top_p": opts.top_p}
        if opts.min_new_tokens:
            body["min_tokens"] = opts.min_new_tokens
        if opts.repetition_penalty != 1.0:
            body["repetition_penalty"] = opts.repetition_penalty
        if opts.seed is not None:
            body["seed"] = opts.seed
        if plan.processor_kwargs and self.server.kind == "vllm":
            body["mm_processor_kwargs"] = plan.processor_kwargs
        return body

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Answer:
        return collected(self.stream(messages, options))

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None,
               conversation: str | None = None) -> Iterator[StreamChunk]:
        """Stream an answer from the server. ``conversation`` needs nothing here: the server's prefix
        cache finds the earlier turns by their tokens."""
        opts = options or GenerationOptions()
        body = self.request_body(messages, opts)
        start = time.perf_counter()
        first: float | None = None
        usage: dict = {}
        pieces = 0
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise ModelUnavailable(f"the model server refused the request ({response.status_code}): "
                                           f"{_error_text(response)}")
                for data in _events(response.iter_lines()):
                    usage = data.get("usage") or usage
                    for choice in data.get("choices", []):
                        first = first or time.perf_counter()  # a piece comes once a token is generated
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            pieces += 1
                            yield StreamChunk(text)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"the model server at {self.base_url} stopped answering ({type(exc).__name__})") from exc
        end = time.perf_counter()
        output = int(usage.get("completion_tokens", pieces))
        decode = end - (first or end)
        yield StreamChunk("", RunRecord(
            model_id=self.model_id, adapter=opts.adapter, device=f"served:{self.server.kind}", dtype="server",
            prompt_tokens=int(usage.get("prompt_tokens", 0)), output_tokens=output,
            time_to_first_token_s=round((first or end) - start, 4), total_time_s=round(end - start, 4),
            tokens_per_s=round((output - 1) / decode, 2) if decode > 0 and output > 1 else 0.0,
            extra={"engine": "served", "engine_reason": self.engine.reason, "detail": opts.detail,
                   "served_model": body["model"], "served_off": list(OFF_WHEN_SERVED)}))


def _events(lines: Iterator[str]) -> Iterator[dict]:
    """The JSON payloads of a server-sent event stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        if payload:
            yield json.loads(payload)


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json()
    except ValueError:
        return response.text[:200]
    error = detail.get("error", detail) if isinstance(detail, dict) else detail
    return str(error.get("message", error) if isinstance(error, dict) else error)[:200]
