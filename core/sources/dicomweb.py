"""A DICOMweb endpoint (a PACS) as a data source, through dicomweb-client.

An item is one series, ``STUDY_UID/SERIES_UID``: searching runs QIDO-RS at series level; opening is the
domain's (WADO-RS metadata first, then one instance per slice as it is viewed). The search text is a
list of filters: ``key=value`` for the keys in FILTERS (``date=20240101-20241231`` is a range), or bare
words: a modality code (``CT``), a date or date range, otherwise a patient ID.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..budgets import Budgets
from ..errors import InputRejected, LoupeError
from .address import check_address
from .credentials import request_auth

T = TypeVar("T")
KIND = "dicomweb"
PREFIX = "dicomweb+"  # marks a location as a DICOMweb series, not a file
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_CHARS = 64  # PS3.5 9.1
TIMEOUT_S = 30.0  # one DICOMweb request
FILTERS = {"patient": "PatientID", "name": "PatientName", "modality": "Modality", "date": "StudyDate",
           "accession": "AccessionNumber", "study": "StudyDescription"}
MODALITY = re.compile(r"[A-Z]{2,3}")
DATE = re.compile(r"\d{8}(-\d{8})?|\d{8}-|-\d{8}")
# Shown for each series found: the study and series attributes QIDO-RS returns for it.
SHOWN = ("StudyDate", "Modality", "StudyDescription", "SeriesDescription", "NumberOfSeriesRelatedInstances")


@dataclass(frozen=True)
class SeriesRef:
    base: str  # the DICOMweb root, ending in "/"
    study: str
    series: str

    @property
    def location(self) -> str:
        return f"{PREFIX}{self.base}studies/{self.study}/series/{self.series}"


def check_uid(uid: str) -> str:
    if not (0 < len(uid) <= MAX_UID_CHARS and UID.fullmatch(uid)):
        raise InputRejected("A DICOM UID is up to 64 digits and dots.")
    return uid


def series_item(item: str) -> tuple[str, str]:
    """``STUDY_UID/SERIES_UID`` checked: the only item a DICOMweb source has."""
    parts = item.strip().split("/")
    if len(parts) != 2:
        raise InputRejected("A PACS item is a series: STUDY_UID/SERIES_UID.")
    return check_uid(parts[0]), check_uid(parts[1])


def series_location(base: str, item: str) -> str:
    study, series = series_item(item)
    return SeriesRef(base, study, series).location


def parse_location(location: str) -> SeriesRef:
    match = re.fullmatch(r"dicomweb\+(https?://.+/)studies/([0-9.]+)/series/([0-9.]+)", location)
    if match is None:
        raise InputRejected("Not a DICOMweb series location.")
    return SeriesRef(match[1], check_uid(match[2]), check_uid(match[3]))


def is_series_location(location: str) -> bool:
    return location.startswith(PREFIX)


def check_base(location: str) -> str:
    check_address(location, "A DICOMweb source is the http:// or https:// address of its root (e.g. "
                            "http://pacs:8042/dicom-web/).")
    return location.rstrip("/") + "/"


def search_filters(text: str) -> dict[str, str]:
    """QIDO-RS filters from the search box's text (see the module's docstring)."""
    filters: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            if key.lower() not in FILTERS or not value:
                raise InputRejected(f"Search by {', '.join(k + '=' for k in FILTERS)} or plain words "
                                    "(a modality, a date or date range, a patient ID).")
            filters[FILTERS[key.lower()]] = value
        elif MODALITY.fullmatch(word):
            filters["Modality"] = word
        elif DATE.fullmatch(word):
            filters["StudyDate"] = word
        else:
            filters["PatientID"] = word
    for value in filters.values():
        if len(value) > 64 or any(ord(c) < 32 or c in "\\" for c in value):
            raise InputRejected("A search value is up to 64 characters, without control characters or '\\'.")
    return filters


def client(base: str, max_bytes: int | None = None):  # noqa: ANN201 - a dicomweb_client.DICOMwebClient (imported late)
    """One client (and its connection pool) per DICOMweb root and credentials in this process: an export
    fetches hundreds of instances over the same connections. Credentials: those registered for the root
    (``loupe sources credentials``). Every answer is bounded by ``max_bytes`` (default: the per-file budget,
    ``LOUPE_MAX_UPLOAD_BYTES``), counted as it arrives: a PACS cannot make Loupe hold a larger instance, frame
    batch or metadata document."""
    basic, headers = request_auth(base)
    return _client(base, basic, tuple(sorted(headers.items())), max_bytes or Budgets.from_env().max_bytes)


@functools.lru_cache(maxsize=8)
def _client(base: str, basic: tuple[str, str] | None, headers: tuple[tuple[str, str], ...],  # noqa: ANN202
            max_bytes: int):
    from .capped_http import CappedSession  # requests: imported when a PACS is first asked, not by every CLI call

    try:
        from dicomweb_client import DICOMwebClient
    except ImportError:  # pragma: no cover - the dicom extra is not installed
        raise LoupeError("DICOMweb sources need the dicom extra: pip install 'loupe[dicom]'.") from None
    session = CappedSession(max_bytes, "One answer of the PACS")
    session.auth = basic
    web = DICOMwebClient(url=base.rstrip("/"), session=session, headers=dict(headers) or None, timeout=TIMEOUT_S)
    # One retry after 0.5 s on a busy answer (429, 503, ...), not the library's five over half a minute: a
    # person is waiting, and a PACS that is down should say so at once.
    web.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=250)
    return web


def pacs_error(exc: Exception, what: str) -> LoupeError:
    """What to tell a user when a DICOMweb request failed (never the server's own words: they may echo a query)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return LoupeError(f"The PACS refused Loupe's credentials (HTTP {status}): an administrator can set them "
                          "with `loupe sources credentials NAME`.")
    return LoupeError(f"The PACS did not answer ({what}: {type(exc).__name__}"
                      + (f", HTTP {status}" if status else "") + ").")


def request(what: str, call: Callable[[], T]) -> T:
    """``call()``, one or more DICOMweb requests, its failure said as ``pacs_error`` says it."""
    from requests import RequestException

    try:
        return call()
    except RequestException as exc:
        raise pacs_error(exc, what) from None


def attribute(attributes: dict, keyword: str) -> str:
    """The first value of ``keyword`` in a DICOM JSON dataset (QIDO-RS results), as text; '' when absent."""
    from pydicom.datadict import tag_for_keyword

    element = attributes.get(f"{tag_for_keyword(keyword):08X}", {})
    values = element.get("Value") or [""]
    return str(values[0])


def search_series(base: str, text: str, limit: int) -> list[tuple[str, str]]:
    """Series matching ``text``: (label, item) pairs, newest study first. The label holds no patient name
    or ID: date, modality, descriptions, instance count."""
    from requests import RequestException

    try:
        found = client(base).search_for_series(search_filters=search_filters(text), limit=limit,
                                               fields=list(SHOWN))
    except RequestException as exc:
        raise pacs_error(exc, "the search") from None
    hits = []
    for attributes in found:
        study, series = attribute(attributes, "StudyInstanceUID"), attribute(attributes, "SeriesInstanceUID")
        if not (UID.fullmatch(study) and UID.fullmatch(series)):
            continue
        date, modality, study_text, series_text, count = (attribute(attributes, k) for k in SHOWN)
        label = " · ".join(p for p in (_date(date), modality, study_text, series_text,
                                        f"{count} images" if count else "") if p)
        hits.append((date, label or "series", f"{study}/{series}"))
    hits.sort(key=lambda hit: hit[0], reverse=True)
    return [(label, item) for _, label, item in hits]


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
