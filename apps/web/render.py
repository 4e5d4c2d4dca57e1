"""Plain-language text and HTML the app shows: model names, statuses, conversations with reviews, the viewer."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from loupe.core.cases.models import Case, ChatMessage, ModelRun, Review
from loupe.core.plugins import AssetView
from loupe.core.vlm.base import RunRecord
from loupe.core.vlm.slot import SlotStatus

DEMO_BANNER = ("**Demo weights: the model has random weights and its answers are not meaningful.** "
               "Use them to try the workflow only.")
VERDICT_LABELS = {"accepted": "✅ Accepted", "edited": "✏️ Edited", "rejected": "❌ Rejected"}
# The characters that start HTML (`<`, `&`), links and images (`[`), code (where references show as typed) and
# e-mail autolinks, as character references; "://" and "www." lose their power to autolink the same way.
# Everything else stays as typed, so a copied answer reads the same (Gradio's copy button copies the source).
# `$` too: Gradio's Markdown and Chatbot render `$$…$$` as KaTeX, which can draw boxes over the page.
_MD_TEXT = {ord(c): f"&#{ord(c)};" for c in "[]`~@\\$"} | {ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;"}
# What people type (questions, titles, corrected answers) keeps no Markdown at all: no emphasis, heading, rule or
# list can make it look like text the app wrote (a sign-off, a header). Model answers keep their formatting.
_TYPED_TEXT = _MD_TEXT | {ord(c): f"&#{ord(c)};" for c in "*_#+-=|!{}()"}
_AUTOLINK = re.compile(r"(?i)(www)\.|:(//)")
_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)


def md_text(text: str) -> str:
    """User, file or model text for a Markdown component (chat, headers, notes): never an element, a link, an image.

    Emphasis and lists may still render; leading blanks become references, so no line turns into a code block."""
    escaped = _AUTOLINK.sub(lambda m: f"{m[1]}&#46;" if m[1] else f"&#58;{m[2]}", str(text).translate(_MD_TEXT))
    return _INDENT.sub(lambda m: "".join(f"&#{ord(c)};" for c in m[0]), escaped)


def typed_text(text: str) -> str:
    """What a person typed, for a Markdown component: shown exactly as written, with no formatting at all."""
    escaped = _AUTOLINK.sub(lambda m: f"{m[1]}&#46;" if m[1] else f"&#58;{m[2]}", str(text).translate(_TYPED_TEXT))
    return _INDENT.sub(lambda m: "".join(f"&#{ord(c)};" for c in m[0]), escaped)


def _html_text(text: str) -> str:
    """Text inside HTML that a Markdown component renders: escaped, and no `$$` left for KaTeX."""
    return html.escape(text).replace("$", "&#36;")


def model_label(model_id: str, demo: bool = False) -> str:
    """A model as people name it: the hub repo or folder name, never a temp path."""
    if demo:
        return "demo model (random weights)"
    name = model_id.rstrip("/").rsplit("/", 1)[-1] if "/" in model_id else model_id
    return Path(name).name or model_id


def with_adapter(model_id: str, adapter: str | None, demo: bool = False) -> str:
    """The model that answered, with the fine-tuned adapter it answered through."""
    label = model_label(model_id, demo)
    return f"{label} + adapter {adapter}" if adapter else label


def status_banner(status: SlotStatus) -> str:
    label = model_label(status.model_id, status.demo)
    if status.state == "ready":
        note = f"\n\n⚠️ {DEMO_BANNER}" if status.demo else ""
        if status.switching_to:
            note += (f"\n\nLoading **{model_label(status.switching_to, False)}**… it takes over once ready; "
                     "until then this model answers.")
        if status.switch_error:
            note += f"\n\n⚠️ The model switch failed: {plain_reason(status.switch_error)} This model still answers."
        return f"Model: **{label}** is ready.{note}"
    if status.state == "loading":
        return f"Model: loading **{label}**… Questions can be asked once it is ready."
    return (f"⛔ **No model is available.** {plain_reason(status.error or '')}\n\n"
            "An administrator can set `LOUPE_MODEL` (hub id or local folder) and restart, "
            "or switch to the demo model on the Admin tab to try the workflow.")


def plain_reason(error: str) -> str:
    """A load failure in words an operator can act on; the library's own text only when nothing fits."""
    head, _, detail = error.partition(": ")
    lowered = detail.lower()
    if "connect" in lowered or "offline" in lowered or "resolve" in lowered:
        return f"{head}: there is no connection to the model hub and no local copy."
    if "does not appear to have" in lowered or "no such file" in lowered or "not a valid" in lowered:
        return f"{head}: the folder or hub id does not hold a model checkpoint."
    return error


