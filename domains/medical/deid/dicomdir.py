"""DICOMDIRs read as the index they are (pydicom's FileSet): the files a DICOMDIR lists are de-identified
into a new file-set, with a new DICOMDIR that pydicom builds from the de-identified files, so no name,
ID or date of the original index passes through.

The new file-set goes to ``OUT/<new File-set UID>/`` (the UID replaced like every other): it is written
in a temporary folder beside it and renamed into place whole, so a rerun finds it complete or not at
all. DICOMDIRs with the same File-set UID (copies of one index) make one file-set. A DICOMDIR whose
records pydicom cannot read is refused with that reason; its files are then de-identified one by one.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.fileset import FileSet

from .batch import SAME_OBJECT, TEMP_MARK, FileResult, FolderRun
from .reading import DICOMDIR_CLASS


@dataclass
class FoundSet:
    path: Path  # the DICOMDIR file
    file_set: FileSet | None
    problem: str = ""  # why its records could not be read


def is_dicomdir(path: Path) -> bool:
    try:
        return str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS
    except Exception:  # noqa: BLE001 - anything unreadable is not a DICOMDIR; it is reported when processed
        return False


def file_sets(files: list[Path]) -> list[FoundSet]:
    found = []
    for path in files:
        if not is_dicomdir(path):
            continue
        try:
            found.append(FoundSet(path, FileSet(pydicom.dcmread(path))))
        except Exception as exc:  # noqa: BLE001 - pydicom raises ValueError, KeyError, ... on broken records
            why = f"This DICOMDIR's directory records cannot be read ({type(exc).__name__})"
            found.append(FoundSet(path, None, f"{why}: the files it lists are de-identified one by one instead."))
    return found


def write_file_set(run: FolderRun, found: FoundSet, handled: set[Path]) -> int:
    """De-identify ``found`` and the files it lists into a new file-set; returns how many inputs that settled
    (the DICOMDIR and the listed files under the input folder not settled before)."""
    if found.file_set is None:
        run.refuse(found.path, found.problem, "DICOMDIR")
        return 1
    name = run.deidentify.new_uid(str(found.file_set.UID))
    listed = _listed(run, found.file_set, handled)
    if name in run.claimed:
        run.summary.files.append(FileResult(run.relative(found.path), "duplicate", "the same file-set (File-set UID) "
                                            "as another DICOMDIR here", f"{name}/DICOMDIR", "DICOMDIR"))
        for path in listed:  # files only this copy of the index lists: on their own
            handled.discard(path)
        return 1
    run.claimed.add(name)
    final = run.target / name
    if final.exists():
        for path in listed:
            run.summary.files.append(FileResult(run.relative(path), "already_done", output=name))
        run.summary.files.append(FileResult(run.relative(found.path), "already_done", output=f"{name}/DICOMDIR",
                                            kind="DICOMDIR"))
        return 1 + len(listed)
    partial = run.target / f".{name}.{os.getpid()}{TEMP_MARK}"
    shutil.rmtree(partial, ignore_errors=True)
    new = FileSet()
    new.UID = name
    added: list[tuple[FileResult, str]] = []
    for path in listed:
        result = _add(run, new, path)
        if result is None:
            continue
        if any(uid == result[1] for _r, uid in added):  # the same object listed twice
            result[0].status, result[0].reason = "duplicate", SAME_OBJECT
            run.summary.files.append(result[0])
            continue
        added.append(result)
    try:
        new.write(partial)
        os.replace(partial, final)
    except Exception as exc:  # noqa: BLE001 - the index could not be built: every listed file is refused
        shutil.rmtree(partial, ignore_errors=True)
        reason = f"The de-identified file-set could not be written ({type(exc).__name__})."
        for result, _instance in added:
            run.refuse(Path(run.source, result.input), reason, result.kind)
        run.refuse(found.path, reason, "DICOMDIR")
        return 1 + len(listed)
    where = {str(instance.SOPInstanceUID): "/".join(instance.FileID) for instance in new}
    for result, uid in added:
        result.output = f"{name}/{where.get(uid, '')}"
        run.summary.files.append(result)
    run.summary.files.append(FileResult(run.relative(found.path), "processed", output=f"{name}/DICOMDIR",
                                        kind="DICOMDIR", actions={"instances": len(added)}))
    return 1 + len(listed)


# Type 1 keys of the DICOMDIR's records (PS3.3 F.5) that de-identification empties: the profile allows a
# dummy instead of an empty value (its Z), and the index needs one. Nothing of the original is used.
INDEX_DUMMIES = {"PatientID": "ANONYMIZED", "StudyDate": "19000101", "StudyTime": "000000", "StudyID": "ANONYMIZED",
                 "ContentDate": "19000101", "ContentTime": "000000", "PresentationCreationDate": "19000101",
                 "PresentationCreationTime": "000000", "StructureSetDate": "19000101",
                 "StructureSetTime": "000000", "RTPlanDate": "19000101", "RTPlanTime": "000000"}


def _index_keys(ds: pydicom.Dataset) -> None:
    for keyword, dummy in INDEX_DUMMIES.items():
        if keyword in ds and ds[keyword].value in (None, ""):
            setattr(ds, keyword, dummy)
    if "PatientID" not in ds:
        ds.PatientID = INDEX_DUMMIES["PatientID"]
    if "StudyDate" not in ds and "StudyInstanceUID" in ds:
        ds.StudyDate, ds.StudyTime = INDEX_DUMMIES["StudyDate"], INDEX_DUMMIES["StudyTime"]
    if not ds.get("StudyID") and "StudyInstanceUID" in ds:
        ds.StudyID = INDEX_DUMMIES["StudyID"]


def _listed(run: FolderRun, file_set: FileSet, handled: set[Path]) -> list[Path]:
    """The files ``file_set`` lists that lie under the input folder and are not settled yet (now claimed)."""
    source = run.source.resolve()
    listed = []
    for instance in file_set:
        path = Path(instance.path)
        resolved = path.resolve()
        if not resolved.is_relative_to(source) or not resolved.is_file():
            continue  # listed but missing: nothing to de-identify
        path = run.source / resolved.relative_to(source)
        if path not in handled:
            handled.add(path)
            listed.append(path)
    return listed


def _add(run: FolderRun, new: FileSet, path: Path) -> tuple[FileResult, str] | None:
    """``path`` de-identified (in a worker where the run has one) and staged in ``new``."""
    got = run.prepare(path, named=False)
    if got.result is None:
        run.refuse(path, got.refused, got.kind)
        return None
    try:
        ds = pydicom.dcmread(io.BytesIO(got.data))  # the worker's output: read back to be indexed here
        _index_keys(ds)
        uid = str(new.add(ds).SOPInstanceUID)  # staged (de-identified) in pydicom's temporary folder
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        run.refuse(path, f"It could not be de-identified and indexed in a DICOMDIR ({type(exc).__name__}).", got.kind)
        return None
    return got.result, uid
