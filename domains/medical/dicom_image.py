"""Reading DICOM files safely: parse, check the pixel budget before decoding, decode one frame at a
time into modality values (HU for CT), and turn every pydicom failure into one clear message.

pydicom's messages and warnings can quote element values (names, dates), so none of them is passed on
or logged: the messages here name the problem, never the data.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, iter_pixels, pixel_array

from loupe.core.errors import InputRejected

MAX_FRAMES = 2_000  # frames Loupe decodes from one file; a claim beyond this is refused unread


@dataclass(frozen=True)
class PixelGeometry:
    rows: int
    columns: int
    frames: int
    samples: int  # 1 grey, 3 colour
    bits_allocated: int

    @property
    def decoded_bytes(self) -> int:
        return self.rows * self.columns * self.frames * self.samples * max(self.bits_allocated, 8) // 8

    @property
    def pixels(self) -> int:
        return self.rows * self.columns * self.frames


def silence_pydicom() -> None:
    """pydicom's warnings and log records can quote element values (names, dates): Loupe lets none of
    them reach its logs, process-wide (a per-call switch would race between threads)."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)  # its child loggers (decoders) inherit this
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


silence_pydicom()


def read_dataset(data: bytes, stop_before_pixels: bool = False) -> Dataset:
    """Parse DICOM bytes (Part 10 with its 'DICM' header, or a bare dataset that parses cleanly)."""
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        ds = _bare_dataset(data, stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputRejected(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).") from None
    # pydicom stops quietly where a file ends: a cut-off file shows as missing elements.
    if len(ds) == 0:
        raise InputRejected("The DICOM file is truncated: it ends right after its header.")
    if not stop_before_pixels and "Rows" in ds and "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputRejected("The DICOM file is truncated: it describes an image but ends before its pixel data.")
    return ds


def _bare_dataset(data: bytes, stop_before_pixels: bool) -> Dataset:
    """Old files without the Part 10 header: accepted only if they parse into a recognisable image."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
        if "SOPClassUID" in ds and "Rows" in ds:
            if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta = pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
            return ds
    except Exception:  # noqa: BLE001, S110 - any failure means the same thing: not DICOM
        pass
    raise InputRejected("This is not a DICOM file: it has no DICOM header and does not read as a DICOM dataset.")


def geometry(ds: Dataset) -> PixelGeometry | None:
    """The pixel matrix the header claims, or None when the dataset has no pixel data (e.g. a report)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        return PixelGeometry(int(ds.Rows), int(ds.Columns), frames, int(ds.get("SamplesPerPixel") or 1),
                             int(ds.get("BitsAllocated") or 16))
    except (AttributeError, TypeError, ValueError):
        raise InputRejected("The DICOM header does not say how large its image is (Rows, Columns).") from None


def check_size(shape: PixelGeometry, max_pixels: int, max_bytes: int) -> None:
    """Refuse before decoding: rows × columns × frames × samples × bits, against the upload limits."""
    if shape.rows <= 0 or shape.columns <= 0 or shape.frames <= 0:
        raise InputRejected("The DICOM header gives an empty image size.")
    if shape.frames > MAX_FRAMES:
        raise InputRejected(f"The file claims {shape.frames:,} frames; Loupe reads at most {MAX_FRAMES:,} per file.")
    if shape.rows * shape.columns > max_pixels:
        raise InputRejected(f"One frame is {shape.columns:,} × {shape.rows:,} pixels, more than the "
                            f"{max_pixels:,} Loupe accepts.")
    if shape.decoded_bytes > max_bytes:
        raise InputRejected(f"Decoded, the image would take {shape.decoded_bytes / 2**20:,.0f} MiB, more than the "
                            f"{max_bytes / 2**20:,.0f} MiB Loupe accepts for one file.")


def frame_values(ds: Dataset, index: int = 0) -> np.ndarray:
    """One frame as modality values (HU for CT after Rescale Slope/Intercept or a Modality LUT):
    float32 [rows, columns] for greyscale, uint8 [rows, columns, 3] RGB for colour."""
    try:
        raw = pixel_array(ds, index=index)
    except Exception as exc:  # noqa: BLE001 - decoders raise RuntimeError, ValueError, NotImplementedError...
        raise InputRejected(decode_problem(ds, exc)) from None
    return modality_values(ds, raw)


def iter_frame_values(ds: Dataset) -> Iterator[np.ndarray]:
    """Every frame in order, as ``frame_values`` gives one, each decoded once."""
    frames = iter_pixels(ds)
    while True:
        try:
            raw = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - as in frame_values
            raise InputRejected(decode_problem(ds, exc)) from None
        yield modality_values(ds, raw)


def modality_values(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3:  # colour, converted to RGB by pydicom
        return raw.astype(np.uint8) if raw.dtype != np.uint8 else raw
    try:
        values = apply_modality_lut(raw, ds)
    except Exception:  # noqa: BLE001 - a broken rescale: the stored values are the best there is
        values = raw
    return np.asarray(values, dtype=np.float32)


def decode_problem(ds: Dataset, exc: Exception) -> str:
    """What to tell the user when a frame does not decode (never the decoder's own words)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", "its transfer syntax")
    if isinstance(exc, ValueError) and "less than expected" in str(exc):
        return "The DICOM file is truncated: its pixel data is shorter than the image size in its header."
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return (f"The image is compressed as {name}, and no installed decoder could read this file "
                "(the data may be damaged or use a variant the decoders do not support).")
    return f"The image data cannot be decoded ({type(exc).__name__})."
