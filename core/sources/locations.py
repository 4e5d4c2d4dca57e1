"""Where a data source's items are, and the checks that keep an item inside its source.

Kinds: ``folder`` (a server folder), ``http`` (an http(s) prefix of COGs, read through GDAL's /vsicurl/),
``s3`` (an ``s3://bucket/prefix/`` of COGs, read through GDAL's /vsis3/ with the source's own credentials,
see ``credentials``), ``stac`` (a static STAC catalogue, as a file or a URL: its items are listed, and a case
keeps the path of the item's GeoTIFF asset relative to the catalogue's folder, read like a folder or http
item), ``stac-api`` (a STAC API searched by collection, box and date; an item's picture is read through the
http or s3 source holding it, see ``stac_api``), ``dicomweb`` (a PACS's DICOMweb root: items are series,
searched with QIDO-RS; see ``dicomweb``).

An item is a relative path typed by a user (or listed for them): it never names a place outside its
source. A folder item is resolved with symbolic links followed and must stay under the folder; an HTTP
item is appended to the prefix percent-encoded, so "?", "#" and "%" stay part of the path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..errors import InputRejected, LoupeError
from .address import check_address
from .credentials import vsis3_prefix
from .dicomweb import KIND as DICOMWEB
from .dicomweb import check_base, search_series, series_location
from .stac import catalogue_root, is_remote, stac_items
from .stac_api import KIND as STAC_API
from .stac_api import check_root, search_api

KINDS = ("folder", "http", "s3", "stac", STAC_API, DICOMWEB)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
READER = re.compile(r"(role|user):[A-Za-z0-9_.@-]{1,64}")
MAX_ITEM_CHARS = 1024
MAX_LISTED = 500  # items one listing returns


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    location: str  # a folder's absolute path, an http(s) or s3:// prefix ending in "/", a STAC catalogue's file
    # or URL, or a DICOMweb root ending in "/"
    domain: str
    readers: tuple[str, ...] = ()  # "role:NAME" / "user:NAME"; admins read every source


def check_spec(name: str, kind: str, location: str) -> str:
    """Refuse a bad name, kind or location (with the reason); returns the location as stored."""
    if not NAME.fullmatch(name):
        raise LoupeError("A source name is 1-32 lower-case letters, digits, '-' or '_', starting with a letter "
                         "or digit.")
    if kind not in KINDS:
        raise LoupeError(f"unknown source kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "folder":
        folder = Path(location).expanduser()
        if not folder.is_absolute() or not folder.is_dir():
            raise LoupeError(f"{location!r} is not an existing folder given by its absolute path.")
        return str(folder.resolve())
    if kind == "stac" and not is_remote(location):
        catalogue = Path(location).expanduser()
        if not catalogue.is_absolute() or not catalogue.is_file():
            raise LoupeError(f"{location!r} is not a STAC catalogue file given by its absolute path, nor a URL.")
        return str(catalogue.resolve())
    if kind == DICOMWEB:
        return check_base(location)
    if kind == "s3":
        return _check_s3(location)
    if kind == STAC_API:
        return check_root(location)
    check_address(location, "An http source is an http:// or https:// address.")
    return location if kind == "stac" else location.rstrip("/") + "/"


def _check_s3(location: str) -> str:
    parts = urlsplit(location)
    if parts.scheme != "s3" or not BUCKET.fullmatch(parts.netloc):
        raise LoupeError("An s3 source is s3://BUCKET/PREFIX/ (a bucket name of 3-63 lower-case letters, digits, "
                         "'.' or '-'); the endpoint and keys go in its credentials.")
    if parts.query or parts.fragment or "@" in location:
        raise LoupeError("A source's address is plain: no '?' query, '#' fragment or credentials.")
    prefix = check_item(parts.path.strip("/")) + "/" if parts.path.strip("/") else ""
    return f"s3://{parts.netloc}/{prefix}"


def check_readers(readers: tuple[str, ...], roles: tuple[str, ...]) -> tuple[str, ...]:
    for reader in readers:
        if not READER.fullmatch(reader) or (reader.startswith("role:") and reader[5:] not in roles):
            raise LoupeError(f"{reader!r} is not a reader: give role:NAME ({', '.join(roles)}) or user:NAME.")
    return tuple(dict.fromkeys(readers))


def check_item(item: str) -> str:
    """The item's path as stored: relative, '/'-separated, without empty, '.' or '..' parts."""
    if not item or len(item) > MAX_ITEM_CHARS:
        raise InputRejected(f"An item path is 1-{MAX_ITEM_CHARS} characters.")
    if any(ord(c) < 32 or c == "\\" for c in item):
        raise InputRejected("An item path has no control characters or backslashes.")
    parts = item.strip("/").split("/")
    if item.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputRejected("An item path is relative to its source, without '.', '..' or empty parts.")
    return "/".join(parts)


