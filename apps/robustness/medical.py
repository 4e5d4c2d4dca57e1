"""Specimens for medical inputs (see loupe.apps.robustness): DICOM files, zipped series and slides.

Hostile ones claim far more than they hold (a deflate bomb, a slide header, a sparse vendor slide, a
series of large compressed slices); everyday ones are what a clinic sends daily (a 120-frame
ultrasound cine, a 2,000² radiograph, a small CT series), which must open with the default budgets.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import Specimen

NAME = "Robustness^Specimen"  # a patient name the de-identification must remove


def _dataset(sop_class: str, modality: str, syntax: str = "1.2.840.10008.1.2.1"):  # noqa: ANN202 - a FileDataset
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = NAME, "SPEC-0001", modality
    return ds


def _grey(ds, rows: int, columns: int, frames: int = 1, bits: int = 16) -> None:  # noqa: ANN001
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames


def _save(ds, path: Path) -> Path:  # noqa: ANN001
    ds.save_as(path, enforce_file_format=True)
    return path


def _bytes(ds) -> bytes:  # noqa: ANN001
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _part10_header(ds, syntax: str) -> bytes:  # noqa: ANN001
    """Preamble, 'DICM' and the File Meta group of ``ds`` with ``syntax``: what precedes a dataset."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    ds.file_meta.TransferSyntaxUID = syntax
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, ds.file_meta)
    return out.getvalue()


def _deflated_dicom(path: Path, chunk: bytes, count: int) -> Path:
    """A CT header and a private OB element of ``count`` copies of ``chunk``, in Deflated Explicit VR.

    Made without compressing every copy: after a full flush the compressor starts afresh, so each copy
    compresses to the same bytes."""
    import struct

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = _dataset("1.2.840.10008.5.1.4.1.1.2", "CT")
    head = _part10_header(ds, "1.2.840.10008.1.2.1.99")
    plain = DicomBytesIO()
    plain.is_little_endian, plain.is_implicit_VR = True, False
    write_dataset(plain, ds)
    element = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, count * len(chunk))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    prefix = deflate.compress(plain.getvalue() + element) + deflate.flush(zlib.Z_FULL_FLUSH)
    one = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(head + prefix + one * count + b"\x03\x00")  # an empty final block ends the stream
    return path


def deflate_bomb(folder: Path) -> Path:
    """1.1 MB that inflates to 1.1 GiB of zeros: about 1,000 times its size."""
    return _deflated_dicom(folder / "dicom_deflate_bomb.dcm", bytes(2**20), 1100)


def deflate_over_budget(folder: Path) -> Path:
    """About 14 MB inflating to 1.1 GiB (80 : 1, as a flat image might): within the ratio, over the budget."""
    chunk = np.zeros((256, 4096), dtype=np.uint8)
    chunk[:, :41] = np.random.default_rng(7).integers(0, 256, (256, 41), dtype=np.uint8)
    return _deflated_dicom(folder / "dicom_deflate_over_budget.dcm", chunk.tobytes(), 1100)