def answered_note(run: RunRecord, demo: bool) -> str:
    detail = run.extra.get("detail")
    note = (f"Answered in {run.total_time_s:.1f} s (first words after {run.time_to_first_token_s:.1f} s) "
            f"by {with_adapter(run.model_id, run.adapter, demo)}" + (f" at {detail} detail." if detail else "."))
    return note + (" Demo weights: not a meaningful answer." if demo else "")


def run_footnote(run: ModelRun) -> str:
    """Which model answered, at what detail, from how many tiles and visual tokens."""
    extra = run.extra or {}
    parts = [with_adapter(run.model_id, run.adapter, run.demo_weights)]
    if detail := extra.get("detail"):
        parts.append(f"{detail} detail")
    if tiles := extra.get("tiles"):
        parts.append(f"{tiles} tile{'s' if tiles != 1 else ''}")
    if unpruned := extra.get("visual_tokens_unpruned"):
        parts.append(f"{run.visual_tokens:,} of {unpruned:,} visual tokens kept")
    elif extra.get("engine") != "served":  # a server counts them inside the prompt
        parts.append(f"{run.visual_tokens:,} visual tokens")
    if extra.get("engine") == "int8":
        parts.append("int8 engine")
    if extra.get("engine") == "served":
        parts.append(f"served model, {run.prompt_tokens:,} prompt tokens")
    if extra.get("focus_off"):
        parts.append("whole image reduced: tile focus is off with a served model")
    if extra.get("reused_tokens"):
        parts.append("continued the conversation")  # the images and earlier turns were not computed again
    elif extra.get("cached_features"):
        parts.append("image features reused")
    if run.demo_weights:
        parts.append("demo weights: not a meaningful answer")
    return " · ".join(parts)


def review_line(review: Review) -> str:
    """A review under its answer, as HTML: no text a user or the model writes can produce an element, so a
    typed "Signed off by …" never looks like a real one; the corrected text stays inside its quote."""
    when = review.created_at.strftime("%Y-%m-%d %H:%M UTC")
    who = _html_text(review.reviewer.username if review.reviewer else "?")
    line = f"{VERDICT_LABELS.get(review.verdict, review.verdict)} by <b>{who}</b> · {when}"
    if review.signed_off:
        line = f"🖊️ Signed off by <b>{who}</b> (reviewer) · {when} — {VERDICT_LABELS[review.verdict].split(' ')[1]}"
    if review.edited_text:
        corrected = "<br>".join(_html_text(part) for part in review.edited_text.splitlines())
        line += f"<blockquote>Corrected: {corrected}</blockquote>"
    return f'<div class="loupe-review">{line}</div>'


def conversation(case: Case) -> tuple[list[dict], list[int]]:
    """Chat history for the Chatbot (reviews shown under their answer) and the message id of each entry."""
    history, ids = [], []
    shared = bool(case.shares) or any(m.author_id not in (None, case.owner_id) for m in case.messages)
    for message in case.messages:
        # The question as typed; the answer keeps the model's formatting, never an element (a document can inject).
        content = typed_text(message.content) if message.role == "user" else md_text(message.content)
        if message.role == "user" and shared:  # several people read this case: say who asked, and when
            who = _html_text(message.author.username if message.author else "?")
            when = message.created_at.strftime("%Y-%m-%d %H:%M UTC")
            content = f"<sub>asked by {who} · {when}</sub>\n\n{content}"  # no formatting in a question
        if message.role == "assistant" and message.model_run is not None:
            content += citation_note(message.model_run.extra or {})
            content += f"\n\n<sub>{run_footnote(message.model_run)}</sub>"
        if message.role == "assistant" and message.reviews:
            content += "\n\n" + "".join(review_line(r) for r in message.reviews)
        history.append({"role": message.role, "content": content})
        ids.append(message.id)
    return history, ids


