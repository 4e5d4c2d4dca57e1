"""The study beside a report, for ``check-reports --images DIR``: ``DIR/ID.dcm`` (or ``.png``/``.jpg``).

A DICOM file gives the checker more than pixels: Image Laterality for the laterality rule and Patient's
Sex for the anatomy rule (a de-identified file has lost the latter; laterality survives). Nothing read
here is stored: the facts only steer the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from loupe.core.errors import InputRejected

from ..dicom_image import frame_values, geometry, read_dataset
from ..windowing import display

SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


@dataclass
class Study:
    path: Path
    laterality: str | None = None  # "L" / "R" from the DICOM header
    sex: str | None = None  # "F" / "M" from the DICOM header

    def image(self) -> Image.Image | None:
        """The picture shown to the model: the file itself, or a DICOM's first frame in its own window."""
        if self.path.suffix.lower() != ".dcm":
            return Image.open(self.path).convert("RGB")
        ds = read_dataset(self.path.read_bytes())
        if geometry(ds) is None:
            return None
        return display(ds, frame_values(ds)).convert("RGB")


def find_study(folder: Path | None, report_id: str) -> Study | None:
    if folder is None:
        return None
    for suffix in SUFFIXES:
        path = folder / f"{report_id}{suffix}"
        if path.is_file():
            return _study(path)
    return None


def _study(path: Path) -> Study:
    if path.suffix.lower() != ".dcm":
        return Study(path)
    try:
        ds = read_dataset(path.read_bytes(), stop_before_pixels=True)
    except InputRejected:
        return Study(path)  # unreadable header: no facts; the image read later says what is wrong
    side = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").upper()
    sex = str(ds.get("PatientSex") or "").upper()
    return Study(path, side if side in ("L", "R") else None, sex if sex in ("F", "M") else None)
