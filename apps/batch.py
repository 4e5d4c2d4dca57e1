"""What every batch command promises: each input is processed or listed as refused with its reason,
a summary at the end (and in ``--summary FILE`` as JSON), exit code 1 when anything was refused,
outputs that appear whole or not at all, and a rerun that skips what is already done.

An output is written to a temporary name beside its final one (``.NAME.<pid>.loupe-partial``) and
renamed into place, so a kill at any moment leaves either the whole output or a temporary file; the
next run removes those temporary files first (they may hold identifying content) and skips inputs whose
output exists.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from loupe.core.files import TEMP_MARK, write_atomically

STATUSES = ("processed", "already_done", "duplicate", "refused")


@dataclass
class Outcome:
    input: str  # as the user named it (relative to the folder given), never a server path of ours
    status: str  # one of STATUSES
    reason: str = ""  # why it was refused or skipped
    output: str = ""  # relative to the output folder, where there is one
    detail: dict = field(default_factory=dict)


@dataclass
class BatchLog:
    """The per-input record of one run."""

    unit: str = "file"
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, input_name: str, status: str, reason: str = "", output: str = "", **detail: object) -> Outcome:
        if status not in STATUSES:
            raise ValueError(f"unknown batch status {status!r}")
        outcome = Outcome(input_name, status, reason, output, dict(detail))
        self.outcomes.append(outcome)
        return outcome

    def counts(self) -> dict[str, int]:
        seen = Counter(o.status for o in self.outcomes)
        return {"total": len(self.outcomes), **{status: seen[status] for status in STATUSES}}

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "refused"]

    @property
    def exit_code(self) -> int:
        return 1 if self.refused else 0

    def as_json(self, extra: dict | None = None) -> dict:
        return {"unit": self.unit, "counts": self.counts(), **(extra or {}),
                "files": [asdict(o) for o in self.outcomes]}

    def finish(self, summary_file: Path | None, extra: dict | None = None, counts_to_stderr: bool = False) -> None:
        """Refused inputs to stderr, the counts (and ``extra``) as one JSON line on stdout (stderr where stdout
        carries the results), the whole record in ``summary_file``; exits 1 when anything was refused."""
        for outcome in self.refused:
            click.echo(f"refused {outcome.input}: {outcome.reason}", err=True)
        counts = self.counts()
        if counts["already_done"]:
            click.echo(f"{counts['already_done']} {self.unit}(s) already done by an earlier run: skipped.", err=True)
        if summary_file is not None:
            write_atomically(summary_file, json.dumps(self.as_json(extra), ensure_ascii=False, indent=1) + "\n")
        click.echo(json.dumps({**counts, **(extra or {})}, ensure_ascii=False), err=counts_to_stderr)
        if self.exit_code:
            raise SystemExit(self.exit_code)


def error_name(exc: BaseException) -> str:
    """The exception's type, qualified where a bare name says nothing (``struct.error``); never its message,
    which can quote file content."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def remove_stale_temps(folder: Path) -> int:
    """Delete what an interrupted run left under ``folder`` (temporary files and folders); returns how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in sorted(folder.rglob(f"*{TEMP_MARK}"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def remove_stale_temps_of(path: Path) -> None:
    """Delete what an interrupted run left beside one output file."""
    for stale in path.parent.glob(f".{path.name}.*{TEMP_MARK}"):
        stale.unlink(missing_ok=True)


def expand_inputs(paths: tuple[Path, ...], suffixes: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Files named, and files with one of ``suffixes`` under folders named (recursively, sorted), each with
    the name it is shown by: its own name, or its place under the folder given."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found.extend((p, str(p.relative_to(path))) for p in sorted(path.rglob("*"))
                         if p.is_file() and p.suffix.lower() in suffixes and TEMP_MARK not in p.name)
        else:
            found.append((path, path.name))
    return found


@contextlib.contextmanager
def temporary_files_in(folder: Path) -> Iterator[Path]:
    """Route this process's temporary files (``tempfile``: libraries stage copies there) into a folder under
    ``folder`` that the next run removes if this one is killed, and that is removed when this one ends."""
    import tempfile

    private = folder / f".tmp{TEMP_MARK}"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    before = tempfile.tempdir
    tempfile.tempdir = str(private)
    try:
        yield private
    finally:
        tempfile.tempdir = before
        shutil.rmtree(private, ignore_errors=True)


def run_each(inputs: list[tuple[Path, str]], log: BatchLog, work: Callable[[Path], str],
             target: Callable[[str], Path | None], progress: Callable[[int, int], None] | None = None,
             out_root: Path | None = None) -> None:
    """``work`` on every input, never stopped by one: its text goes to ``target(name)`` (written whole, skipped
    when it exists from an earlier run) or, where that is None, to stdout; a failure is recorded as refused."""
    from loupe.core.errors import LoupeError

    taken: dict[Path, str] = {}
    for done, (path, shown) in enumerate(inputs, start=1):
        out = target(shown)
        output = str(out.relative_to(out_root)) if out is not None and out_root is not None else str(out or "")
        if out is not None and out in taken:
            log.add(shown, "refused", f"its output {out.name} would be the same as that of {taken[out]}: "
                                      "rename one of them or convert them separately")
        elif out is not None and out.exists():
            taken[out] = shown
            log.add(shown, "already_done", output=output)
        else:
            if out is not None:
                taken[out] = shown
            try:
                text = work(path)
            except LoupeError as exc:
                log.add(shown, "refused", str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                log.add(shown, "refused", f"It could not be read: the file looks damaged or is not in a format "
                                          f"Loupe reads ({error_name(exc)}).")
            else:
                if out is None:
                    if text:
                        click.echo(text)
                else:
                    write_atomically(out, text)
                log.add(shown, "processed", output=output)
        if progress is not None:
            progress(done, len(inputs))
