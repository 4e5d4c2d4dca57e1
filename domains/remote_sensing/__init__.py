"""The remote-sensing domain: GeoTIFF / COG scenes of any size, looked into where the question points.

A question about a scene is answered from its thumbnail plus the tiles the model's own attention
chose, coarse to fine (loupe.core.pyramid); each answer lists the places it looked at, with lat/lon
where the scene is georeferenced, and those tiles are drawn on the viewer. The tiles of every answer
export as GeoJSON (EPSG:4326) for QGIS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from loupe.core.plugins import Budgets, DomainTab, IngestedAsset, VisualContext
from loupe.core.pyramid.answer import PyramidRequest
from loupe.core.pyramid.sources import Box

from . import maptiles
from .geo import Georef, feature, feature_collection, lat_lon_text
from .ingest import ingest_raster, open_raster_item

ANSWER_EXCERPT = 300  # characters of an answer a GeoJSON feature carries

PROMPTS = ("Describe this scene.", "Are there any ships in the harbour?", "How many buildings are there?",
           "Is there any damage to the roads or bridges?")


def georef(meta: dict) -> Georef | None:
    return Georef(meta["crs"], tuple(meta["transform"])) if meta.get("georeferenced") else None


def raster_of(assets: Sequence[IngestedAsset]) -> IngestedAsset | None:
    return next((a for a in assets if a.meta.get("kind") == "raster"), None)


class RemoteSensingDomain:
    name = "remote_sensing"
    title = "Remote sensing"
    accepts = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
    system_prompt = ("You assist an analyst reading satellite and aerial images. The first image is the whole "
                     "scene; the others are parts of it at higher resolution, each placed in the text. Say what "
                     "you see and where (which image and where in it), and say when something is too small to "
                     "tell.")
    default_detail = "low"  # one tile per image: the pyramid supplies the detail
    export_formats = {"geojson": "application/geo+json"}
    upload_note = ("scenes of any side are read in parts; taking one in copies its pixels and builds overviews, which "
                   "must fit the work budget (LOUPE_MAX_WORK_PIXELS). The scene's pixels are kept with its "
                   "coordinates, without its metadata (tags, descriptions); overviews are added when missing. "
                   "The file name is not kept.")

    upload_budget = "max_stream_bytes"  # a scene is read in parts: uploads up to LOUPE_MAX_STREAMED_BYTES

    def ingest(self, source: Path | BinaryIO, limits: Budgets,
               progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        return ingest_raster(source, limits, progress)

    def open_item(self, location: str, limits: Budgets,
                  progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        return open_raster_item(location, limits, progress)

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        raster = raster_of(assets)
        if raster is None or raster.path is None:
            raise ValueError("a remote-sensing case holds its raster")
        meta = raster.meta
        where = georef(meta)
        facts = f"Scene: {meta['description']}, {meta['width']:,} × {meta['height']:,} px."
        if meta.get("corners_lonlat"):
            (lon0, lat0), _, (lon1, lat1), _ = meta["corners_lonlat"]
            facts += f" It spans {lat_lon_text(lat0, lon0)} (top left) to {lat_lon_text(lat1, lon1)} (bottom right)."
        request = PyramidRequest(raster.path, int(meta.get("max_pixels", 10**8)), where.where if where else None)
        return VisualContext(images=[], extra_text=facts, pyramid=request)

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict) -> list[dict]:
        """The tiles the answer was read from, as level-0 boxes with their place and score."""
        raster = raster_of(assets)
        where = georef(raster.meta) if raster is not None else None
        out = []
        for tile in context_meta.get("focus", {}).get("tiles", []):
            box: Box = tuple(tile["box"])  # type: ignore[assignment]
            place = where.where(box) if where else f"x {box[0]:,}–{box[2]:,}, y {box[1]:,}–{box[3]:,} px"
            scale = "full resolution" if tile["level"] == 0 else f"1:{2 ** tile['level']}"
            out.append({"box": list(box), "level": tile["level"], "score": tile["score"],
                        "text": f"{place} · {scale} · relevance {tile['score']:.1f}"})
        return out

    def export(self, assets: Sequence[IngestedAsset], name: str, answers: Sequence[dict] = ()) -> bytes:
        if name != "geojson":
            raise KeyError(name)
        raster = raster_of(assets)
        where = georef(raster.meta) if raster is not None else None
        if where is None:
            from loupe.core.errors import LoupeError

            raise LoupeError("This image has no coordinates (it is not georeferenced), so it has no GeoJSON.")
        features = []
        scene = where.polygon((0, 0, raster.meta["width"], raster.meta["height"]))
        if scene is not None:
            features.append(feature(scene, {"kind": "scene", "description": raster.meta["description"]}))
        for answer in answers:  # each tile an answer read, with the question, the answer and where it is
            text = answer.get("text", "")
            excerpt = text if len(text) <= ANSWER_EXCERPT else text[:ANSWER_EXCERPT].rstrip() + "…"
            for cited in answer.get("citations", []):
                ring = where.polygon(tuple(cited["box"]))
                if ring is not None:
                    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
                    features.append(feature(ring, {
                        "kind": "tile", "question": answer.get("question", ""), "answer": excerpt,
                        "answer_id": answer["id"], "bounds": [min(lons), min(lats), max(lons), max(lats)],
                        "level": cited.get("level"), "score": cited.get("score"), "box_px": cited["box"]}))
        return feature_collection(features)

    # The map's reads (apps/web/maps.py), in the web process: each a bounded tile or one pixel (maptiles.py).
    def map_info(self, meta: dict) -> dict:
        return maptiles.map_info(meta)

    def map_tile(self, location: str, meta: dict, view: str, stretch: str, box: tuple[int, int, int, int],
                 size: tuple[int, int]) -> Image.Image:
        return maptiles.map_tile(location, meta, view, stretch, box, size)

    def map_stretch(self, location: str, meta: dict, view: str, stretch: str) -> dict:
        return maptiles.map_stretch(location, meta, view, stretch)

    def map_pixel(self, location: str, meta: dict, col: int, row: int) -> dict:
        return maptiles.map_pixel(location, meta, col, row)

    def build_tab(self, tab: DomainTab) -> None:
        from .viewer import scene_html

        tab.set_viewer(scene_html)
        tab.add_prompts(PROMPTS)
