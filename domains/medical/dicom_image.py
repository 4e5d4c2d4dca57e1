"""Reading DICOM files safely: parse, check the budgets before decoding, decode one frame at a time
into modality values (HU for CT), and turn every pydicom failure into one clear message.

Deflated files (Deflated Explicit VR Little Endian) are inflated here, counted against the decoded-bytes
budget before anything is kept: pydicom would inflate them whole, however large. Frames are decoded
lazily, one at a time, so a 120-frame cine holds one decoded frame at once.

pydicom's messages and warnings can quote element values (names, dates), so none of them is passed on
or logged: the messages here name the problem, never the data.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset as parse_dataset
from pydicom.filereader import read_preamble
from pydicom.pixels import apply_modality_lut, iter_pixels, pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected

MAX_INFLATION = 200  # inflated / deflated size: real datasets stay far below it; beyond it is a deflate bomb
_INFLATE_STEP = 4 * 2**20  # bytes inflated between two checks
_FEED = 2**16  # deflated bytes handed to the inflater at a time
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}  # Float, Double Float and Pixel Data


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
    def frame_pixels(self) -> int:
        return self.rows * self.columns

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


def read_dataset(data: bytes, stop_before_pixels: bool = False, limits: Budgets | None = None) -> Dataset:
    """Parse DICOM bytes (Part 10 with its 'DICM' header, or a bare dataset that parses cleanly).

    A deflated file may inflate to at most ``limits.max_decoded_bytes`` (default: the budgets set in
    the environment)."""
    return read_counted(data, stop_before_pixels, limits)[0]


def read_counted(data: bytes, stop_before_pixels: bool = False,
                 limits: Budgets | None = None) -> tuple[Dataset, int]:
    """``read_dataset`` and the bytes the dataset took once inflated (its size when not deflated)."""
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    limits = limits or Budgets.from_env()
    size = len(data)
    try:
        deflated = _deflated(data, stop_before_pixels, limits)
        if deflated is not None:
            ds, size = deflated
        else:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        ds = _bare_dataset(data, stop_before_pixels)
    except (InputRejected, MemoryError):  # MemoryError: a job over its memory budget, reported as that
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputRejected(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).") from None
    # pydicom stops quietly where a file ends: a cut-off file shows as missing elements.
    if len(ds) == 0:
        raise InputRejected("The DICOM file is truncated: it ends right after its header.")
    if not stop_before_pixels and "Rows" in ds and "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputRejected("The DICOM file is truncated: it describes an image but ends before its pixel data.")
    return ds, size


def _deflated(data: bytes, stop_before_pixels: bool, limits: Budgets) -> tuple[FileDataset, int] | None:
    """A Part 10 file in Deflated Explicit VR, inflated within budget and parsed; None for any other file."""
    fp = DicomBytesIO(data)
    preamble = read_preamble(fp, force=False)  # InvalidDicomError without 'DICM': not Part 10
    meta = FileMetaDataset(parse_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                                         stop_when=lambda tag, vr, length: tag.group != 2))
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    raw = memoryview(data)[fp.tell():]
    size = inflated_size(raw, limits)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # within budget: inflated once more, kept this time
    body = inflater.decompress(raw) + inflater.flush()
    stop = (lambda tag, vr, length: tag in _PIXEL_TAGS) if stop_before_pixels else None
    dataset = parse_dataset(DicomBytesIO(body), is_implicit_VR=False, is_little_endian=True, stop_when=stop)
    ds = FileDataset(io.BytesIO(data), dataset, preamble, meta, is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, size


def inflated_size(raw: bytes | memoryview, limits: Budgets) -> int:
    """What raw deflate data inflates to, counted in steps with none of it kept: refused as soon as it
    passes the decoded-bytes budget, or ``MAX_INFLATION`` times its own size (a deflate bomb)."""
    inflater, total, data = zlib.decompressobj(-zlib.MAX_WBITS), 0, memoryview(raw)
    for start in range(0, len(data), _FEED):
        pending = data[start:start + _FEED]
        # Past the stream's end, zlib hands trailing bytes (a DICOM pad byte) back as the unconsumed tail on
        # every call: without the eof test this loop never ends.
        while pending and not inflater.eof:
            try:
                total += len(inflater.decompress(pending, _INFLATE_STEP))
            except zlib.error:
                raise InputRejected("The DICOM file is damaged: its deflated data does not inflate.") from None
            limits.check("max_decoded_bytes", total, "The deflated DICOM data, inflated so far,")
            if total > MAX_INFLATION * max(len(data), 1):
                raise InputRejected(f"The deflated DICOM data inflates to more than {MAX_INFLATION} times its "
                                    "size, far beyond what image data allows; it is refused unread.")
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total + len(inflater.flush())


def _bare_dataset(data: bytes, stop_before_pixels: bool) -> Dataset:
    """Old files without the Part 10 header: accepted if they parse into a DICOM object of a known kind
    (an image, or e.g. an RT structure set, refused later by what it is)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
        if "SOPClassUID" in ds and ("Rows" in ds or UID(str(ds.SOPClassUID)).is_valid
                                    and UID(str(ds.SOPClassUID)).name != str(ds.SOPClassUID)):
            if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta = pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
            return ds
    except Exception:  # noqa: BLE001, S110 - any failure means the same thing: not DICOM
        pass
    raise InputRejected("This is not a DICOM file: it has no DICOM header and does not read as a DICOM dataset.")


