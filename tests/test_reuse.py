"""Conversation reuse: a follow-up continues the cached prefix and answers exactly as a fresh prefill would."""

from __future__ import annotations

import pytest
from PIL import Image

from loupe.core.vlm.base import GenerationOptions, Message
from loupe.core.vlm.families import FAMILIES
from loupe.core.vlm.hf import HFVLM
from loupe.core.vlm.reuse import ConversationCaches

OPTIONS = GenerationOptions(max_new_tokens=12, min_new_tokens=12, detail="high")
RED = Image.new("RGB", (120, 90), (200, 30, 30))
BLUE = Image.new("RGB", (64, 160), (30, 30, 200))


def _say(vlm: HFVLM, messages: list[Message], conversation: str | None = None) -> tuple[str, dict]:
    chunks = list(vlm.stream(messages, OPTIONS, conversation=conversation))
    return "".join(c.text for c in chunks), chunks[-1].run.extra


def _follow_up(first: list[Message], answer: str, question: str) -> list[Message]:
    return [*first, Message("assistant", answer), Message("user", question)]


@pytest.mark.parametrize("engine", ["plain", "int8", "static"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_follow_up_reuses_the_conversation_and_matches_a_fresh_prefill(tiny_model_dir, family, engine):
    vlm = HFVLM.from_pretrained(tiny_model_dir(family), device="cpu", engine=engine,
                                dtype="fp32" if engine != "int8" else None)
    assert vlm.engine.name == engine
    first = [Message("user", "What is shown?", [RED])]
    answer, extra = _say(vlm, first, "case-1")
    assert extra["reused_tokens"] == 0
    # Another conversation in between (a different image: Qwen2-VL's rope offset changes).
    other = [Message("user", "Describe it.", [BLUE])]
    _say(vlm, other, "case-2")
    second = _follow_up(first, answer, "And the colour?")
    reused_answer, reused = _say(vlm, second, "case-1")
    prompt = vlm.prepare(second, OPTIONS.detail)["input_ids"]
    image_end = int((prompt[0] == vlm.image_token_id).nonzero()[-1]) + 1
    assert image_end <= reused["reused_tokens"] < prompt.shape[-1]  # images and first answer not recomputed
    fresh_answer, fresh = _say(vlm, second)  # no conversation: everything prefilled again
    assert fresh["reused_tokens"] == 0
    assert reused_answer == fresh_answer  # greedy output identical with and without reuse
    # The conversation goes on: a third turn continues from the second.
    third = _follow_up(second, reused_answer, "Anything else?")
    assert _say(vlm, third, "case-1")[1]["reused_tokens"] > reused["reused_tokens"]


def test_a_changed_image_or_detail_is_never_continued(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), dtype="fp32")
    first = [Message("user", "What is shown?", [RED])]
    answer, _ = _say(vlm, first, "case-9")
    swapped = _follow_up([Message("user", "What is shown?", [BLUE.resize(RED.size)])], answer, "Sure?")
    assert _say(vlm, swapped, "case-9")[1]["reused_tokens"] == 0


def test_least_recently_used_conversations_go_first_when_over_budget(tiny_model_dir):
    vlm = HFVLM.from_pretrained(tiny_model_dir("smolvlm"), dtype="fp32")
    _say(vlm, [Message("user", "Question?", [RED])], "probe")
    one = vlm.conversations.nbytes
    assert one > 0
    vlm.conversations = ConversationCaches(int(2.5 * one))
    for n in range(6):
        _say(vlm, [Message("user", "Question?", [RED])], f"case-{n}")
    assert len(vlm.conversations) == 2 and vlm.conversations.nbytes <= 2.5 * one
    assert vlm.conversations.take("case-5") is not None and vlm.conversations.take("case-0") is None
