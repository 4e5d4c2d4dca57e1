"""The VLM contract every backend implements: chat with images and text, streamed or not."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from PIL import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn. ``images`` are attached before the text of a user turn. ``layout`` is OCR text
    with boxes on a 0-1000 page grid, for a model with an OCR query module (core/ocr/queries.py)."""

    role: Role
    text: str
    images: Sequence[Image.Image] = ()
    layout: Sequence[tuple[str, tuple[int, int, int, int]]] = ()


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # benchmarks force a fixed answer length
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    detail: str = "standard"  # how much of each image the model sees: low | standard | high (resolution.py)
    # Share of each tile's visual tokens kept after the encoder (core/tokens): 1.0 keeps all; None: the
    # model's own default (HFVLM.pruning).
    visual_keep: float | None = None
    # The LoRA adapter to answer with, by the name it was loaded under (HFVLM.load_adapter); None: base weights.
    adapter: str | None = None


@dataclass
class RunRecord:
    """What one answer cost and came from; stored with the answer as a model run."""

    model_id: str
    adapter: str | None
    device: str
    dtype: str
    prompt_tokens: int = 0
    visual_tokens: int = 0
    output_tokens: int = 0
    time_to_first_token_s: float = 0.0
    total_time_s: float = 0.0
    tokens_per_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    text: str
    run: RunRecord


@dataclass
class StreamChunk:
    """A piece of a streamed answer. The final chunk carries the run record."""

    text: str
    run: RunRecord | None = None


def collected(chunks: Iterable[StreamChunk]) -> Answer:
    """A streamed answer gathered into one: its text and the run record of its last chunk."""
    parts: list[str] = []
    run: RunRecord | None = None
    for chunk in chunks:
        parts.append(chunk.text)
        run = chunk.run or run
    assert run is not None  # the last chunk always carries it
    return Answer("".join(parts), run)


class VLM(Protocol):
    model_id: str

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Answer: ...

    def stream(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, conversation: str | None = None
    ) -> Iterator[StreamChunk]:
        """Stream an answer; ``conversation`` names a conversation whose earlier turns may be reused."""
        ...