def _cine_frames(count: int, rows: int = 480, columns: int = 640) -> list[bytes]:
    """JPEG baseline frames (4:2:2) of a fan-shaped, speckled, moving ultrasound-like picture."""
    from PIL import Image

    rng = np.random.default_rng(42)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    angle = np.arctan2(x - columns / 2, y + 40)
    radius = np.hypot(x - columns / 2, y + 40)
    fan = (np.abs(angle) < 0.7) & (radius < rows + 20)
    frames = []
    for n in range(count):
        tissue = 90 + 60 * np.sin(radius / 23 + n / 6) * np.cos(angle * 5 - n / 9)
        speckle = rng.normal(0, 9, (rows // 4, columns // 4)).repeat(4, 0).repeat(4, 1)
        grey = np.clip((tissue + speckle) * fan, 0, 255).astype(np.uint8)
        rgb = np.stack([grey, grey, np.clip(grey * 1.05, 0, 255).astype(np.uint8)], axis=-1)
        out = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(out, format="JPEG", quality=92, subsampling=1)  # 4:2:2
        frames.append(out.getvalue())
    return frames


def ultrasound_cine(folder: Path) -> Path:
    """A 120-frame 640 × 480 colour ultrasound cine, JPEG baseline (105 MiB decoded, ~6 MB stored)."""
    from pydicom.encaps import encapsulate

    ds = _dataset("1.2.840.10008.5.1.4.1.1.3.1", "US", "1.2.840.10008.1.2.4.50")
    frames = _cine_frames(120)
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = 480, 640, len(frames), 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime, ds.CineRate = "33.3", 30
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return _save(ds, folder / "dicom_us_cine_120.dcm")


def radiograph(folder: Path) -> Path:
    """A 2,000 × 2,000 16-bit CR chest radiograph-sized image, uncompressed (8 MB)."""
    ds = _dataset("1.2.840.10008.5.1.4.1.1.1", "CR")
    _grey(ds, 2000, 2000, bits=16)
    ds.BitsStored, ds.HighBit = 12, 11
    y, x = np.mgrid[0:2000, 0:2000]
    values = (2048 + 1500 * np.sin(x / 160) * np.cos(y / 210)).astype(np.uint16)
    ds.WindowCenter, ds.WindowWidth, ds.BodyPartExamined = 2048, 4096, "CHEST"
    ds.PixelData = values.tobytes()
    return _save(ds, folder / "dicom_cr_2000.dcm")


def _ct_slice(rows: int, columns: int, position: int, syntax: str, series: str, study: str) -> bytes:
    ds = _dataset("1.2.840.10008.5.1.4.1.1.2", "CT")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    _grey(ds, rows, columns, bits=16)
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, position], [1, 0, 0, 0, 1, 0]
    ds.InstanceNumber = position + 1
    if syntax == "1.2.840.10008.1.2.1":  # a disc of soft tissue with noise, as a scanner's
        y, x = np.mgrid[0:rows, 0:columns]
        body = ((x - columns / 2) ** 2 + (y - rows / 2) ** 2) < (min(rows, columns) * 0.4) ** 2
        noise = np.random.default_rng(position).integers(-20, 20, (rows, columns), dtype=np.int16)
        ds.PixelData = (np.where(body, 1024 + 40 + noise, 0)).astype(np.int16).tobytes()
    else:  # air only: compressed to a few hundred bytes
        ds.PixelData = bytes(rows * columns * 2)
        ds.compress(syntax)
    return _bytes(ds)


def _series_zip(path: Path, count: int, side: int, syntax: str) -> Path:
    from pydicom.uid import generate_uid

    series, study = generate_uid(), generate_uid()
    distinct = count <= 40  # a larger hostile series repeats one slice: it is refused before any is read
    one = _ct_slice(side, side, 0, syntax, series, study)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            data = _ct_slice(side, side, n, syntax, series, study) if distinct and n else one
            archive.writestr(f"slice{n:04d}.dcm", data)
    return path


def small_ct_zip(folder: Path) -> Path:
    """A 12-slice 256 × 256 CT series, zipped."""
    return _series_zip(folder / "dicom_ct_zip_small.zip", 12, 256, "1.2.840.10008.1.2.1")


def zip_of_large_slices(folder: Path) -> Path:
    """20 slices of 4,096², JPEG 2000 compressed to a few hundred bytes each: 335 megapixels of work."""
    return _series_zip(folder / "dicom_zip_20x4096.zip", 20, 4096, "1.2.840.10008.1.2.4.90")


def zip_over_work(folder: Path) -> Path:
    """130 slices of 4,096² (2.2 gigapixels), compressed to ~150 KB: over the work budget."""
    return _series_zip(folder / "dicom_zip_130x4096.zip", 130, 4096, "1.2.840.10008.1.2.4.90")


def zip_too_many_slices(folder: Path) -> Path:
    """2,001 tiny slices: more files than a series may hold."""
    return _series_zip(folder / "dicom_zip_2001_slices.zip", 2001, 8, "1.2.840.10008.1.2.1")


def frames_claim(folder: Path) -> Path:
    """A header claiming 10,000 frames of 512², with pixel data for one."""
    ds = _dataset("1.2.840.10008.5.1.4.1.1.3.1", "US")
    _grey(ds, 512, 512, frames=10_000, bits=8)
    ds.PixelData = bytes(512 * 512)
    return _save(ds, folder / "dicom_frames_claim.dcm")


def frame_too_large(folder: Path) -> Path:
    """One frame claiming 20,000 × 20,000 pixels, JPEG 2000 with a few bytes of data."""
    from pydicom.encaps import encapsulate

    ds = _dataset("1.2.840.10008.5.1.4.1.1.7", "OT", "1.2.840.10008.1.2.4.90")
    _grey(ds, 20_000, 20_000, bits=8)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    ds["PixelData"].VR = "OB"
    return _save(ds, folder / "dicom_frame_20000.dcm")


def _slide(columns: int, rows: int, tile: int, fragments: int):  # noqa: ANN202 - a FileDataset
    from pydicom.encaps import encapsulate

    ds = _dataset("1.2.840.10008.5.1.4.1.1.77.1.6", "SM", "1.2.840.10008.1.2.4.50")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = columns, rows
    ds.Rows = ds.Columns = tile
    ds.NumberOfFrames = math.ceil(columns / tile) * math.ceil(rows / tile)
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"] * fragments)  # empty JPEGs
    ds["PixelData"].VR = "OB"
    return ds


def slide_header(folder: Path) -> Path:
    """An 866-byte-class VL Whole Slide Microscopy header claiming 20,000² in 6,241 tiles, holding one."""
    return _save(_slide(20_000, 20_000, 256, 1), folder / "dicom_wsi_header_20k.dcm")


def slide_single_level(folder: Path) -> Path:
    """A one-level 100,000² slide whose 38,416 tiles are all present (empty): its overview would decode
    10 gigapixels."""
    return _save(_slide(100_000, 100_000, 512, 196 * 196), folder / "dicom_wsi_single_level_100k.dcm")


def _sparse_tiff(path: Path, width: int, height: int, tile: int, description: str) -> Path:
    """A classic little-endian tiled RGB TIFF whose tiles are all missing (offsets and byte counts 0)."""
    import struct

    tiles = math.ceil(width / tile) * math.ceil(height / tile)
    text = description.encode("ascii") + b"\0"
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, None), (259, 3, 1, 7), (262, 3, 1, 2),
               (270, 2, len(text), None), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
               (324, 4, tiles, None), (325, 4, tiles, None)]
    ifd_size = 2 + 12 * len(entries) + 4
    extra = {258: struct.pack("<3H", 8, 8, 8), 270: text, 324: bytes(4 * tiles), 325: bytes(4 * tiles)}
    offset, data, table = 8 + ifd_size, b"", b""
    for tag, kind, count, value in entries:
        if value is None:
            table += struct.pack("<HHII", tag, kind, count, offset + len(data))
            data += extra[tag] + b"\0" * (len(extra[tag]) % 2)
        else:
            table += struct.pack("<HHI", tag, kind, count) + struct.pack("<H2x" if kind == 3 else "<I", value)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + table + b"\0" * 4 + data)
    return path


