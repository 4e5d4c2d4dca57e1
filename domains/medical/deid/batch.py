"""De-identify a folder of DICOM files for sharing: recursive, one file at a time, never half-written,
resumable, and never stopped by one file.

Output files are named by their new UIDs (``STUDY/SERIES/INSTANCE.dcm``), never by the input's names,
which often carry patient names. A file is written only once it has been read, its pixel data checked
against the budgets, complete and decodable, and de-identified; it goes to a temporary name first and
is renamed into place. A rerun skips inputs whose output exists. DICOMDIRs are read as the index they
are: their files are de-identified into a new file-set with a new DICOMDIR (``dicomdir.py``). Every
input ends with one outcome: written, already done, a duplicate of another, or refused with its reason.

From the command line each file is read, checked, de-identified and encoded in a worker process
(``prepare_file``, core/jobs.py), so one over the job's time or memory budget is refused and the run goes
on; the writing and the record of the outputs this run claimed stay in the calling process.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydicom.dataset import Dataset

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected, LoupeError
from loupe.core.files import TEMP_MARK, write_atomically

from .deidentify import Deidentifier, DeidOptions
from .pixels import TextFinder, mask_burned_in_text
from .reading import check_pixels, check_stored_object, kind, read_object

if TYPE_CHECKING:
    from loupe.core.jobs import JobRunner

__all__ = ["BatchSummary", "FileResult", "check_pixels", "deidentify_folder", "encode", "write_atomically"]

T = TypeVar("T")
CLI_JOBS = "cli"  # the owner of the batch's worker jobs (core/jobs.py)
# Imported once by the fork server, so every worker starts with them.
PRELOAD = (__name__, "loupe.domains.medical.deid.pixels", "loupe.core.ocr.regions")

SAME_OBJECT = "the same object as another file here (same SOP Instance UID): written once"


@dataclass
class FileResult:
    input: str  # relative to the input folder (shown to the caller only: input names can hold PHI)
    status: str  # processed | already_done | duplicate | refused
    reason: str = ""
    output: str = ""  # relative to the output folder
    kind: str = ""  # the SOP class in words
    actions: dict = field(default_factory=dict)
    private_removed: int = 0
    burned_in_annotation: bool = False
    text_regions_masked: int = 0


@dataclass
class BatchSummary:
    files: list[FileResult] = field(default_factory=list)

    def of(self, status: str) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def written(self) -> list[FileResult]:
        return self.of("processed")

    def as_dict(self) -> dict:
        return {"written": len(self.written), "already_done": len(self.of("already_done")),
                "duplicates": len(self.of("duplicate")), "refused": len(self.of("refused")),
                "burned_in_annotation": sum(r.burned_in_annotation for r in self.written),
                "files_with_text_masked": sum(r.text_regions_masked > 0 for r in self.written)}


@dataclass(frozen=True)
class FileJob:
    """What every file of one run is de-identified with; it travels to the worker with each file."""

    source: Path
    target: Path
    options: DeidOptions  # holds the installation's secret: it goes to our own worker processes only
    budgets: Budgets
    find_text: TextFinder | None = None  # a top-level function (pickled by name)
    temp: Path | None = None  # where libraries stage temporary copies (removed with the run)


@dataclass
class Prepared:
    """What a worker made of one file."""

    kind: str = ""  # the SOP class in words
    name: str = ""  # STUDY/SERIES/INSTANCE.dcm; "" for a file indexed in a DICOMDIR
    result: FileResult | None = None  # None: not de-identified (refused, or its output exists)
    data: bytes = b""  # the de-identified file, encoded
    refused: str = ""  # why not


_deidentifiers: dict[DeidOptions, Deidentifier] = {}  # per worker process


def _deidentifier(options: DeidOptions) -> Deidentifier:
    if options not in _deidentifiers:
        _deidentifiers[options] = Deidentifier(options)
    return _deidentifiers[options]


def output_name(deidentify: Deidentifier, ds: Dataset) -> str:
    """STUDY/SERIES/INSTANCE.dcm by the UIDs de-identification gives (known before it is done)."""
    new = deidentify.new_uid
    study, series = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
    return str(Path(new(str(study)) if study else "study", new(str(series)) if series else "series",
                    f"{new(str(ds.SOPInstanceUID))}.dcm"))


def read_file(path: Path) -> Dataset:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputRejected(f"The file cannot be read ({exc.strerror or type(exc).__name__}).") from None
    ds = read_object(data)
    check_stored_object(ds)
    return ds


@contextlib.contextmanager
def _refusing(out: Prepared, doing: str) -> Iterator[None]:
    """Whatever stops the work recorded in ``out`` as the reason (MemoryError is left to the job runner)."""
    try:
        yield
    except MemoryError:
        raise
    except InputRejected as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        reason = f"It could not be de-identified and {doing} ({type(exc).__name__})."
    else:
        return
    out.refused, out.result, out.data = reason, None, b""


@contextlib.contextmanager
def _temporary_files(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def prepare_file(job: FileJob, path: Path, named: bool = True) -> Prepared:
    """A worker job: ``path`` read, its pixels checked against the budgets, de-identified (text masked with a
    finder) and encoded. ``named``: a file on its own, named by its new UIDs and left alone (no result) when
    that output exists; otherwise a file a DICOMDIR lists."""
    out = Prepared()
    deidentify = _deidentifier(job.options)
    with _temporary_files(job.temp), _refusing(out, "written as DICOM" if named else "indexed in a DICOMDIR"):
        ds = read_file(path)
        out.kind = kind(ds)
        if named:
            out.name = output_name(deidentify, ds)
            if (job.target / out.name).exists():
                return out
        check_pixels(ds, job.budgets)
        clean, report = deidentify(ds, in_place=True)
        masked = mask_burned_in_text(clean, job.find_text) if job.find_text is not None else 0
        out.result = FileResult(str(path.relative_to(job.source)), "processed", output=out.name, kind=out.kind,
                                actions=dict(report.actions), private_removed=report.private_removed,
                                burned_in_annotation=report.burned_in_annotation, text_regions_masked=masked)
        out.data = encode(clean)
    return out


def check_file(job: FileJob, path: Path) -> str:
    """A worker job: why this copy of an object already written is refused ("" when it reads and decodes)."""
    out = Prepared()
    with _temporary_files(job.temp), _refusing(out, "written as DICOM"):
        check_pixels(read_file(path), job.budgets)
    return out.refused


class FolderRun:
    """One pass over an input folder: the state every file's handling shares. Each file's work runs as a job
    in a worker process (time and memory budgets per file) where ``jobs`` is given; the writing and the
    record of what this run claimed stay here."""

    def __init__(self, job: FileJob, jobs: JobRunner | None = None) -> None:
        self.job, self.jobs = job, jobs
        self.source, self.target = job.source, job.target
        self.deidentify = Deidentifier(job.options)
        self.summary = BatchSummary()
        self.claimed: set[str] = set()  # outputs written or found in this run (a second input for one is a duplicate)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.source))

    def refuse(self, path: Path, reason: str, what: str = "") -> FileResult:
        result = FileResult(self.relative(path), "refused", reason, kind=what)
        self.summary.files.append(result)
        return result

    def prepare(self, path: Path, named: bool = True) -> Prepared:
        try:
            return self._call("De-identifying this file", prepare_file, path, named)
        except LoupeError as exc:  # over the job's time or memory budget
            return Prepared(refused=str(exc))

    def check(self, path: Path) -> str:
        try:
            return self._call("Checking this file", check_file, path)
        except LoupeError as exc:
            return str(exc)

    def _call(self, label: str, fn: Callable[..., T], *args: object) -> T:
        if self.jobs is None:
            return fn(self.job, *args)
        return self.jobs.run(CLI_JOBS, label, fn, (self.job, *args))

    def one(self, path: Path) -> None:
        """A file outside any DICOMDIR: written as STUDY/SERIES/INSTANCE.dcm, or its outcome recorded."""
        got = self.prepare(path)
        name, what = got.name, got.kind
        if name in self.claimed:  # the same image twice (e.g. in another transfer syntax): one copy is enough
            # unless this copy is damaged: that is what to report (checked above where it was de-identified)
            problem = got.refused or ("" if got.result is not None else self.check(path))
            if problem:
                self.refuse(path, problem, what)
            else:
                self.summary.files.append(FileResult(self.relative(path), "duplicate", SAME_OBJECT, name, what))
            return
        if name:
            self.claimed.add(name)
        if got.refused:
            self.refuse(path, got.refused, what)
        elif got.result is None:
            self.summary.files.append(FileResult(self.relative(path), "already_done", output=name, kind=what))
        else:
            self.write(path, got.result, got.data)

    def write(self, path: Path, result: FileResult, data: bytes) -> None:
        try:
            write_atomically(self.target / result.output, data)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            self.refuse(path, f"It could not be de-identified and written as DICOM ({type(exc).__name__}).",
                        result.kind)
            return
        self.summary.files.append(result)


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deidentify_folder(source: Path, target: Path, options: DeidOptions,
                      progress: Callable[[int, int], None] | None = None,
                      find_text: TextFinder | None = None, budgets: Budgets | None = None,
                      jobs: JobRunner | None = None, temp: Path | None = None) -> BatchSummary:
    """Every file under ``source`` into ``target``; with ``find_text``, text seen in the pixels is masked.
    With ``jobs``, each file is de-identified in a worker process (``find_text`` must then be a top-level
    function) and libraries there stage temporary copies in ``temp``."""
    from .dicomdir import file_sets, write_file_set

    files = sorted(p for p in source.rglob("*") if p.is_file() and TEMP_MARK not in p.name)
    run = FolderRun(FileJob(source, target, options, budgets or Budgets(), find_text, temp), jobs)
    target.mkdir(parents=True, exist_ok=True)
    handled: set[Path] = set()
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, len(files))

    for found in file_sets(files):
        handled.add(found.path)
        step(write_file_set(run, found, handled))
    for path in files:
        if path not in handled:
            run.one(path)
            step(1)
    return run.summary


