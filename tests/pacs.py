"""Orthanc for the tests (apps/orthanc_server.py), found or the test skipped locally / failed in CI, and
generated series to load into it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from conftest import missing_service
from helpers import free_port
from pydicom.uid import generate_uid

from loupe.apps.orthanc_server import dicomize as orthanc_dicomize
from loupe.apps.orthanc_server import dicomizer_binary, dicomweb_plugin, orthanc_binary, running_orthanc

CT_SMALL = Path(__file__).parents[1] / "data" / "medical" / "dicom" / "CT_small.dcm"
PATIENT = ("DOE^JANE", "PID-4711")  # searched for in everything Loupe keeps or shows


@contextmanager
def orthanc(folder: Path, users: dict[str, str] | None = None) -> Iterator[str]:
    """A running Orthanc with DICOMweb, logging every request (asking ``users`` for passwords if given); yields
    its DICOMweb root."""
    if not (orthanc_binary() and dicomweb_plugin()):
        missing_service("Orthanc is not installed (.ci/with-services.sh installs orthanc and orthanc-dicomweb)")
    try:
        with running_orthanc(folder, free_port(), verbose=True, users=users) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


def dicomize(slide: Path, base: str, max_instance_mb: int = 1) -> None:
    """``slide`` made a DICOM whole-slide image named for PATIENT (orthanc-wsi's dicomizer), stored into the
    Orthanc whose DICOMweb root is ``base``: levels split every ``max_instance_mb``."""
    if dicomizer_binary() is None:
        missing_service("orthanc-wsi is not installed (.ci/with-services.sh installs it)")
    try:
        orthanc_dicomize(slide, base, {"PatientName": PATIENT[0], "PatientID": PATIENT[1]}, max_instance_mb)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def ct_series(slices: int, modality: str = "CT") -> list[pydicom.Dataset]:
    """A series of ``slices`` CT_small copies along z (stored out of order), named for PATIENT."""
    base = pydicom.dcmread(CT_SMALL)
    study, series = generate_uid(), generate_uid()
    out = []
    for n in range(slices):
        ds = copy.deepcopy(base)
        ds.PatientName, ds.PatientID = PATIENT
        ds.Modality = modality
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [0.0, 0.0, float((n * 7) % slices) * 2.5]  # a permutation of the positions
        ds.InstanceNumber = n + 1
        arr = ds.pixel_array.copy()
        arr[:8, :8] = n * 10  # each slice's pixels differ
        ds.PixelData = arr.tobytes()
        out.append(ds)
    return out


def store(base: str, datasets: list[pydicom.Dataset], auth: tuple[str, str] | None = None) -> None:
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session

    session = create_session()
    session.auth = auth
    DICOMwebClient(base.rstrip("/"), session=session).store_instances(datasets)