def sparse_svs(folder: Path) -> Path:
    """An Aperio SVS claiming 44,000² whose 29,584 JPEG tiles are all missing (237 KB): re-written, it
    would make 2.6 gigapixels."""
    description = "Aperio Image Library v12.0.0\r\n44000x44000 (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.5"
    return _sparse_tiff(folder / "svs_sparse_44k.svs", 44_000, 44_000, 256, description)


def _no_pixels(sop_class: str, modality: str, name: str, preamble: bool = True) -> Callable[[Path], Path]:
    """A DICOM object that holds no image (an RT structure set, a plan, a presentation state)."""
    def make(folder: Path) -> Path:
        from pydicom.dataset import FileMetaDataset
        from pydicom.filewriter import dcmwrite

        ds = _dataset(sop_class, modality)
        ds.SeriesDescription = "Specimen"
        path = folder / f"{name}.dcm"
        if preamble:
            return _save(ds, path)
        ds.preamble, ds.file_meta = None, FileMetaDataset()  # a bare dataset, as older systems wrote
        dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        return path

    return make


SPECIMENS: list[Specimen] = [
    Specimen("dicom_deflate_bomb", "medical", deflate_bomb, "refused", None,
             "1.1 MB Deflated Explicit VR DICOM inflating to 1.1 GiB (a deflate bomb, over 200 : 1)"),
    Specimen("dicom_deflate_over_budget", "medical", deflate_over_budget, "refused", "max_decoded_bytes",
             "11 MB Deflated Explicit VR DICOM inflating to 1.1 GiB at 100 : 1"),
    Specimen("dicom_wsi_header_20k", "medical", slide_header, "refused", None,
             "DICOM whole-slide header claiming 20,000² in 6,241 tiles, holding one"),
    Specimen("dicom_wsi_single_level_100k", "medical", slide_single_level, "refused", "max_work_pixels",
             "DICOM whole slide of 100,000² with no reduced level: its overview decodes 10 gigapixels"),
    Specimen("svs_sparse_44k", "medical", sparse_svs, "refused", "max_work_pixels",
             "244 KB Aperio SVS claiming 44,000² in missing tiles"),
    Specimen("dicom_zip_130x4096", "medical", zip_over_work, "refused", "max_work_pixels",
             "zip of 130 JPEG 2000 slices of 4,096² (2.2 gigapixels)"),
    Specimen("dicom_zip_2001_slices", "medical", zip_too_many_slices, "refused", "max_slices",
             "zip of 2,001 tiny DICOM slices"),
    Specimen("dicom_frames_claim", "medical", frames_claim, "refused", "max_frames",
             "DICOM header claiming 10,000 frames"),
    Specimen("dicom_frame_20000", "medical", frame_too_large, "refused", "max_pixels",
             "DICOM frame claiming 20,000 × 20,000 pixels"),
    Specimen("dicom_rtstruct_bare", "medical", _no_pixels("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT",
                                                           "dicom_rtstruct_bare", preamble=False), "refused", None,
             "RT Structure Set without a Part 10 header (no image)"),
    Specimen("dicom_rtplan", "medical", _no_pixels("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN", "dicom_rtplan"),
             "refused", None, "RT Plan (no image)"),
    Specimen("dicom_presentation_state", "medical", _no_pixels("1.2.840.10008.5.1.4.1.1.11.1", "PR",
                                                                "dicom_presentation_state"), "refused", None,
             "Grayscale Softcopy Presentation State (no image)"),
    Specimen("dicom_us_cine_120", "medical", ultrasound_cine, "accepted", None,
             "120-frame 640 × 480 colour ultrasound cine, JPEG baseline (105 MiB decoded)"),
    Specimen("dicom_cr_2000", "medical", radiograph, "accepted", None, "2,000 × 2,000 16-bit CR, uncompressed"),
    Specimen("dicom_ct_zip_small", "medical", small_ct_zip, "accepted", None, "zip of 12 CT slices of 256²"),
    Specimen("dicom_zip_20x4096", "medical", zip_of_large_slices, "accepted", None,
             "22 KB zip of 20 JPEG 2000 slices of 4,096² (335 megapixels of work)"),
]
