"""The scene on a map: OpenLayers in the page (bundled from viewers/map.js by `make vendor`), its tiles, stretch
and pixel values read by the domain (``map_info``, ``map_tile``, ``map_stretch``, ``map_pixel``) from the scene
where it is kept.

``/case-map/ASSET/info.json`` opens the view (audited once as ``asset.view``); tiles
``/case-map/ASSET/LEVEL/COL_ROW.jpg?view=…&stretch=…`` (JPEG; PNG where the tile holds no-data pixels, kept
clear), the values a stretch shows black and white
``/case-map/ASSET/stretch.json?view=…&stretch=…`` and ``/case-map/ASSET/pixel/COL_ROW.json`` are access-checked
on every read. Levels are numbered as the deep-zoom tiles are: the top level is full resolution. A basemap
the operator configured (basemap.py) is named in ``info.json`` for a scene with coordinates.
"""

from __future__ import annotations

import io

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from loupe.core.errors import InputRejected, LoupeError

from .bundles import bundle_head
from .deepzoom import tile_box
from .gate import WebSecurity

JPEG_QUALITY = 85
HEAD = bundle_head("loupe-map", "loupe-map", stylesheet=True)  # the viewer's script, loaded early


def build_router(security: WebSecurity) -> APIRouter:
    router = APIRouter()
    service = security.service
    domains: dict[int, str] = {}  # asset -> its case's domain (never changes)

    def opened(request: Request, asset_id: int, audit: bool):  # noqa: ANN202 - (domain, asset meta, location)
        user = security.user_for(request.scope)
        if user is None:
            raise PermissionError
        asset, location = service.store.asset_for_view(user, asset_id, audit=audit)
        if asset_id not in domains:
            domains[asset_id] = service.store.case_for_view(user, asset.case_id, audit=False).domain
        domain = service.domain(domains[asset_id])
        meta = asset.meta or {}
        if meta.get("kind") != "raster" or not callable(getattr(domain, "map_tile", None)):
            raise LoupeError("Not a map.")
        return domain, meta, location

    def answered(read) -> Response:  # noqa: ANN001 - a function returning a Response
        try:
            return read()
        except PermissionError:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        except InputRejected as exc:  # the scene's own budgets, a point outside it: said, not hidden
            return JSONResponse({"detail": str(exc)}, status_code=422)
        except LoupeError:  # no such image, or not this user's: the same answer
            return JSONResponse({"detail": "Not Found"}, status_code=404)

    @router.get("/case-map/{asset_id}/info.json", include_in_schema=False)
    def map_info(asset_id: int, request: Request) -> Response:
        def read() -> Response:
            domain, meta, _ = opened(request, asset_id, audit=True)
            info = domain.map_info(meta)
            if security.basemap and info.get("proj4"):  # a scene with coordinates can lie over the basemap
                info["basemap"] = security.basemap.as_json()
            return JSONResponse(info)
        return answered(read)

    @router.get("/case-map/{asset_id}/{level}/{col}_{row}.jpg", include_in_schema=False)
    def map_tile(asset_id: int, level: int, col: int, row: int, request: Request, view: str = "",
                 stretch: str = "") -> Response:
        def read() -> Response:
            domain, meta, location = opened(request, asset_id, audit=False)
            placed = tile_box(int(meta["width"]), int(meta["height"]), level, col, row)
            if placed is None:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            image = domain.map_tile(location, meta, view[:100], stretch[:20], *placed)
            buffer = io.BytesIO()
            if image.mode == "RGBA":  # a tile holding no-data pixels: PNG keeps them clear
                image.save(buffer, "PNG", compress_level=1)
                return Response(buffer.getvalue(), media_type="image/png")
            image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
            return Response(buffer.getvalue(), media_type="image/jpeg")  # the gate marks it no-store
        return answered(read)

    @router.get("/case-map/{asset_id}/stretch.json", include_in_schema=False)
    def map_stretch(asset_id: int, request: Request, view: str = "", stretch: str = "") -> Response:
        def read() -> Response:
            domain, meta, location = opened(request, asset_id, audit=False)
            return JSONResponse(domain.map_stretch(location, meta, view[:100], stretch[:20]))
        return answered(read)

    @router.get("/case-map/{asset_id}/pixel/{col}_{row}.json", include_in_schema=False)
    def map_pixel(asset_id: int, col: int, row: int, request: Request) -> Response:
        def read() -> Response:
            domain, meta, location = opened(request, asset_id, audit=False)
            return JSONResponse(domain.map_pixel(location, meta, col, row))
        return answered(read)

    return router