def item_location(spec: SourceSpec, item: str) -> str:
    """What GDAL (or another reader) opens for ``item``: a file path, or a /vsicurl/ address; for a DICOMweb
    source, the series' address marked ``dicomweb+``."""
    if spec.kind == DICOMWEB:
        return series_location(spec.location, item)
    if spec.kind == STAC_API:
        raise LoupeError("A STAC API item is read through the source that holds its picture.")
    item = check_item(item)
    if spec.kind == "s3":
        return vsis3_prefix(spec.location) + item
    base = catalogue_root(spec.location) if spec.kind == "stac" else spec.location  # a STAC item: its asset's path
    if not is_remote(base):
        root = Path(base).resolve()
        path = (root / item).resolve()
        if not path.is_relative_to(root):  # a symbolic link pointing out of the folder
            raise InputRejected("That item is outside its source.")
        if not path.is_file():
            raise InputRejected("No such item in this source.")
        return str(path)
    return "/vsicurl/" + base + quote(item, safe="/")


def list_items(spec: SourceSpec, under: str = "", suffixes: tuple[str, ...] = ()) -> list[str]:
    """Items of a folder source below ``under`` (at most MAX_LISTED, sorted), with one of ``suffixes``; of an
    S3 prefix (the first MAX_LISTED with a suffix among the first 20 times as many keys); a STAC catalogue's
    item ids."""
    if spec.kind == "stac":
        return stac_items(spec.location, MAX_LISTED)
    if spec.kind == "s3":  # in a worker that registered the source's credentials
        from .gdal_vsi import walk_files

        files = walk_files(vsis3_prefix(spec.location), MAX_LISTED * 20)  # the suffixes thin a bucket out
        return sorted(f for f in files if not suffixes or f.lower().endswith(suffixes))[:MAX_LISTED]
    if spec.kind != "folder":
        raise LoupeError(f"A {spec.kind} source cannot be listed: search it, or type the item's path.")
    root = Path(spec.location).resolve()
    start = root / check_item(under) if under else root
    if not start.resolve().is_relative_to(root) or not start.is_dir():
        raise InputRejected("No such folder in this source.")
    found: list[str] = []
    for folder, dirs, files in os.walk(start):  # symbolic links to folders are not followed
        dirs.sort()
        for name in sorted(files):
            if name.startswith(".") or (suffixes and not name.lower().endswith(suffixes)):
                continue
            found.append(str((Path(folder) / name).relative_to(root)))
            if len(found) >= MAX_LISTED:
                return found
    return found


def item_under(spec: SourceSpec, href: str) -> str | None:
    """The item of an http or s3 source that ``href`` (an absolute URL or s3:// address) names, or None when
    it lies outside the source."""
    if spec.kind not in ("http", "s3") or not href.startswith(spec.location):
        return None
    rest = href[len(spec.location):]
    rest = unquote(rest) if spec.kind == "http" else rest
    try:
        return check_item(rest)
    except InputRejected:
        return None


def search_items(spec: SourceSpec, text: str = "", suffixes: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(label, item) pairs for a search box: a PACS's series matching the filters in ``text`` (QIDO-RS), or
    the listed items containing ``text`` (case-insensitive), labelled by their path."""
    if spec.kind == DICOMWEB:
        return search_series(spec.location, text, MAX_LISTED)
    if spec.kind == STAC_API:
        return search_api(spec.location, text, MAX_LISTED)
    term = text.strip().lower()
    return [(item, item) for item in list_items(spec, "", suffixes) if term in item.lower()]
