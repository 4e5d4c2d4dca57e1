"""The one check every http(s) source address passes: a plain http(s) URL with no credentials in it."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import LoupeError


def check_address(location: str, what: str) -> None:
    """Refuse ``location`` unless it is a plain http(s) URL; ``what`` says what the address should be."""
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoupeError(what)
    if parts.username or parts.password:
        raise LoupeError("Leave credentials out of the address: the database would keep them.")
    if parts.query or parts.fragment:
        raise LoupeError("A source's address is plain: no '?' query or '#' fragment.")
