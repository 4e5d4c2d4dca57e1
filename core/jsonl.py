"""Reading JSONL input files line by line, with every problem named by its line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def json_objects(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """For each non-blank line: (line number, the object, None), or (line number, None, what is wrong)
    when the line is not valid JSON or not a JSON object."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"line {number}: not valid JSON ({exc.msg})"
                continue
            if not isinstance(row, dict):
                yield number, None, f"line {number}: expected a JSON object"
                continue
            yield number, row, None