def citations(case: Case, message_id: int | None) -> list[dict]:
    """The stored citations of one answer of the case (none for other messages)."""
    message = next((m for m in case.messages if m.id == message_id), None)
    run = message.model_run if message is not None else None
    return list((run.extra or {}).get("citations") or []) if run is not None else []


def citation_note(extra: dict) -> str:
    """The lines an answer quoted, under it in the chat (the viewer highlights them)."""
    cited = extra.get("citations") or []
    pages = sorted(extra.get("pages_read") or [])
    read = f"Pages read: {', '.join(map(str, pages))}" if pages else ""  # said even when no line is quoted
    if not cited:
        return f"\n\n<sub>{read}</sub>" if read else ""
    if all("page" in c for c in cited):  # lines quoted from a document's pages
        quotes = "; ".join(f"p. {c['page']} “{md_text(c['text'])}”" for c in cited)
        return f"\n\n<sub>{read + ' · ' if read else ''}Cited: {quotes}</sub>"
    places = "; ".join(f"{n}. {md_text(c['text'])}" for n, c in enumerate(cited, start=1))
    return f"\n\n<sub>Read from: {places}</sub>"  # parts of an image (tiles), numbered as on the viewer


def answer_choices(case: Case) -> list[tuple[str, int]]:
    """Dropdown entries naming each answer by number, opening words and latest review."""
    choices = []
    answers = [m for m in case.messages if m.role == "assistant"]
    for n, message in enumerate(answers, start=1):
        words = " ".join(message.content.split())
        words = words[:60] + ("…" if len(words) > 60 else "")
        state = _latest_state(message)
        choices.append((f"Answer {n}: “{words}”{f' ({state})' if state else ''}", message.id))
    return choices


def _latest_state(message: ChatMessage) -> str:
    if not message.reviews:
        return ""
    last = message.reviews[-1]
    return ("signed off" if last.signed_off else last.verdict)


def case_header(case: Case) -> str:
    shared = ", ".join(md_text(s.user.username) for s in case.shares)
    parts = [f"### Case {case.id}: {typed_text(case.title)}",
             f"Owner **{md_text(case.owner.username)}** · created {case.created_at.strftime('%Y-%m-%d %H:%M UTC')}"]
    if shared:
        parts.append(f"Shared with {shared}")
    if case.archived_at:
        parts.append("**Archived** — restore it to ask new questions.")
    return "\n\n".join(parts)


def quoted(text: str) -> str:
    """An answer shown as a Markdown quote, every line of it inside the quote."""
    return "\n".join(f"> {line}" for line in md_text(text).split("\n"))


def viewer_html(assets: list[AssetView], highlights: Sequence[dict] = ()) -> str:
    """The case image(s) from the access-checked route, caption below: nothing covers the image corners."""
    if not assets:
        return '<div class="loupe-viewer empty">No case open.</div>'
    figures = []
    for asset in assets:
        size = f"{asset.width} × {asset.height} px" if asset.width else ""
        note = f"<br><strong>{html.escape(asset.note)}</strong>" if asset.note else ""
        figures.append(
            f'<figure class="loupe-viewer"><a href="{asset.url}" target="_blank" rel="noopener" '
            f'title="Open full size"><img src="{asset.url}" alt="Case image" loading="lazy"></a>'
            f'<figcaption>{size} · <a href="{asset.url}" target="_blank" rel="noopener">full size</a>'
            f'{note}</figcaption></figure>')
    return "".join(figures)
