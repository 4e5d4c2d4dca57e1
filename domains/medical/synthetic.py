"""Generated CT series of known values and geometry (Hounsfield units, pixel spacing, slice positions): for
benchmarks and tests that need a series of a given size without any patient's data."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_series(slices_hu: Iterable[np.ndarray], spacing_mm: float = 0.7, thickness_mm: float = 1.25,
              window: tuple[float, float] = (40, 400)) -> Iterator[Dataset]:
    """One CT dataset per 2-D array of HU (stored as HU + 1024 with Rescale Intercept -1024, 16-bit), in one
    study and series, slice n at z = n × ``thickness_mm``, square pixels of ``spacing_mm``, the file window
    ``window`` (centre, width)."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for n, hu in enumerate(slices_hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.Modality, ds.InstanceNumber = "CT", n + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, thickness_mm * n], [1.0, 0, 0, 0, 1.0, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing_mm, spacing_mm], thickness_mm
        ds.Rows, ds.Columns = hu.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = (np.clip(hu, -1024, 64511) + 1024).astype(np.uint16).tobytes()
        yield ds
