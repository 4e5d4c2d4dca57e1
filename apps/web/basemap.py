"""A basemap under the remote-sensing map, where the operator names one: an XYZ tile service in Web Mercator
(EPSG:3857) such as a site's own OpenStreetMap tile server, ``LOUPE_BASEMAP_URL`` with ``{z}``, ``{x}`` and
``{y}`` (and ``LOUPE_BASEMAP_ATTRIBUTION``, shown on the map). The browser fetches those tiles itself, so the
page's Content-Security-Policy lets images come from that origin and nowhere else; the scene's own tiles
still come through Loupe's audited routes. The tile server learns which area is looked at: name only a
server the site trusts with that. Unset, the map is plain and nothing is fetched from outside Loupe.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import urlsplit

from loupe.core.config import Settings
from loupe.core.errors import LoupeError

MAX_ATTRIBUTION = 200


@dataclass(frozen=True)
class Basemap:
    url: str
    attribution: str
    origin: str  # scheme://host[:port], for the Content-Security-Policy

    def as_json(self) -> dict:
        # OpenLayers writes an attribution into the page as HTML: sent escaped, it shows as the text it is
        return {"url": self.url, "attribution": html.escape(self.attribution)}


def basemap_from(settings: Settings) -> Basemap | None:
    """The configured basemap, checked; ``None`` when none is configured. Raises ``LoupeError`` on a URL the
    map cannot use, so ``loupe serve`` stops with the reason instead of showing a broken map."""
    url = (settings.basemap_url or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoupeError(f"LOUPE_BASEMAP_URL must be an http(s) URL of a tile service, not {url[:100]!r}")
    missing = [name for name in ("{z}", "{x}", "{y}") if name not in url]
    if missing:
        raise LoupeError(f"LOUPE_BASEMAP_URL must hold {{z}}, {{x}} and {{y}} (it lacks {', '.join(missing)})")
    if any(char in url for char in " '\";<>\\"):
        raise LoupeError("LOUPE_BASEMAP_URL holds a character a URL cannot (a space, a quote, ';', '<', '>' or '\\')")
    port = f":{parts.port}" if parts.port else ""
    origin = f"{parts.scheme}://{parts.hostname.lower()}{port}"
    return Basemap(url, settings.basemap_attribution.strip()[:MAX_ATTRIBUTION], origin)
