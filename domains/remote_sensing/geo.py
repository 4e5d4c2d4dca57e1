"""Where things are: pixel ↔ the file's CRS ↔ WGS84 (pyproj), and GeoJSON (RFC 7946: EPSG:4326 lon/lat,
counter-clockwise exterior rings), which QGIS and every web map read as is."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[int, int, int, int]
EDGE_POINTS = 8  # points per polygon edge: a projected rectangle is not a rectangle in lon/lat


@dataclass(frozen=True)
class Georef:
    crs: str  # as the file gives it (EPSG code or WKT)
    transform: tuple[float, ...]  # affine a, b, c, d, e, f: x = a*col + b*row + c; y = d*col + e*row + f

    def to_crs(self, col: float, row: float) -> tuple[float, float]:
        a, b, c, d, e, f = self.transform
        return a * col + b * row + c, d * col + e * row + f

    def to_lonlat(self, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        """Pixel (col, row) points as (lon, lat); points off the Earth (a geostationary disk's corners) are NaN."""
        xs, ys = zip(*(self.to_crs(c, r) for c, r in points), strict=True)
        lons, lats = _transformer(self.crs).transform(xs, ys, errcheck=False)
        return [(lon, lat) if math.isfinite(lon) and math.isfinite(lat) and abs(lat) <= 90 else (math.nan, math.nan)
                for lon, lat in zip(lons, lats, strict=True)]

    def centre(self, box: Box) -> tuple[float, float]:
        x0, y0, x1, y1 = box
        return self.to_lonlat([((x0 + x1) / 2, (y0 + y1) / 2)])[0]

    def bounds(self, box: Box) -> tuple[float, float, float, float] | None:
        """The box's (west, south, east, north) in degrees, from its outline; None if any of it is off the Earth."""
        ring = self.polygon(box)
        if ring is None:
            return None
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        return min(lons), min(lats), max(lons), max(lats)

    def where(self, box: Box) -> str:
        """Where the box is, as its north-west and south-east corners (its centre if part is off the Earth)."""
        bounds = self.bounds(box)
        if bounds is None:
            lon, lat = self.centre(box)
            return lat_lon_text(lat, lon)
        west, south, east, north = bounds
        return f"{lat_lon_text(north, west)} to {lat_lon_text(south, east)}"

    def polygon(self, box: Box) -> list[list[float]] | None:
        """The box's outline as a closed, counter-clockwise lon/lat ring; None if any of it is off the Earth."""
        x0, y0, x1, y1 = box
        steps = [i / EDGE_POINTS for i in range(EDGE_POINTS)]
        outline = ([(x0 + (x1 - x0) * t, y0) for t in steps] + [(x1, y0 + (y1 - y0) * t) for t in steps]
                   + [(x1 - (x1 - x0) * t, y1) for t in steps] + [(x0, y1 - (y1 - y0) * t) for t in steps])
        ring = self.to_lonlat(outline)
        if any(math.isnan(lon) for lon, _ in ring):
            return None
        if _signed_area(ring) < 0:  # clockwise (north-up pixels walked left-right-down): turn it round
            ring.reverse()
        ring.append(ring[0])
        return [[round(lon, 7), round(lat, 7)] for lon, lat in ring]


def _transformer(crs: str):  # noqa: ANN202 - a pyproj Transformer, built per CRS
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def _signed_area(ring: Sequence[tuple[float, float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, [*ring[1:], ring[0]], strict=True)) / 2


def lat_lon_text(lat: float, lon: float) -> str:
    if math.isnan(lat) or math.isnan(lon):
        return "off the Earth's disk"
    return f"{abs(lat):.5f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.5f}° {'E' if lon >= 0 else 'W'}"


def feature(ring: list[list[float]], properties: dict) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": properties}


def feature_collection(features: Sequence[dict]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()
