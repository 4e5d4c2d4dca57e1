"""De-identify a folder of DICOM files for sharing: recursive, one file at a time, never half-written.

Output files are named by their new UIDs (``STUDY/SERIES/INSTANCE.dcm``), never by the input's names,
which often carry patient names. A file is written only once it has been read, its pixel data checked
complete and decodable, and de-identified; it goes to a temporary name first and is renamed into place.
Files that cannot be read are reported (by their position under the input folder, to the caller only)
and skipped; the run goes on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.pixels import iter_pixels

from loupe.core.errors import InputRejected

from ..dicom_image import decode_problem, read_dataset
from .deidentify import Deidentifier, DeidOptions
from .pixels import TextFinder, mask_burned_in_text


@dataclass
class FileResult:
    output: str  # relative to the output folder
    actions: dict
    private_removed: int
    burned_in_annotation: bool
    text_regions_masked: int = 0


@dataclass
class BatchSummary:
    written: list[FileResult] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (input path relative to the input, why)
    duplicates: list[str] = field(default_factory=list)  # inputs holding an instance already written in this run

    def as_dict(self) -> dict:
        return {"written": len(self.written), "unreadable": len(self.unreadable), "duplicates": len(self.duplicates),
                "burned_in_annotation": sum(r.burned_in_annotation for r in self.written),
                "files_with_text_masked": sum(r.text_regions_masked > 0 for r in self.written)}


def check_pixels(ds: Dataset) -> None:
    """Decode every frame once: a file whose pixels are cut short or undecodable is not passed on."""
    if "PixelData" not in ds:
        return
    try:
        for _ in iter_pixels(ds, as_rgb=False):  # decoding proves the data; colour conversion would not
            pass
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise InputRejected(decode_problem(ds, exc)) from None


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deidentify_folder(source: Path, target: Path, options: DeidOptions,
                      progress: Callable[[int, int], None] | None = None,
                      find_text: TextFinder | None = None) -> BatchSummary:
    """Every file under ``source`` into ``target``; with ``find_text``, text seen in the pixels is masked."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    deidentify = Deidentifier(options)
    summary = BatchSummary()
    target.mkdir(parents=True, exist_ok=True)
    names: set[Path] = set()
    for done, path in enumerate(files, start=1):
        _one(path, source, target, deidentify, summary, names, find_text)
        if progress is not None:
            progress(done, len(files))
    return summary


def _one(path: Path, source: Path, target: Path, deidentify: Deidentifier, summary: BatchSummary,
         names: set[Path], find_text: TextFinder | None) -> None:
    relative = str(path.relative_to(source))
    try:
        ds = read_dataset(path.read_bytes())
        check_pixels(ds)
        clean, report = deidentify(ds, in_place=True)
        masked = mask_burned_in_text(clean, find_text) if find_text is not None else 0
        data = encode(clean)
    except InputRejected as exc:
        summary.unreadable.append((relative, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        summary.unreadable.append((relative, f"it cannot be written as DICOM ({type(exc).__name__})"))
        return
    name = Path(str(clean.get("StudyInstanceUID", "study")), str(clean.get("SeriesInstanceUID", "series")),
                f"{clean.SOPInstanceUID}.dcm")
    if name in names:  # the same image twice (e.g. in another transfer syntax): one copy is enough
        summary.duplicates.append(relative)
        return
    names.add(name)
    _write_atomically(target / name, data)
    summary.written.append(FileResult(str(name), dict(report.actions), report.private_removed,
                                      report.burned_in_annotation, masked))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
