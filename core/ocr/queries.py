"""OCR query tokens (the DocVLM idea): a page's OCR text and boxes, read together with the question by
a small layout-aware encoder and compressed into K learned query embeddings. The embeddings replace K
placeholder tokens in the prompt through hooks on the language model's input embedding, so the page
image can stay small and the base VLM stays frozen and unforked.

The encoder borrows the VLM's own (frozen) token embedding for the words, so the module itself is
small: box embeddings on the 0-1000 page grid, a few transformer layers, the learned queries and an
MLP to the LLM width. Training lives in ``query_training.py``; an untrained module must not answer
(the app keeps OCR-in-prompt until one is configured).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AddedToken

from ..errors import ModelUnavailable

PLACEHOLDER = "<ocr_query>"
GRID = 1000  # boxes are given on a 0-1000 page grid, like the OCR-in-prompt serialisation
MAX_QUESTION_TOKENS = 128
CONFIG_FILE = "ocr_queries.json"
WEIGHTS_FILE = "ocr_queries.safetensors"

Box = tuple[int, int, int, int]
LayoutUnit = tuple[str, Box]  # a word or line of OCR text and its box (left, top, right, bottom) on the grid
_QUERY, _QUESTION, _OCR = 0, 1, 2  # segment ids


@dataclass(frozen=True)
class QueryConfig:
    llm_width: int  # hidden size of the language model the queries feed
    vocab_size: int  # rows of its input embedding (the encoder reads words through it)
    embed_scale: float  # element std of that embedding: the queries are emitted at the same scale
    embedding_digest: str  # which embedding that is (embedding_digest): a module only fits its own base
    base_model: str = ""  # the checkpoint the module was built for
    queries: int = 32  # K: placeholder tokens in the prompt
    width: int = 256
    layers: int = 2
    heads: int = 4
    max_tokens: int = 512  # OCR sub-word tokens read per page set; the rest is cut


@dataclass
class LayoutBatch:
    ocr_ids: torch.Tensor  # [B, N] token ids of the OCR text, in reading order
    boxes: torch.Tensor  # [B, N, 4] each token's unit box on the 0-1000 grid
    ocr_mask: torch.Tensor  # [B, N] True where a real token is
    question_ids: torch.Tensor  # [B, Q]
    question_mask: torch.Tensor  # [B, Q]


def layout_batch(tokenizer, items: Sequence[tuple[Sequence[LayoutUnit], str]],  # noqa: ANN001 - HF tokenizer
                 max_tokens: int) -> LayoutBatch:
    """Tokenise (layout, question) pairs: every sub-word token of a unit carries the unit's box."""
    ocr_rows: list[list[int]] = []
    box_rows: list[list[Box]] = []
    question_rows: list[list[int]] = []
    for layout, question in items:
        ids: list[int] = []
        boxes: list[Box] = []
        if layout:
            encoded = tokenizer([f" {text}" for text, _ in layout], add_special_tokens=False)["input_ids"]
            for unit_ids, (_, box) in zip(encoded, layout, strict=True):
                clipped = tuple(min(max(int(v), 0), GRID) for v in box)
                ids.extend(unit_ids)
                boxes.extend([clipped] * len(unit_ids))  # type: ignore[list-item]
        ocr_rows.append(ids[:max_tokens])
        box_rows.append(boxes[:max_tokens])
        question_rows.append(tokenizer(question, add_special_tokens=False)["input_ids"][:MAX_QUESTION_TOKENS])
    n = max(1, max(map(len, ocr_rows)))
    q = max(1, max(map(len, question_rows)))
    batch = LayoutBatch(torch.zeros(len(items), n, dtype=torch.long), torch.zeros(len(items), n, 4, dtype=torch.long),
                        torch.zeros(len(items), n, dtype=torch.bool), torch.zeros(len(items), q, dtype=torch.long),
                        torch.zeros(len(items), q, dtype=torch.bool))
    for row, (ids, boxes, question) in enumerate(zip(ocr_rows, box_rows, question_rows, strict=True)):
        if ids:
            batch.ocr_ids[row, :len(ids)] = torch.tensor(ids)
            batch.boxes[row, :len(ids)] = torch.tensor(boxes)
            batch.ocr_mask[row, :len(ids)] = True
        if question:
            batch.question_ids[row, :len(question)] = torch.tensor(question)
            batch.question_mask[row, :len(question)] = True
    return batch


