"""De-identify a folder of DICOM files for sharing: recursive, one file at a time, never half-written,
resumable, and never stopped by one file.

Output files are named by their new UIDs (``STUDY/SERIES/INSTANCE.dcm``), never by the input's names,
which often carry patient names. A file is written only once it has been read, its pixel data checked
against the budgets, complete and decodable, and de-identified; it goes to a temporary name first and
is renamed into place. A rerun skips inputs whose output exists. DICOMDIRs are read as the index they
are: their files are de-identified into a new file-set with a new DICOMDIR (``dicomdir.py``). Every
input ends with one outcome: written, already done, a duplicate of another, or refused with its reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected
from loupe.core.files import TEMP_MARK, write_atomically

from .deidentify import Deidentifier, DeidOptions
from .pixels import TextFinder, mask_burned_in_text
from .reading import check_pixels, check_stored_object, kind, read_object

__all__ = ["BatchSummary", "FileResult", "check_pixels", "deidentify_folder", "encode", "write_atomically"]

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


@dataclass
class Cleaned:
    dataset: Dataset
    result: FileResult


class FolderRun:
    """One pass over an input folder: the state every file's handling shares."""

    def __init__(self, source: Path, target: Path, options: DeidOptions, budgets: Budgets,
                 find_text: TextFinder | None) -> None:
        self.source, self.target, self.budgets, self.find_text = source, target, budgets, find_text
        self.deidentify = Deidentifier(options)
        self.summary = BatchSummary()
        self.claimed: set[str] = set()  # outputs written or found in this run (a second input for one is a duplicate)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.source))

    def refuse(self, path: Path, reason: str, what: str = "") -> FileResult:
        result = FileResult(self.relative(path), "refused", reason, kind=what)
        self.summary.files.append(result)
        return result

    def output_name(self, ds: Dataset) -> str:
        """STUDY/SERIES/INSTANCE.dcm by the UIDs de-identification gives (known before it is done)."""
        new = self.deidentify.new_uid
        study, series = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
        return str(Path(new(str(study)) if study else "study", new(str(series)) if series else "series",
                        f"{new(str(ds.SOPInstanceUID))}.dcm"))

    def read(self, path: Path) -> Dataset:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputRejected(f"The file cannot be read ({exc.strerror or type(exc).__name__}).") from None
        ds = read_object(data)
        check_stored_object(ds)
        return ds

    def clean(self, path: Path, ds: Dataset, name: str) -> Cleaned:
        """``ds`` checked and de-identified in place (pixels masked with a text finder)."""
        what = kind(ds)
        check_pixels(ds, self.budgets)
        clean, report = self.deidentify(ds, in_place=True)
        masked = mask_burned_in_text(clean, self.find_text) if self.find_text is not None else 0
        result = FileResult(self.relative(path), "processed", output=name, kind=what, actions=dict(report.actions),
                            private_removed=report.private_removed, burned_in_annotation=report.burned_in_annotation,
                            text_regions_masked=masked)
        return Cleaned(clean, result)

    def one(self, path: Path) -> None:
        """A file outside any DICOMDIR: written as STUDY/SERIES/INSTANCE.dcm, or its outcome recorded."""
        what = ""
        try:
            ds = self.read(path)
            what = kind(ds)
            name = self.output_name(ds)
            if name in self.claimed:  # the same image twice (e.g. in another transfer syntax): one copy is enough
                check_pixels(ds, self.budgets)  # unless this copy is damaged: that is what to report
                self.summary.files.append(FileResult(self.relative(path), "duplicate", SAME_OBJECT, name, what))
                return
            self.claimed.add(name)
            if (self.target / name).exists():
                self.summary.files.append(FileResult(self.relative(path), "already_done", output=name, kind=what))
                return
            cleaned = self.clean(path, ds, name)
            write_atomically(self.target / name, encode(cleaned.dataset))
        except InputRejected as exc:
            self.refuse(path, str(exc), what)
            return
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            self.refuse(path, f"It could not be de-identified and written as DICOM ({type(exc).__name__}).", what)
            return
        self.summary.files.append(cleaned.result)


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deidentify_folder(source: Path, target: Path, options: DeidOptions,
                      progress: Callable[[int, int], None] | None = None,
                      find_text: TextFinder | None = None, budgets: Budgets | None = None) -> BatchSummary:
    """Every file under ``source`` into ``target``; with ``find_text``, text seen in the pixels is masked."""
    from .dicomdir import file_sets, write_file_set

    files = sorted(p for p in source.rglob("*") if p.is_file() and TEMP_MARK not in p.name)
    run = FolderRun(source, target, options, budgets or Budgets(), find_text)
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


