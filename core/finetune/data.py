"""Training data for a domain adapter: JSONL, one conversation per line, checked before any training.

A line: ``{"images": ["scans/a.png"], "messages": [{"role": "user", "content": "<image>What is this?"},
{"role": "assistant", "content": "A chest X-ray."}]}``. Image paths are relative to the file; each
``<image>`` in a user turn is where the next image goes (a turn without one gets its images first).
Every problem names its line and field, and all of them are reported at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import InputRejected
from ..jsonl import json_objects
from ..vlm.base import Message

PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    line: int
    images: list[Path]
    messages: list[dict]  # role, content (placeholders still in the text)

    def to_messages(self) -> list[Message]:
        """Loupe messages with the images opened and attached to the turns that name them."""
        pending = [Image.open(path).convert("RGB") for path in self.images]
        out = []
        for turn in self.messages:
            text = turn["content"]
            count = text.count(PLACEHOLDER)
            images, pending = pending[:count], pending[count:]
            out.append(Message(turn["role"], text.replace(PLACEHOLDER, "").strip(), images))
        if pending:  # images no placeholder claimed go with the first user turn
            first = next(i for i, m in enumerate(out) if m.role == "user")
            out[first] = Message("user", out[first].text, [*pending, *out[first].images])
        return out


def _check(number: int, row: dict, base: Path) -> tuple[Example | None, list[str]]:
    where = f"line {number}"
    problems = []
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        problems.append(f"{where}, field 'images': expected a list of paths")
        images = []
    paths = []
    for name in images:
        path = (base / name).resolve()
        if not path.is_relative_to(base.resolve()):
            problems.append(f"{where}, field 'images': {name!r} is outside the data folder")
        elif not path.is_file():
            problems.append(f"{where}, field 'images': {name!r} does not exist")
        paths.append(path)
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, [*problems, f"{where}, field 'messages': expected a non-empty list of turns"]
    for n, turn in enumerate(messages):
        field = f"{where}, field 'messages[{n}]'"
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            problems.append(f"{field}: expected {{\"role\": system|user|assistant, \"content\": text}}")
    if problems:
        return None, problems
    if not any(t["role"] == "assistant" and t["content"].strip() for t in messages):
        problems.append(f"{where}, field 'messages': no assistant answer to learn from")
    if messages[-1]["role"] != "assistant":
        problems.append(f"{where}, field 'messages': the last turn must be the assistant's")
    placeholders = sum(t["content"].count(PLACEHOLDER) for t in messages)
    if placeholders > len(paths):
        problems.append(f"{where}, field 'messages': {placeholders} {PLACEHOLDER} placeholders, {len(paths)} images")
    return (None if problems else Example(number, paths, messages)), problems


def read_examples(path: Path) -> list[Example]:
    """Every example of a JSONL file, or InputRejected listing every bad line (first 20)."""
    examples, problems = [], []
    for number, row, wrong in json_objects(path):
        if row is None:
            problems.append(str(wrong))
            continue
        example, found = _check(number, row, path.parent)
        problems.extend(found)
        if example is not None:
            examples.append(example)
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise InputRejected(f"{path.name} has {len(problems)} problem(s){more}:\n" + "\n".join(problems[:20]))
    if not examples:
        raise InputRejected(f"{path.name} holds no example.")
    return examples


def csv_to_jsonl(source: Path, out: Path) -> int:
    """A CSV with columns image, question, answer (image relative to the CSV) as training JSONL."""
    with source.open(encoding="utf-8", newline="") as handle:
        rows: list[dict] = list(csv.DictReader(handle))
    written = 0
    lines = []
    for number, row in enumerate(rows, start=2):
        missing = [c for c in ("image", "question", "answer") if not (row.get(c) or "").strip()]
        if missing:
            raise InputRejected(f"{source.name} line {number}: column(s) {', '.join(missing)} empty or missing")
        image = (source.parent / row["image"]).resolve()
        if not image.is_relative_to(out.parent.resolve()):
            raise InputRejected(f"{source.name} line {number}: {row['image']!r} is outside the folder of "
                                f"{out.name}; write the JSONL beside or above the images")
        lines.append(json.dumps({"images": [str(image.relative_to(out.parent.resolve()))], "messages": [
            {"role": "user", "content": f"{PLACEHOLDER}{row['question'].strip()}"},
            {"role": "assistant", "content": row["answer"].strip()}]}, ensure_ascii=False))
        written += 1
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return written


def data_digest(path: Path) -> str:
    """The training file's content hash, and so its examples' (images are named by path in it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
