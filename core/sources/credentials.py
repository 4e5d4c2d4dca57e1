"""Credentials of data sources: one file per source in ``LOUPE_HOME/secrets/sources`` (0600 in a 0700 folder),
never in the database, the logs or a command line.

A file records the source's kind and location with the values, so a worker can register every source's
credentials for exactly its own prefix: GDAL path-specific options for S3 and HTTP sources, a lookup by root
for DICOMweb and STAC clients. Workers call ``use_credentials(home)`` before reading a source; it re-reads
the folder only when a file changed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import LoupeError

# What each kind accepts; an S3 source's endpoint and region are not secret but live here too, beside the keys
# they go with (an S3-compatible store other than AWS: endpoint=http(s)://host:port).
KEYS = {"s3": ("access_key_id", "secret_access_key", "session_token", "region", "endpoint"),
        "http": ("username", "password", "token"), "stac-api": ("username", "password", "token"),
        "dicomweb": ("username", "password", "token")}
MAX_VALUE_CHARS = 4096

_lock = threading.Lock()
_by_location: dict[str, dict[str, str]] = {}
_seen: dict[str, tuple[float, str, str]] = {}  # file -> (mtime, kind, location) registered


def folder(home: Path) -> Path:
    return home / "secrets" / "sources"


def parse(kind: str, text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines and ``#`` comments skipped) checked against the kind's keys."""
    allowed = KEYS.get(kind)
    if allowed is None:
        raise LoupeError(f"A {kind} source takes no credentials.")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in allowed:
            raise LoupeError(f"line {number}: give key=value with a key of {', '.join(allowed)}")
        if not value or len(value) > MAX_VALUE_CHARS or any(ord(c) < 32 for c in value):
            raise LoupeError(f"line {number}: the value of {key} is empty, too long or has control characters")
        values[key] = value
    if kind == "s3" and bool(values.get("access_key_id")) != bool(values.get("secret_access_key")):
        raise LoupeError("An S3 source needs both access_key_id and secret_access_key (or neither).")
    if "password" in values and "username" not in values:
        raise LoupeError("A password goes with a username.")
    if "token" in values and "username" in values:
        raise LoupeError("Give a username and password, or a token, not both.")
    if "endpoint" in values and urlsplit(values["endpoint"]).scheme not in ("http", "https"):
        raise LoupeError("An S3 endpoint is an http:// or https:// address.")
    return values


def save(home: Path, name: str, kind: str, location: str, values: dict[str, str]) -> Path:
    """Write (or replace) the source's credentials, owner-only, atomically."""
    target_folder = folder(home)
    target_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target_folder, 0o700)
    path = target_folder / f"{name}.json"
    temporary = target_folder / f".{name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"kind": kind, "location": location, "values": values}, handle)
    os.replace(temporary, path)
    return path


def remove(home: Path, name: str) -> bool:
    try:
        (folder(home) / f"{name}.json").unlink()
    except FileNotFoundError:
        return False
    return True


def has(home: Path, name: str) -> bool:
    return (folder(home) / f"{name}.json").is_file()


def use_credentials(home: Path) -> None:
    """Register every source's credentials in this process (GDAL options for its prefix; the lookup for
    DICOMweb/STAC clients). Cheap when nothing changed."""
    files = sorted(folder(home).glob("*.json")) if folder(home).is_dir() else []
    with _lock:
        for gone in [p for p in _seen if p.startswith(str(folder(home))) and Path(p) not in files]:
            _, kind, location = _seen.pop(gone)  # removed by an admin: this worker forgets them too
            _register(kind, location, {})
            _by_location.pop(location, None)
        for path in files:
            mtime = path.stat().st_mtime
            if _seen.get(str(path), (None,))[0] == mtime:
                continue
            record = json.loads(path.read_text())
            _register(record["kind"], record["location"], record["values"])
            _seen[str(path)] = (mtime, record["kind"], record["location"])


def for_location(location: str) -> dict[str, str]:
    """The credentials registered for the source whose location ``location`` starts with ({} if none)."""
    with _lock:
        matches = [root for root in _by_location if location.startswith(root)]
        return dict(_by_location[max(matches, key=len)]) if matches else {}


def _register(kind: str, location: str, values: dict[str, str]) -> None:
    _by_location[location] = values
    if kind == "s3":
        from .gdal_vsi import set_path_options

        options = s3_options(values)
        set_path_options(vsis3_prefix(location), options)
        # GDAL lists a prefix with the options of "/vsis3/BUCKET" (no slash): two sources in one bucket list with
        # the keys set last; each reads its own items with its own keys (the longest prefix wins).
        set_path_options("/vsis3/" + location[len("s3://"):].split("/", 1)[0], options)
    elif kind == "http":
        from .gdal_vsi import set_path_options

        set_path_options("/vsicurl/" + location, http_options(values))


def vsis3_prefix(location: str) -> str:
    """``s3://bucket/prefix/`` as GDAL names it."""
    return "/vsis3/" + location[len("s3://"):]


def s3_options(values: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}  # no keys: GDAL's usual chain (environment, ~/.aws, the machine's role)
    if values.get("access_key_id"):
        options = {"AWS_ACCESS_KEY_ID": values["access_key_id"], "AWS_SECRET_ACCESS_KEY": values["secret_access_key"]}
        if values.get("session_token"):
            options["AWS_SESSION_TOKEN"] = values["session_token"]
    if values.get("region"):
        options["AWS_REGION"] = values["region"]
    if values.get("endpoint"):
        endpoint = urlsplit(values["endpoint"])
        options |= {"AWS_S3_ENDPOINT": endpoint.netloc, "AWS_HTTPS": "YES" if endpoint.scheme == "https" else "NO",
                    "AWS_VIRTUAL_HOSTING": "FALSE"}  # path-style: what S3-compatible stores answer
    return options


def http_options(values: dict[str, str]) -> dict[str, str]:
    if values.get("token"):
        return {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {values['token']}"}
    if values.get("username"):
        return {"GDAL_HTTP_AUTH": "BASIC", "GDAL_HTTP_USERPWD": f"{values['username']}:{values.get('password', '')}"}
    return {}


def request_auth(location: str) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """(basic-auth pair, extra headers) for an HTTP client reading ``location`` (DICOMweb, STAC)."""
    values = for_location(location)
    if values.get("token"):
        return None, {"Authorization": f"Bearer {values['token']}"}
    if values.get("username"):
        return (values["username"], values.get("password", "")), {}
    return None, {}
