"""Build loadable checkpoints of the supported architectures with random weights.

A checkpoint directory gets the real model class and config, a byte-level BPE tokenizer trained
here with ``tokenizers``, the family's real processor class and a chat template in the family's
format. ``size="tiny"`` is for tests and the offline demo (seconds to build, a few MB); ``size="servable"``
is as small with head size 32, the smallest vLLM's CPU attention serves (tests of ``loupe serve-model``);
``size="real"`` reproduces the published architecture dimensions for cost benchmarks.
Weights are random either way: answers from these models are not meaningful.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    Idefics3Config,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from .families import FAMILIES, processor_class

DEMO_MARKER = "loupe_random_weights"  # key written to config.json; the app shows a banner for such models

_CORPUS = (
    "The image shows a chest radiograph with clear lungs and a normal heart size. "
    "No pleural effusion or pneumothorax is seen. The report describes the findings and impression. "
    "A satellite scene of an airport with runways, parking aprons, buildings and roads near a river. "
    "The document is an invoice with a total amount, a date, an address and line items in a table. "
    "What is shown in this picture? Describe the region in the upper left corner. How many ships are there? "
    "Yes. No. There are three buildings. The text reads: receipt total 12.50 paid by card. "
    "0123456789 , . : ; ! ? ( ) - / % $ "
)


@dataclass(frozen=True)
class TextDims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


@dataclass(frozen=True)
class Recipe:
    special_tokens: tuple[str, ...]
    eos: str
    pad: str
    chat_template: str
    build: Callable[[dict[str, int], str], tuple[object, object]]  # (token ids, size) -> (config, processor parts)


def _train_tokenizer(special: tuple[str, ...], vocab_size: int = 640) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok


# Chat templates in each family's published prompt format (written for Loupe).
_SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
_QWEN2VL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_OV_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SMOLVLM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                     "<image>", "<global-img>", *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)))
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
_LLAVA_OV_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

_TINY_TEXT = TextDims(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=640)
_SERVABLE_TEXT = TextDims(hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, vocab=640)  # head size 32
SIZES = ("tiny", "servable", "real")


def _small_text(size: str) -> TextDims:
    return _SERVABLE_TEXT if size == "servable" else _TINY_TEXT


def _smolvlm(ids: dict[str, int], size: str) -> tuple[object, dict]:
    if size == "real":  # SmolVLM-256M-Instruct: SigLIP-B/16 at 512 px + SmolLM2-135M
        text = TextDims(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49280)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=512, patch_size=16)
        scale, longest, tile = 4, 2048, 512
    else:
        text, scale, longest, tile = _small_text(size), 2, 128, 64
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=64, patch_size=16)
    config = Idefics3Config(
        vision_config=vision, scale_factor=scale, image_token_id=ids["<image>"],
        text_config=dict(model_type="llama", vocab_size=text.vocab, hidden_size=text.hidden,
                         intermediate_size=text.intermediate, num_hidden_layers=text.layers,
                         num_attention_heads=text.heads, num_key_value_heads=text.kv_heads,
                         rope_theta=100000.0, max_position_embeddings=8192, pad_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<end_of_utterance>"], tie_word_embeddings=True),
        tie_word_embeddings=True)
    image_seq_len = (vision["image_size"] // vision["patch_size"]) ** 2 // scale**2
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": longest},
                                                max_image_size={"longest_edge": tile}, do_image_splitting=True)
    return config, {"cls": Idefics3Processor, "image_processor": image_processor, "image_seq_len": image_seq_len}


def _qwen2vl(ids: dict[str, int], size: str) -> tuple[object, dict]:
    if size == "real":  # Qwen2-VL-2B-Instruct
        text = TextDims(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936)
        vision = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4)
        section, pixels = [16, 24, 24], (56 * 56, 1280 * 28 * 28)
    else:
        text, pixels = _small_text(size), (56 * 56, 112 * 112)
        half = text.hidden // text.heads // 2  # the rope sections cover half the head size
        section = [half // 2, half // 4, half // 4]
        vision = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2)
    config = Qwen2VLConfig(
        vision_config=dict(**vision, hidden_size=text.hidden, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        text_config=dict(vocab_size=text.vocab, hidden_size=text.hidden, intermediate_size=text.intermediate,
                         num_hidden_layers=text.layers, num_attention_heads=text.heads,
                         num_key_value_heads=text.kv_heads, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": section},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=14,
                                               merge_size=2, temporal_patch_size=2)
    return config, {"cls": Qwen2VLProcessor, "image_processor": image_processor}


def _llava_ov(ids: dict[str, int], size: str) -> tuple[object, dict]:
    if size == "real":  # llava-onevision-qwen2-0.5b: SigLIP-so400m/14 at 384 px + Qwen2-0.5B
        text = TextDims(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=152000)
        vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                      image_size=384, patch_size=14)
    else:
        text = _small_text(size)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=32, patch_size=8)
    side = vision["image_size"]
    pinpoints = [[side * r, side * c] for r in (1, 2) for c in (1, 2)]
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", **vision),
        text_config=dict(model_type="qwen2", vocab_size=text.vocab, hidden_size=text.hidden,
                         intermediate_size=text.intermediate, num_hidden_layers=text.layers,
                         num_attention_heads=text.heads, num_key_value_heads=text.kv_heads,
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": side, "width": side},
                                                      image_grid_pinpoints=pinpoints)
    return config, {"cls": LlavaOnevisionProcessor, "image_processor": image_processor,
                    "num_image_tokens": (side // vision["patch_size"]) ** 2,
                    "vision_feature_select_strategy": "full"}


RECIPES: dict[str, Recipe] = {
    "smolvlm": Recipe(_SMOLVLM_SPECIALS, "<end_of_utterance>", "<|endoftext|>", _SMOLVLM_TEMPLATE, _smolvlm),
    "qwen2vl": Recipe(_QWEN_SPECIALS, "<|im_end|>", "<|endoftext|>", _QWEN2VL_TEMPLATE, _qwen2vl),
    "llava-ov": Recipe(_LLAVA_OV_SPECIALS, "<|im_end|>", "<|endoftext|>", _LLAVA_OV_TEMPLATE, _llava_ov),
}
assert set(RECIPES) == set(FAMILIES), "every supported family needs a tiny recipe"


def build_processor(family: str, size: str = "tiny"):  # noqa: ANN201 - a family-specific ProcessorMixin
    """The family's processor with a locally trained tokenizer; also returns the model config."""
    recipe = RECIPES[family]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(recipe.special_tokens), eos_token=recipe.eos, pad_token=recipe.pad,
        additional_special_tokens=[t for t in recipe.special_tokens if t not in (recipe.eos, recipe.pad)])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in recipe.special_tokens}
    config, parts = recipe.build(ids, size)
    cls = processor_class(FAMILIES[family]) if parts.pop("cls") is not Idefics3Processor else Idefics3Processor
    processor = cls(tokenizer=tokenizer, chat_template=recipe.chat_template, **parts)
    return processor, config


def make_tiny(family: str, path: str | Path, size: str = "tiny", seed: int = 0, init_std: float | None = None) -> Path:
    """Write a loadable checkpoint directory of ``family`` with random weights; returns its path.

    ``init_std`` widens the language model's initial weights: at the default 0.02 a random tiny
    transformer barely lets earlier tokens change the last one, which a learning test needs."""
    if family not in RECIPES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(RECIPES)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    processor, config = build_processor(family, size)
    if init_std is not None:
        config.get_text_config().initializer_range = init_std
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():  # the real sizes' vocabularies outnumber the tokenizer here: answer in its words
        model.get_output_embeddings().weight[len(processor.tokenizer):].zero_()
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = config.get_text_config().pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    config_file = out / "config.json"
    data = json.loads(config_file.read_text())
    data[DEMO_MARKER] = True
    config_file.write_text(json.dumps(data, indent=2))
    return out


def has_random_weights(path: str | Path) -> bool:
    config_file = Path(path) / "config.json"
    return config_file.is_file() and bool(json.loads(config_file.read_text()).get(DEMO_MARKER))
