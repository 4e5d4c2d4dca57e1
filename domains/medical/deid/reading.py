"""Reading one file for de-identification: any stored DICOM object (images, and objects without pixels:
structured reports, RT structure sets and plans, key-object selections, presentation states), with
refusals that name the real cause and budgets checked before any pixel is decoded."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from loupe.core.budgets import Budgets
from loupe.core.errors import InputRejected
from loupe.core.pyramid.dicom_wsi import WSI_SOP_CLASS

from ..dicom_image import decode_problem, read_dataset

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


def read_object(data: bytes) -> Dataset:
    """A stored DICOM object from ``data``, with or without the Part 10 header."""
    if not data:
        raise InputRejected("The file is empty (0 bytes).")
    if data[128:132] == b"DICM":
        return read_dataset(data)
    return _bare(data)


def _bare(data: bytes) -> Dataset:
    """A dataset written without the Part 10 header (older systems): accepted when it parses and names its
    SOP class, whatever the object (not only images)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ok = "SOPClassUID" in ds and "SOPInstanceUID" in ds
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OverflowError, IndexError,
            AttributeError, NotImplementedError):
        ok = False
    if not ok:
        raise InputRejected("This is not a DICOM file: it has no DICOM header and does not read as a DICOM dataset.")
    if "Rows" in ds and "PixelData" not in ds:
        raise InputRejected("The DICOM file is truncated: it describes an image but ends before its pixel data.")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def kind(ds: Dataset) -> str:
    """The object's SOP class in words (e.g. 'Comprehensive SR Storage'), for reports; never a value."""
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return str(getattr(uid, "name", "") or "unknown object") if uid else "unknown object"


def check_stored_object(ds: Dataset) -> None:
    """A dataset de-identification can name and write: a composite object with its SOP Instance UID."""
    if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        raise InputRejected("This is a DICOMDIR (an index of other files) whose directory records cannot be read.")
    if "SOPClassUID" not in ds:
        raise InputRejected("The DICOM dataset names no SOP class (0008,0016): it is not a stored object.")
    if not ds.get("SOPInstanceUID"):
        raise InputRejected("The DICOM object has no SOP Instance UID (0008,0018), so it cannot be named "
                            "consistently; a valid stored object always has one.")


def check_pixels(ds: Dataset, budgets: Budgets | None = None) -> None:
    """The pixel matrix the header claims checked against the budgets, then every frame decoded once: a file
    whose pixels are cut short or undecodable is not passed on. Objects without pixels pass unchanged."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 16)
    except (AttributeError, TypeError, ValueError):
        raise InputRejected("The DICOM header does not give a readable image size (Rows, Columns, frames): "
                            "its pixel data cannot be checked.") from None
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise InputRejected("The DICOM header gives an empty image size.")
    budgets = budgets or Budgets()
    budgets.check("max_pixels", rows * columns, "One frame")
    # A slide level's frames are tiles (tens of thousands), decoded one at a time: their total is work, not memory.
    if ds.get("SOPClassUID") == WSI_SOP_CLASS:
        budgets.check("max_work_pixels", rows * columns * frames, "The slide level, all its tiles together,")
    else:
        budgets.check("max_frames", frames, "The image's frame count")
        budgets.check("max_decoded_bytes", rows * columns * frames * samples * max(bits, 8) // 8,
                      "The decoded image")
    if "PixelData" not in ds:  # float pixel data: nothing pydicom decodes here
        return
    try:
        for _ in iter_pixels(ds, as_rgb=False):  # decoding proves the data; colour conversion would not
            pass
    except (AttributeError, KeyError, TypeError) as exc:  # pydicom's own checks of the header, before any decoder
        raise InputRejected("The DICOM header lacks or garbles an element needed to read its pixel data "
                            f"(pydicom: {type(exc).__name__}); the pixel data was not decoded.") from None
    except MemoryError:  # a job over its memory budget: the job runner says so
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise InputRejected(decode_problem(ds, exc)) from None
