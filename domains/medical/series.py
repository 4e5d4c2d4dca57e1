"""A series as a volume: the DICOM files of a zip (or folder), grouped by series and ordered in space.

A zip is checked before anything is inflated: member count (the slices budget), declared sizes (the
decoded-bytes budget) and compression ratio, so a zip bomb is refused unread; members are then inflated
one at a time. Slices are ordered by their position along the slice normal (Image Position and
Orientation), falling back to Instance Number.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected

from .dicom_image import read_counted

MAX_RATIO = 200  # declared size / compressed size of one member: beyond this it is a zip bomb


@dataclass
class Series:
    uid: str
    slices: list[Dataset]  # ordered in space
    description: str = ""

    def __len__(self) -> int:
        return len(self.slices)


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def zip_members(data: bytes, limits: Budgets) -> Iterator[bytes]:
    """The files of a zip, one at a time, after checking what it declares (count, total size, compression
    ratio): a refusal comes from this call, before anything is inflated."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except zipfile.BadZipFile:
        raise InputRejected("The zip file is damaged and cannot be opened.") from None
    limits.check("max_slices", len(infos), "The zip's file count")
    limits.check("max_decoded_bytes", sum(i.file_size for i in infos), "The zip, unpacked,")
    if any(i.file_size > MAX_RATIO * max(i.compress_size, 1) for i in infos):
        raise InputRejected("The zip is compressed far beyond what image files allow; it is refused unread.")
    if any(i.flag_bits & 0x1 for i in infos):
        raise InputRejected("The zip is encrypted; unpack it first.")
    return _inflated(archive, infos)


def _inflated(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> Iterator[bytes]:
    for info in infos:
        try:
            with archive.open(info) as member:  # no more than it declared: a lying header is cut short
                data = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError):
            raise InputRejected("The zip file is damaged and cannot be read.") from None
        if len(data) > info.file_size:
            raise InputRejected("The zip file is damaged: a file in it is larger than the zip says.")
        yield data


def folder_members(folder: Path) -> Iterable[tuple[Path, bytes]]:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        yield path, path.read_bytes()


def group_series(datasets: Iterable[Dataset]) -> list[Series]:
    """Datasets with pixels grouped by Series Instance UID, largest series first, slices in order."""
    groups: dict[str, list[Dataset]] = {}
    for ds in datasets:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    series = [Series(uid, order_slices(items), str(items[0].get("SeriesDescription", "")))
              for uid, items in groups.items()]
    return sorted(series, key=len, reverse=True)


def order_slices(slices: list[Dataset]) -> list[Dataset]:
    """Along the slice normal when every slice has position and orientation, else by Instance Number."""
    def position(ds: Dataset) -> float | None:
        try:
            orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
            normal = np.cross(orientation[:3], orientation[3:])
            return float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal))
        except (AttributeError, ValueError, TypeError):
            return None

    positions = [position(ds) for ds in slices]
    if all(p is not None for p in positions):
        return [ds for _, ds in sorted(zip(positions, slices, strict=True), key=lambda pair: pair[0])]
    return sorted(slices, key=lambda ds: int(ds.get("InstanceNumber") or 0))


def read_series(members: Iterable[bytes], limits: Budgets | None = None) -> tuple[list[Series], int]:
    """Every member that reads as a DICOM image, grouped; also how many members were skipped. Deflated
    members share one decoded-bytes budget, counted as they are read."""
    limits = limits or Budgets.from_env()
    datasets, skipped, used = [], 0, 0
    for data in members:
        try:
            ds, size = read_counted(data, limits=replace(limits, max_decoded_bytes=limits.max_decoded_bytes - used))
        except InputRejected as exc:
            if getattr(exc, "budget", None):  # over a budget: the series is, not just this file
                raise
            skipped += 1
            continue
        used += size
        if "PixelData" in ds:
            datasets.append(ds)
        else:
            skipped += 1
    return group_series(datasets), skipped