class OCRQueryEncoder(nn.Module):
    """OCR tokens + boxes + question -> K query embeddings at the LLM width."""

    def __init__(self, config: QueryConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.word_in = nn.Linear(config.llm_width, width)  # from the VLM's token embedding
        self.x_embed = nn.Embedding(GRID + 1, width)  # shared by left and right edges
        self.y_embed = nn.Embedding(GRID + 1, width)  # shared by top and bottom edges
        self.position = nn.Embedding(max(config.max_tokens, MAX_QUESTION_TOKENS), width)
        self.segment = nn.Embedding(3, width)
        self.queries = nn.Parameter(torch.randn(config.queries, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, config.heads, 4 * width, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.to_llm = nn.Sequential(nn.Linear(width, config.llm_width), nn.GELU(),
                                    nn.Linear(config.llm_width, config.llm_width))
        self.out_norm = nn.LayerNorm(config.llm_width, elementwise_affine=False)
        self.scale = nn.Parameter(torch.tensor(float(config.embed_scale)))

    def forward(self, batch: LayoutBatch, embed: nn.Embedding) -> torch.Tensor:
        """[B, K, llm_width] query embeddings; ``embed`` is the VLM's input embedding (not trained here)."""
        device = self.queries.device
        ocr_ids, question_ids = batch.ocr_ids.to(device), batch.question_ids.to(device)
        boxes = batch.boxes.to(device)
        with torch.no_grad():
            ocr_words = embed(ocr_ids).float()  # [B, N, llm_width]
            question_words = embed(question_ids).float()  # [B, Q, llm_width]
        n, q = ocr_ids.shape[1], question_ids.shape[1]
        ocr = (self.word_in(ocr_words) + self.position(torch.arange(n, device=device))
               + self.x_embed(boxes[..., 0]) + self.y_embed(boxes[..., 1])
               + self.x_embed(boxes[..., 2]) + self.y_embed(boxes[..., 3]) + self.segment.weight[_OCR])
        question = (self.word_in(question_words) + self.position(torch.arange(q, device=device))
                    + self.segment.weight[_QUESTION])
        queries = (self.queries + self.segment.weight[_QUERY]).expand(ocr_ids.shape[0], -1, -1)
        tokens = torch.cat([queries, question, ocr], dim=1)  # [B, K + Q + N, width]
        keep = torch.cat([torch.ones(queries.shape[:2], dtype=torch.bool, device=device),
                          batch.question_mask.to(device), batch.ocr_mask.to(device)], dim=1)
        encoded = self.encoder(tokens, src_key_padding_mask=~keep)
        out = self.to_llm(self.norm(encoded[:, :self.config.queries]))
        return self.out_norm(out) * self.scale  # [B, K, llm_width]

    # -- files ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, path / WEIGHTS_FILE)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> OCRQueryEncoder:
        path = Path(directory)
        try:
            config = QueryConfig(**json.loads((path / CONFIG_FILE).read_text()))
            module = cls(config)
            module.load_state_dict(load_file(path / WEIGHTS_FILE))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise ModelUnavailable(f"cannot load the OCR query module in {path}: {exc}") from exc
        return module.eval()

    @classmethod
    def for_model(cls, model: nn.Module, base_model: str = "", **options: int) -> OCRQueryEncoder:
        """A fresh (untrained) module shaped for ``model``'s language model."""
        embedding = model.get_input_embeddings()
        weight = embedding.weight.detach()
        config = QueryConfig(llm_width=weight.shape[1], vocab_size=weight.shape[0],
                             embed_scale=round(float(weight.float().std()), 6),
                             embedding_digest=embedding_digest(weight), base_model=base_model, **options)
        return cls(config)

    def check_fits(self, model: nn.Module) -> None:
        if embedding_digest(model.get_input_embeddings().weight) != self.config.embedding_digest:
            raise ModelUnavailable(f"the OCR query module was built for {self.config.base_model or 'another model'}: "
                                   "it reads words through that model's token embedding, which the loaded model "
                                   "does not have")


def embedding_digest(weight: torch.Tensor) -> str:
    """Identifies a token embedding by a strided sample of its rows, rounded to bf16 so the same
    checkpoint loaded in fp32 or bf16 gives the same digest."""
    sample = weight.detach()[::97].to(torch.bfloat16).float().cpu().contiguous()
    return hashlib.sha256(f"{tuple(weight.shape)}".encode() + sample.numpy().tobytes()).hexdigest()[:16]


def placeholder_id(tokenizer) -> int:  # noqa: ANN001 - any HF tokenizer
    """The placeholder's token id, added to the tokenizer as a special token when missing. It may lie
    past the embedding's rows: the injector swaps it for a valid id before the lookup."""
    if PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(PLACEHOLDER, special=True, normalized=False)], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(PLACEHOLDER))


def with_placeholders(text: str, count: int) -> str:
    return PLACEHOLDER * count + "\n" + text


class QueryInjector:
    """Writes query embeddings over the placeholder tokens' embeddings, in order, for every forward
    pass whose input ids contain placeholders (the prefill); decode steps pass through untouched."""

    def __init__(self, embedding: nn.Embedding, placeholder: int) -> None:
        self.embedding = embedding
        self.placeholder = placeholder
        self.pending: torch.Tensor | None = None  # [n, width] for the next prefill, n = placeholders in it
        self._mask: torch.Tensor | None = None
        self._handles = [embedding.register_forward_pre_hook(self._swap_ids),
                         embedding.register_forward_hook(self._inject)]

    def _swap_ids(self, module: nn.Module, args: tuple) -> tuple | None:
        ids = args[0]
        mask = ids == self.placeholder
        if not bool(mask.any()):
            self._mask = None
            return None
        if self.pending is None:
            raise RuntimeError("the prompt has OCR query placeholders but no query embeddings were given")
        self._mask = mask
        return (ids.masked_fill(mask, 0), *args[1:])  # the placeholder may have no embedding row

    def _inject(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        mask, self._mask = self._mask, None
        if mask is None:
            return None
        assert self.pending is not None
        if int(mask.sum()) != self.pending.shape[0]:
            raise RuntimeError(f"the prompt has {int(mask.sum())} OCR query placeholders for "
                               f"{self.pending.shape[0]} query embeddings")
        return output.masked_scatter(mask.unsqueeze(-1), self.pending.to(output.dtype))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
