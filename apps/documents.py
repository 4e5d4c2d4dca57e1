"""The per-file work of the document batch commands (``ocr``, ``docs convert``), run as a job in a worker
process (core/jobs.py): each file is held to the job's processor-time and memory budgets, and one that
exceeds them is stopped and refused while the batch goes on. The job returns the file's text; the CLI
process writes it (apps/batch.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected, LoupeError
from loupe.core.jobs import report_progress

from .batch import error_name

if TYPE_CHECKING:
    from loupe.core.ocr.base import Page
    from loupe.core.ocr.pipeline import PageReader

# Imported once by the fork server, so every worker starts with them.
PRELOAD = (__name__, "loupe.core.ocr.document", "loupe.core.ocr.engines", "loupe.core.ocr.pipeline",
           "loupe.core.ocr.export")
OUTPUTS = ("text", "jsonl", "md", "json")  # ocr (plain, --json), docs convert (--to md, --to json)


@dataclass(frozen=True)
class DocumentJob:
    """How every file of one run is read and written out (it travels to the worker with each file)."""

    engine: str
    orientation: bool
    pages: tuple[int, ...] | None
    budgets: Budgets
    output: str  # one of OUTPUTS


@dataclass
class DocumentText:
    text: str
    pages: int


_readers: dict[tuple[str, bool], PageReader] = {}  # per worker: the OCR models load once, for all its jobs


def reader(engine: str, orientation: bool) -> PageReader:
    from loupe.core.ocr.base import OCRUnavailable
    from loupe.core.ocr.engines import make_engine
    from loupe.core.ocr.pipeline import PageReader

    found = _readers.get((engine, orientation))
    if found is None:
        try:
            found = _readers[engine, orientation] = PageReader(make_engine(engine), orientation=orientation)
        except OCRUnavailable as exc:  # a LoupeError comes back to the CLI as it is
            raise LoupeError(str(exc)) from None
    return found


def start_reader(engine: str, orientation: bool) -> None:
    """A worker job: the engine loaded (the CLI stops before its first file when it cannot be)."""
    reader(engine, orientation)


def document_text(job: DocumentJob, path: Path) -> DocumentText:
    """A worker job: the document at ``path`` read (page progress relayed) and rendered as ``job.output``."""
    from loupe.core.ocr.document import read_document

    engine = reader(job.engine, job.orientation)
    try:
        read = read_document(path.read_bytes(), engine, job.pages, progress=report_progress, budgets=job.budgets)
    except (LoupeError, MemoryError):  # MemoryError: the job runner reports the memory budget
        raise
    except Exception as exc:  # noqa: BLE001 - the reason must say "damaged", not crash the job
        raise InputRejected(f"It could not be read: the file looks damaged or is not in a format Loupe reads "
                            f"({error_name(exc)}).") from None
    return DocumentText(render(read, job.output, path.name), len(read))


def render(read: list[Page], output: str, name: str) -> str:
    from loupe.core.ocr.export import to_json, to_markdown

    if output == "md":
        return to_markdown(read)
    if output == "json":
        return json.dumps(to_json(read), ensure_ascii=False, indent=1)
    if output == "jsonl":
        return "\n".join(json.dumps({"file": name, **page_json(page)}, ensure_ascii=False) for page in read)
    return "\n".join(f"== {name} · page {page.number} ({page.source}, {len(page.lines)} lines) ==\n{page.text}"
                     for page in read)


def page_json(page: Page) -> dict:
    return {"page": page.number, "width": page.width, "height": page.height, "rotation": page.rotation,
            "source": page.source, "engine": page.engine,
            "lines": [{"text": ln.text, "box": [round(v, 1) for v in ln.box], "confidence": round(ln.confidence, 4)}
                      for ln in page.lines]}
