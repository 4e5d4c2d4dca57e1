"""A STAC API (an item-search endpoint such as a Sentinel-2 or Landsat catalogue) as a data source, through
pystac-client.

An item is ``COLLECTION/ITEM_ID``. Searching sends the filters of the search box (collections, a bounding box,
a date or date range, ids) to the API's /search. Opening asks the API for the item and takes its picture's
href; that picture is read through another data source an admin configured whose prefix holds it (an http or
s3 source), so the API can never send Loupe to an address nobody allowed, and the same reader checks,
credentials and audit apply as for any item of that source.
"""

from __future__ import annotations

import base64
import re

from ..errors import InputRejected, LoupeError
from .address import check_address
from .credentials import request_auth

KIND = "stac-api"
TIMEOUT_S = 30.0
FILTERS = ("collection", "bbox", "date", "id")
DATE = re.compile(r"\d{4}-\d{2}(-\d{2})?(/(\d{4}-\d{2}(-\d{2})?|\.\.))?|\.\./\d{4}-\d{2}(-\d{2})?")
BBOX = re.compile(r"-?\d+(\.\d+)?(,-?\d+(\.\d+)?){3}")
COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_ID_CHARS = 256


def check_root(location: str) -> str:
    check_address(location, "A STAC API source is the http:// or https:// address of the API's landing page.")
    return location.rstrip("/")


def item_ref(item: str) -> tuple[str, str]:
    """``COLLECTION/ITEM_ID`` checked (the id may hold further '/')."""
    collection, sep, item_id = item.strip().partition("/")
    if not sep or not COLLECTION.fullmatch(collection):
        raise InputRejected("A STAC API item is COLLECTION/ITEM_ID.")
    if not 0 < len(item_id) <= MAX_ID_CHARS or any(ord(c) < 32 or c in "\\?#" for c in item_id):
        raise InputRejected(f"An item id is 1-{MAX_ID_CHARS} characters, without control characters, '\\', '?' "
                            "or '#'.")
    return collection, item_id


def search_terms(text: str) -> dict[str, object]:
    """The search box as pystac-client arguments: ``collection=``, ``bbox=W,S,E,N``, ``date=`` (a day, month
    or ``FROM/TO`` range, ``..`` open), ``id=``; a bare word is a date, a box or a collection name."""
    collections: list[str] = []
    terms: dict[str, object] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            key, value = ("date" if DATE.fullmatch(word) else "bbox" if BBOX.fullmatch(word) else "collection"), word
        if key not in FILTERS or not value or len(value) > 128:
            raise InputRejected(f"Search by {', '.join(k + '=' for k in FILTERS)} or plain words (a date such as "
                                "2024-05 or 2024-05-01/2024-06-30, a box W,S,E,N, or a collection).")
        if key == "collection":
            if not COLLECTION.fullmatch(value):
                raise InputRejected("A collection name is letters, digits, '.', '_', ':' or '-'.")
            collections.append(value)
        elif key == "bbox":
            if not BBOX.fullmatch(value):
                raise InputRejected("A box is four numbers: west,south,east,north.")
            west, south, east, north = (float(v) for v in value.split(","))
            if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south < north <= 90):
                raise InputRejected("A box is west,south,east,north in degrees, south below north.")
            terms["bbox"] = [west, south, east, north]
        elif key == "date":
            if not DATE.fullmatch(value):
                raise InputRejected("A date is YYYY-MM or YYYY-MM-DD, or a range FROM/TO ('..' leaves one end open).")
            terms["datetime"] = value
        else:
            item_ref(f"x/{value}")  # the same rule as an item's id
            terms["ids"] = [*terms.get("ids", []), value]  # type: ignore[list-item]
    if collections:
        terms["collections"] = collections
    return terms


def _client(root: str):  # noqa: ANN202 - a pystac_client.Client
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    basic, headers = request_auth(root)
    if basic is not None:
        headers = {"Authorization": "Basic " + base64.b64encode(":".join(basic).encode()).decode()}
    return Client.open(root, headers=headers or None, stac_io=StacApiIO(timeout=TIMEOUT_S))


def _asked(what: str, call):  # noqa: ANN001, ANN202
    from pystac_client.exceptions import APIError
    from requests import RequestException

    try:
        return call()
    except APIError as exc:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            raise LoupeError(f"The STAC API refused Loupe's credentials (HTTP {status}): an administrator can set "
                             "them with `loupe sources credentials NAME`.") from None
        if status == 404:
            raise InputRejected("No such item in this catalogue.") from None
        raise LoupeError(f"The STAC API did not answer {what}" + (f" (HTTP {status})." if status else ".")) from None
    except (RequestException, OSError) as exc:
        raise LoupeError(f"The STAC API did not answer {what} ({type(exc).__name__}).") from None


def search_api(root: str, text: str, limit: int) -> list[tuple[str, str]]:
    """(label, ``COLLECTION/ITEM_ID``) of the items the API finds for ``text``, at most ``limit``."""
    terms = search_terms(text)

    def found() -> list:
        return list(_client(root).search(max_items=limit, limit=min(limit, 100), **terms).items())

    hits = []
    for item in _asked("the search", found):
        when = item.datetime.date().isoformat() if item.datetime else ""
        cloud = item.properties.get("eo:cloud_cover")
        label = " · ".join(p for p in (item.id, item.collection_id or "", when,
                                       f"cloud {cloud:.0f}%" if isinstance(cloud, int | float) else "") if p)
        hits.append((label, f"{item.collection_id}/{item.id}"))
    return hits


def api_image_href(root: str, item: str) -> str:
    """The absolute href of the picture of ``COLLECTION/ITEM_ID``, as the API describes the item."""
    from .stac import image_href

    collection, item_id = item_ref(item)

    def fetch():  # noqa: ANN202
        found = _client(root).get_collection(collection).get_item(item_id)
        if found is None:
            raise InputRejected("No such item in this catalogue.")
        return found

    return image_href(_asked("for the item", fetch))
