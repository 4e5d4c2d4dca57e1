"""A series opened from a PACS (a DICOMweb source) by reference.

Opening reads the series' metadata (WADO-RS, no pixels), checks every slice's size against the budgets,
orders the slices in space and fetches one instance, the middle slice, for the viewer. The case keeps the
series' address, its instances' UIDs in order (to fetch a slice again) and, from the de-identified middle
slice, what an upload keeps: header facts, the de-identification actions, the display PNG with its text
regions. Other slices are fetched when they are viewed, asked about or exported; an export de-identifies
each instance exactly as an upload is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from loupe.core.errors import InputRejected
from loupe.core.plugins import Budgets, IngestedAsset
from loupe.core.sources.dicomweb import SeriesRef, attribute, check_uid, client, parse_location, request
from loupe.core.sources.dicomweb_slide import is_slide_series

from .deid.deidentify import Deidentifier, DeidOptions
from .dicom_image import check_size, frame_values, geometry
from .ingest import view_asset
from .series import order_slices
from .slides import open_pacs_slide

KIND = "dicom_series"  # the asset read by reference
PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009")  # fetched with the instance, never with the metadata
NEEDED = tuple(f"{tag_for_keyword(k):08X}" for k in (
    "SOPInstanceUID", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient"))

Progress = Callable[[int, int], None]


def _header(attributes: dict) -> Dataset:
    """What opening needs of one instance's metadata (its size, place and UID) as a dataset; its pixel data
    an empty value. Converting the whole metadata takes pydicom ~20 ms an instance: 10 s for a 500-slice CT."""
    kept = {tag: attributes[tag] for tag in NEEDED if tag in attributes}
    ds = Dataset.from_json(kept)
    if any(tag in attributes for tag in PIXEL_TAGS):
        ds.PixelData = b""
    return ds


def series_metadata(location: str, limits: Budgets) -> list[dict]:
    """The series' metadata (DICOM JSON, one document per instance, no pixels), its instances counted."""
    ref = parse_location(location)
    found = request("series metadata", lambda: client(ref.base, limits.max_bytes).retrieve_series_metadata(
        ref.study, ref.series))
    limits.check("max_slices", len(found), "The series' image count")
    return found


def series_headers(location: str, limits: Budgets, found: list[dict] | None = None) -> list[Dataset]:
    """The series' image instances, ordered in space, each checked against the budgets from its header;
    ``found``: the series' metadata, where already fetched."""
    found = series_metadata(location, limits) if found is None else found
    headers = [h for h in map(_header, found) if geometry(h) is not None]
    if not headers:
        raise InputRejected("This series holds no image (a report or presentation state series?).")
    ordered = order_slices(headers)
    for n, ds in enumerate(ordered):
        check_size(geometry(ds), limits, f"Slice {n + 1}" if len(ordered) > 1 else "The image")
    return ordered


def fetch_instance(location: str, uid: str, limits: Budgets) -> Dataset:
    """One instance of the series with its pixels, its size checked from its header before any decoding."""
    ref = parse_location(location)
    ds = request("one image", lambda: client(ref.base, limits.max_bytes).retrieve_instance(
        ref.study, ref.series, uid))
    shape = geometry(ds)
    if shape is None:
        raise InputRejected("The PACS sent an image without pixels.")
    check_size(shape, limits, "The image")
    return ds


def open_series(location: str, limits: Budgets, secret: bytes, progress: Progress | None = None,
                find_text: Callable[[Image.Image], list] | None = None) -> list[IngestedAsset]:
    found = series_metadata(location, limits)
    if is_slide_series(found):  # a whole slide: its tiles fetched as frames when viewed, never whole
        return open_pacs_slide(location, found, limits)
    headers = series_headers(location, limits, found)
    if progress is not None:
        progress(1, 2)
    middle = len(headers) // 2
    instances = [[str(ds.SOPInstanceUID), geometry(ds).frames] for ds in headers]
    clean, report = Deidentifier(DeidOptions(secret))(fetch_instance(location, instances[middle][0], limits),
                                                     in_place=True)
    shape = geometry(clean)
    view = view_asset(clean, frame_values(clean, 0), (middle, 0), len(headers), report.burned_in_annotation,
                      find_text)
    # What the view says of the series (header facts, window, slices, burned-in flag), without what is the view's
    shown = {k: v for k, v in view.meta.items() if k not in ("kind", "series_position", "frame", "text_regions")}
    meta = {**shown, "kind": KIND, "by_reference": True, "deid": report.as_dict()["actions"], "instances": instances}
    if progress is not None:
        progress(2, 2)
    return [IngestedAsset(b"", "application/dicom", shape.columns, shape.rows, meta), view]


def series_frames(asset: IngestedAsset) -> list[tuple[int, str, int, int]]:
    """(slice, instance UID, frame, frames) of every frame of a series read by reference, in order."""
    return [(n, uid, frame, int(frames)) for n, (uid, frames) in enumerate(asset.meta["instances"])
            for frame in range(int(frames))]


def is_series(asset: IngestedAsset) -> bool:
    return asset.meta.get("kind") == KIND


def instances(asset: IngestedAsset, limits: Budgets) -> Iterator[Dataset]:
    """Every instance of the series, fetched one at a time (an export)."""
    for uid, _ in asset.meta["instances"]:
        yield fetch_instance(str(asset.path), uid, limits)


def series_of(assets: Sequence[IngestedAsset]) -> IngestedAsset | None:
    return next((a for a in assets if is_series(a)), None)


def download_series(location: str, folder: Path, limits: Budgets, progress: Progress | None = None) -> int:
    """Every instance of the series into ``folder`` as 00001.dcm, 00002.dcm... in slice order (names that say
    nothing of the patient), one at a time; returns how many. For the batch de-identifier, which reads them
    from there (a private folder it removes)."""
    headers = series_headers(location, limits)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n, header in enumerate(headers, 1):
        fetch_instance(location, str(header.SOPInstanceUID), limits).save_as(folder / f"{n:05d}.dcm",
                                                                            enforce_file_format=True)
        if progress is not None:
            progress(n, len(headers))
    return len(headers)


SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")  # a report id usable as a file name


def download_report_studies(base: str, report_ids: Sequence[str], folder: Path, limits: Budgets,
                            progress: Progress | None = None) -> int:
    """For each report, the study whose Accession Number is the report's id: the middle slice of its largest
    image series, as ``folder/ID.dcm`` (what ``check-reports --images`` reads). Returns how many were found;
    a report without a study, or with an id that cannot name a file, is left without one."""
    web = client(base)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = 0
    for n, report_id in enumerate(report_ids, 1):
        if SAFE_ID.fullmatch(report_id):
            hits = request("search", lambda rid=report_id: web.search_for_series(
                search_filters={"AccessionNumber": rid}, fields=["NumberOfSeriesRelatedInstances", "Modality"]))
            images = [h for h in hits if attribute(h, "Modality") not in ("SR", "PR", "KO", "DOC")]
            if images:
                best = max(images, key=lambda h: int(attribute(h, "NumberOfSeriesRelatedInstances") or 0))
                location = SeriesRef(base, check_uid(attribute(best, "StudyInstanceUID")),
                                     check_uid(attribute(best, "SeriesInstanceUID")))
                headers = series_headers(location.location, limits)
                middle = str(headers[len(headers) // 2].SOPInstanceUID)
                fetch_instance(location.location, middle, limits).save_as(folder / f"{report_id}.dcm",
                                                                           enforce_file_format=True)
                found += 1
        if progress is not None:
            progress(n, len(report_ids))
    return found

