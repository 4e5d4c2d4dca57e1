"""A DICOM whole-slide image in a PACS, read where it lies: its tiles fetched as frames (WADO-RS).

Opening needs the series' metadata only: each VOLUME instance's matrix and tile size, its frames' places
(TILED_FULL order, or each frame's Plane Position), the parts of a level split over several instances.
A view then fetches the frames it overlaps, per instance in batches, as stored (``transfer-syntax=*``: the
JPEG or JPEG 2000 tiles a scanner wrote, or native pixels); each is checked against the tile's size before
it is decoded. Label, overview and thumbnail images are never fetched: a label photographs the slide's
paper, names included.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..budgets import Budgets
from ..errors import InputRejected
from ..pyramid.dicom_wsi import WSI_SOP_CLASS, DicomSlideSource, LevelPart, as_rgb, is_tissue, level_part
from .dicomweb import check_uid, client, parse_location, request

BATCH = 32  # frames asked for in one request: few round trips, each answer well inside the byte budget
STORED = (("application/octet-stream", "*"),)  # frames as the PACS holds them, not transcoded
J2K_STARTS = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    return f"{tag_for_keyword(keyword):08X}"


def _values(attributes: dict, keyword: str) -> list:
    return (attributes.get(_tag(keyword)) or {}).get("Value") or []


def _first(attributes: dict, keyword: str, default: object = None) -> object:
    values = _values(attributes, keyword)
    return values[0] if values else default


def is_slide_series(metadata: Sequence[dict]) -> bool:
    return any(_first(attributes, "SOPClassUID") == WSI_SOP_CLASS for attributes in metadata)


@dataclass(frozen=True)
class FrameFormat:
    """What a frame of one instance decodes to: its size and, for native pixels, their layout."""

    width: int
    height: int
    samples: int
    bits: int
    photometric: str


def _positions(attributes: dict) -> list[tuple[int, int]]:
    positions = []
    for item in _values(attributes, "PerFrameFunctionalGroupsSequence"):
        plane = _first(item, "PlanePositionSlideSequence") or {}
        column = _first(plane, "ColumnPositionInTotalImagePixelMatrix")
        row = _first(plane, "RowPositionInTotalImagePixelMatrix")
        positions.append((int(column), int(row)) if column is not None and row is not None else (-10**9, -10**9))
    return positions


def _microns_per_pixel(attributes: dict) -> float | None:
    shared = _first(attributes, "SharedFunctionalGroupsSequence") or {}
    spacing = _values(_first(shared, "PixelMeasuresSequence") or {}, "PixelSpacing")
    return float(spacing[0]) * 1000 if spacing and float(spacing[0]) > 0 else None  # mm -> µm


def slide_parts(metadata: Sequence[dict], budgets: Budgets) -> tuple[list[LevelPart], dict[str, FrameFormat],
                                                                      float | None]:
    """The tissue levels' parts (keyed by SOP Instance UID), each instance's frame format, and the finest
    level's microns per pixel, from the series' metadata."""
    parts, formats, finest = [], {}, (0, None)
    for attributes in metadata:
        if _first(attributes, "SOPClassUID") != WSI_SOP_CLASS or not is_tissue(_values(attributes, "ImageType")):
            continue
        try:
            uid = check_uid(str(_first(attributes, "SOPInstanceUID", "")))  # it goes into the frames' URL
            width = int(_first(attributes, "TotalPixelMatrixColumns"))
            height = int(_first(attributes, "TotalPixelMatrixRows"))
            tile_w, tile_h = int(_first(attributes, "Columns")), int(_first(attributes, "Rows"))
            frames = int(_first(attributes, "NumberOfFrames", 1))
            offset = int(_first(attributes, "ConcatenationFrameOffsetNumber", 0))
        except (TypeError, ValueError):
            raise InputRejected("An image of the slide lacks its pixel matrix size.") from None
        tiled_full = _first(attributes, "DimensionOrganizationType") == "TILED_FULL"
        parts.append(level_part(uid, width, height, tile_w, tile_h, frames, tiled_full, offset,
                                [] if tiled_full else _positions(attributes), budgets))
        formats[uid] = FrameFormat(tile_w, tile_h, int(_first(attributes, "SamplesPerPixel", 1)),
                                   int(_first(attributes, "BitsAllocated", 8)),
                                   str(_first(attributes, "PhotometricInterpretation", "")))
        if width > finest[0]:
            finest = (width, _microns_per_pixel(attributes))
    return parts, formats, finest[1]


def decode_frame(data: bytes, form: FrameFormat) -> np.ndarray:
    """One frame as RGB: a JPEG / JPEG 2000 tile (its header's size checked before decoding), or native
    8-bit pixels of exactly the tile's size."""
    if data[:2] == b"\xff\xd8" or data.startswith(J2K_STARTS):
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.size != (form.width, form.height):
                    raise InputRejected(f"A tile of the slide claims {image.width:,} × {image.height:,} pixels; its "
                                        f"header says {form.width:,} × {form.height:,}.")
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            raise InputRejected("A tile of the slide cannot be decoded: the PACS sent damaged data.") from None
    if form.bits == 8 and form.samples in (1, 3) and len(data) == form.width * form.height * form.samples:
        values = np.frombuffer(data, np.uint8).reshape(form.height, form.width, form.samples)
        if form.samples == 1:
            return as_rgb(values[..., 0])
        if form.photometric.startswith("YBR"):
            return np.asarray(Image.fromarray(values, "YCbCr").convert("RGB"))
        return values
    raise InputRejected("A tile of the slide is in a compression Loupe does not read from a PACS "
                        "(it reads JPEG, JPEG 2000 and native 8-bit frames).")


def open_remote_slide(location: str, budgets: Budgets | None = None,
                      metadata: Sequence[dict] | None = None) -> DicomSlideSource:
    """The slide of the series at ``location`` (``dicomweb+…/studies/S/series/R``); ``metadata``: the
    series' metadata when the caller already fetched it."""
    budgets = budgets or Budgets.from_env()
    ref = parse_location(location)
    web = client(ref.base, budgets.max_bytes)
    if metadata is None:
        metadata = request("series metadata", lambda: web.retrieve_series_metadata(ref.study, ref.series))
    parts, formats, microns = slide_parts(metadata, budgets)

    def read_frames(uid: str, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for start in range(0, len(indices), BATCH):
            batch = [index + 1 for index in indices[start:start + BATCH]]  # frame numbers are 1-based
            found = request("slide tiles", lambda batch=batch: web.retrieve_instance_frames(
                ref.study, ref.series, uid, batch, media_types=STORED))
            if len(found) != len(batch):
                raise InputRejected(f"The PACS sent {len(found)} tiles of the slide for {len(batch)} asked.")
            for data in found:
                yield decode_frame(bytes(data), formats[uid])

    source = DicomSlideSource(parts, read_frames, budgets, microns)
    source.description = f"DICOM whole-slide image in a PACS, {len(source.native_downsamples)} levels"
    return source