def object_kind(ds: Dataset) -> str:
    """What a DICOM object is, by its SOP Class (e.g. "RT Structure Set"); "" when unknown."""
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = getattr(UID(str(uid)) if uid else None, "name", "") or ""
    if not name or name == str(uid):
        return ""
    name = name.removesuffix(" Storage")
    return "DICOMDIR" if name == "Media Storage Directory" else name


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


def check_size(shape: PixelGeometry, limits: Budgets, what: str = "The image") -> None:
    """Refuse before decoding, from the header's claims: frames, and one frame's pixels (the most
    decoded at once). The work of all frames of all files is ``check_work``'s."""
    if shape.rows <= 0 or shape.columns <= 0 or shape.frames <= 0:
        raise InputRejected("The DICOM header gives an empty image size.")
    limits.check("max_frames", shape.frames, f"{what}'s frame count")
    limits.check("max_pixels", shape.frame_pixels, f"One frame ({shape.columns:,} × {shape.rows:,} pixels)")


def check_work(shapes: list[PixelGeometry], limits: Budgets) -> None:
    """All frames × rows × columns the upload makes Loupe decode, against the work budget."""
    what = "The series, all slices together," if len(shapes) > 1 else "The image, all frames together,"
    limits.check("max_work_pixels", sum(shape.pixels for shape in shapes), what)


def frame_values(ds: Dataset, index: int = 0) -> np.ndarray:
    """One frame as modality values (HU for CT after Rescale Slope/Intercept or a Modality LUT):
    float32 [rows, columns] for greyscale, uint8 [rows, columns, 3] RGB for colour."""
    try:
        raw = pixel_array(ds, index=index)
    except Exception as exc:  # noqa: BLE001 - decoders raise RuntimeError, ValueError, NotImplementedError...
        raise InputRejected(decode_problem(ds, exc)) from None
    return modality_values(ds, raw)


def iter_frame_values(ds: Dataset) -> Iterator[np.ndarray]:
    """Every frame in order, as ``frame_values`` gives one, each decoded once and only one held at a time."""
    frames, index = iter_pixels(ds), 0
    while True:
        try:
            raw = next(frames)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - pydicom's iterator trips over some files (a read-only buffer) that
            # reading a frame by its index handles; a frame that truly does not decode is refused there
            count = int(ds.get("NumberOfFrames") or 1)
            yield from (frame_values(ds, i) for i in range(index, count))
            return
        yield modality_values(ds, raw)
        index += 1


def modality_values(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3:  # colour, converted to RGB by pydicom
        return raw.astype(np.uint8) if raw.dtype != np.uint8 else raw
    if "ModalityLUTSequence" not in ds:  # a linear rescale, in float32 and in place (pydicom's is float64)
        values = raw.astype(np.float32)
        slope, intercept = _number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)
        if slope != 1.0:
            values *= slope
        if intercept != 0.0:
            values += intercept
        return values
    try:
        values = apply_modality_lut(raw, ds)
    except Exception:  # noqa: BLE001 - a broken LUT: the stored values are the best there is
        values = raw
    return np.asarray(values, dtype=np.float32)


def _number(value: object, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):  # a broken rescale: the stored values are the best there is
        return default


def decode_problem(ds: Dataset, exc: Exception) -> str:
    """What to tell the user when a frame does not decode (never the decoder's own words): a cut-off
    file, no decoder for its compression, decoders that failed on its data, or a damaged header."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", "its transfer syntax")
    text = str(exc)
    if isinstance(exc, ValueError) and ("less than expected" in text or "shorter than" in text):
        return "The DICOM file is truncated: its pixel data is shorter than the image size in its header."
    if isinstance(exc, RuntimeError | NotImplementedError) and (
            "missing dependencies" in text or "No pixel data decoders" in text):
        return f"The image is compressed as {name}, and no decoder for it is installed."
    if isinstance(exc, RuntimeError) and "raised by all available plugins" in text:
        return (f"The image is compressed as {name}, and no installed decoder could read this file "
                "(the data may be damaged or use a variant the decoders do not support).")
    if syntax is None:
        return "The DICOM file does not say how its pixels are encoded (no Transfer Syntax UID)."
    return ("The DICOM header's description of the image is damaged or incomplete, so its pixels cannot be "
            f"read ({type(exc).__name__}).")
