"""The default scorer: the loaded VLM's own attention, no training.

The question and the images (thumbnail first, then the round's tiles, each at the family's one-tile
detail) go through the language model up to an early layer. There, the last prompt token's attention
over the image tokens, averaged over heads, says which parts of which tile the question looks at
(the LRS-VQA / FastV observation that early-layer text-to-image attention already localises).

Attention weights are read through transformers' attention-function registry: a function registered
under ``loupe_capture`` computes attention exactly as SDPA does and, for the one layer asked for, also
the last query row's softmax. The text model uses it only during a scoring pass (the config's
attention implementation is switched and restored on the torch thread), and a forward hook on the
next layer stops the pass, so the layers above are never run. Vision features come from (and go to)
the VLM's per-tile feature cache: a tile scored once is never encoded again, also when answering.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..memory import release_free_memory
from ..vlm import worker
from ..vlm.attention_rows import attention_rows
from ..vlm.base import Message
from ..vlm.families import language_model
from .focus import TileView

CAPTURE = "loupe_capture"
_armed = threading.local()  # .layer: the layer index whose last-row attention to keep; .row: the result


class _Stop(Exception):
    """Raised after the scoring layer: nothing above it is needed."""


def _capture_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):  # noqa: ANN001, ANN201
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if getattr(module, "layer_idx", None) == getattr(_armed, "layer", None):
        scale = scaling if scaling is not None else 1 / math.sqrt(query.shape[-1])
        last = slice(query.shape[2] - 1, query.shape[2])
        _armed.row = attention_rows(query, key, attention_mask, scale, last).mean(dim=1)[0, 0]  # [k], heads averaged
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE, _capture_attention)


def tile_side(vlm) -> int:  # noqa: ANN001 - an HFVLM or a RemoteVLM
    """The square the family encodes as one tile at low detail (SmolVLM 512, LLaVA-OneVision 384,
    Qwen2-VL 448 = 16 × 16 merged patches)."""
    processor = vlm.processor.image_processor if hasattr(vlm, "processor") else vlm.image_processor
    if vlm.family.name == "smolvlm":
        return int(processor.max_image_size["longest_edge"])
    if vlm.family.name == "llava-ov":
        return int(processor.size["height"])
    unit = int(processor.patch_size) * int(processor.merge_size)
    return unit * 16


class AttentionScorer:
    def __init__(self, vlm, layer: int | None = None, adapter: str | None = None) -> None:  # noqa: ANN001 - an HFVLM
        self.vlm = vlm
        self.adapter = adapter  # the LoRA adapter the answer will use: its attention steers the search
        text = language_model(vlm.model, vlm.family)
        self.layers = text.layers
        depth = len(self.layers)
        self.layer = layer if layer is not None else min(depth - 1, max(1, depth // 8))
        self.encoded_units = 0  # vision-encoder units run by this scorer (cache misses)
        _register()

    def score(self, question: str, thumbnail: Image.Image, tiles: Sequence[TileView]) -> list[np.ndarray]:
        return worker.call(self._score, question, thumbnail, [t.image for t in tiles])

    def _score(self, question: str, thumbnail: Image.Image, images: list[Image.Image]) -> list[np.ndarray]:
        vlm = self.vlm
        vlm.adapters.use(self.adapter)  # on the torch thread: no other job runs between this and the pass
        inputs = vlm.prepare([Message("user", question, [square(thumbnail), *images])], "low")
        gen_inputs, _ = vlm._encode_once(inputs)  # noqa: SLF001 - the VLM's own cached encode
        self.encoded_units += vlm.last_encoded_units
        config = language_model(vlm.model, vlm.family).config
        previous = config._attn_implementation  # noqa: SLF001
        stopper = self.layers[self.layer].register_forward_hook(_raise_stop)
        _armed.layer, _armed.row = self.layer, None
        try:
            config._attn_implementation = CAPTURE  # noqa: SLF001
            with torch.inference_mode():
                vlm.model(**gen_inputs, use_cache=False)
        except _Stop:
            pass
        finally:
            config._attn_implementation = previous  # noqa: SLF001
            stopper.remove()
            _armed.layer = None
        release_free_memory()  # the pass's activations: memory should track what is kept
        row = _armed.row
        if row is None:
            raise RuntimeError("the scoring layer was not reached")
        positions = (inputs["input_ids"][0] == vlm.image_token_id).nonzero().flatten()
        weights = row[positions].float().cpu().numpy()
        per_image = np.array_split(weights, len(images) + 1)  # every image is the same square: equal shares
        maps = []
        for values in per_image[1:]:  # the thumbnail's tokens give context, not a tile
            side = math.isqrt(len(values))
            maps.append(values[:side * side].reshape(side, side))  # extra tokens (LLaVA's newline) dropped
        return maps


def _raise_stop(module, args, output) -> None:  # noqa: ANN001
    raise _Stop


def square(image: Image.Image) -> Image.Image:
    """Padded black to a square (bottom and right), so every image of a pass gets the same token grid."""
    side = max(image.size)
    if image.width == image.height:
        return image
    out = Image.new("RGB", (side, side))
    out.paste(image, (0, 0))
    return out
