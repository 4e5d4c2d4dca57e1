"""Deep zoom for giant images (slides, scenes): OpenSeadragon in the page (vendored, see vendor/), its tiles
from ``/case-tiles/ASSET/LEVEL/COL_ROW.jpg``, read on demand from the image's own pyramid where it is kept
(the store, or its data source by reference).

Every tile is access-checked for the signed-in user; a view is audited once, when its description
(``/case-tiles/ASSET/info.json``) is asked for, so a zoom across hundreds of tiles is one audit entry.
Levels follow OpenSeadragon's numbering: the top level is full resolution, each one below is half as wide.
"""

from __future__ import annotations

import io
import math
import threading
import weakref
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from loupe.core.errors import AccessDenied, InputRejected, LoupeError
from loupe.core.pyramid.answer import open_pyramid

from .gate import WebSecurity

TILE = 256
JPEG_QUALITY = 85
VENDOR = Path(__file__).parent / "vendor"
VENDOR_SUFFIXES = (".js", ".css", ".png")
DEEP_ZOOM_KINDS = ("slide_level", "raster")  # assets read as a pyramid: the viewer zooms them
HEAD = """<script src="/vendor/openseadragon/openseadragon.min.js"></script>
<script>
(() => {
  // Each .loupe-deepzoom element (core.plugins.deep_zoom_element) gets an OpenSeadragon viewer of its tiles.
  const start = (element) => {
    element.dataset.ready = "1";
    const base = element.dataset.tiles;
    fetch(base + "/info.json", {credentials: "same-origin"})
      .then((answer) => answer.ok ? answer.json() : Promise.reject(answer.status))
      .then((info) => {
        element.loupeViewer = OpenSeadragon({
          element, prefixUrl: "/vendor/openseadragon/images/", showNavigator: true, maxZoomPixelRatio: 2,
          // 2D canvas: OpenSeadragon's WebGL drawer is several times slower where WebGL is emulated on the CPU
          drawer: "canvas",
          immediateRender: true,  // the level asked for at once, not every coarser level on the way to it
          maxTilesPerFrame: 16,  // tiles asked for per frame (1 by default: a 16-tile zoom step took 16 frames)
          crossOriginPolicy: false, loadTilesWithAjax: true, ajaxWithCredentials: true,
          tileSources: {width: info.width, height: info.height, tileSize: info.tile, tileOverlap: 0,
                        minLevel: 0, maxLevel: info.max_level,
                        getTileUrl: (level, x, y) => `${base}/${level}/${x}_${y}.jpg`}});
        // the tiles the chosen answer read: outlined, numbered, zoomed to when clicked
        const viewer = element.loupeViewer;
        viewer.addOnceHandler("tile-loaded", () => requestAnimationFrame(() => requestAnimationFrame(() => {
          element.dataset.firstDrawn = String(performance.now());  // a first tile on screen (loupe bench viewer)
        })));
        viewer.addOnceHandler("open", () => {
          JSON.parse(element.dataset.boxes || "[]").forEach(([x0, y0, x1, y1], n) => {
            const box = Object.assign(document.createElement("button"), {type: "button", className: "loupe-dz-box",
                                                                        textContent: String(n + 1)});
            box.setAttribute("aria-label", `Zoom to tile ${n + 1} read for this answer`);
            const place = viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0);
            viewer.addOverlay({element: box, location: place});
            new OpenSeadragon.MouseTracker({element: box, clickHandler: () => viewer.viewport.fitBounds(place)});
          });
          element.dataset.shown = "1";
        });
      })
      .catch(() => { element.textContent = "The zoomable view could not be loaded."; });
  };
  new MutationObserver(() => document.querySelectorAll(".loupe-deepzoom:not([data-ready])").forEach(start))
    .observe(document.documentElement, {childList: true, subtree: true});
})();
</script>"""


def max_level(width: int, height: int) -> int:
    return max(0, math.ceil(math.log2(max(width, height, 1))))


def tile_box(width: int, height: int, level: int, col: int, row: int) -> tuple[tuple[int, int, int, int],
                                                                               tuple[int, int]] | None:
    """The level-0 box of tile (col, row) of ``level`` and its size in pixels; None outside the image."""
    top = max_level(width, height)
    if not 0 <= level <= top or col < 0 or row < 0:
        return None
    scale = 2 ** (top - level)
    level_w, level_h = math.ceil(width / scale), math.ceil(height / scale)
    x0, y0 = col * TILE, row * TILE
    if x0 >= level_w or y0 >= level_h:
        return None
    x1, y1 = min(x0 + TILE, level_w), min(y0 + TILE, level_h)
    box = (x0 * scale, y0 * scale, min(width, x1 * scale), min(height, y1 * scale))
    return box, (x1 - x0, y1 - y0)


_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _reading(pyramid: object) -> AbstractContextManager:
    """The lock of one open image: the viewer asks for several tiles at once, from the server's threads, and
    a GDAL dataset is read by one at a time; a source that says it is thread-safe (OpenSlide) is read at once."""
    if getattr(getattr(pyramid, "source", None), "thread_safe", False):
        return nullcontext()
    with _locks_guard:
        return _locks.setdefault(pyramid, threading.Lock())


def build_router(security: WebSecurity) -> APIRouter:
    router = APIRouter()
    store = security.service.store

    def pyramid_of(request: Request, asset_id: int, audit: bool):  # noqa: ANN202 - a core Pyramid
        user = security.user_for(request.scope)
        if user is None:
            raise PermissionError
        asset, location = store.asset_for_view(user, asset_id, audit=audit)
        meta = asset.meta or {}
        if meta.get("kind") not in DEEP_ZOOM_KINDS:
            raise AccessDenied("Not a zoomable image.")
        if meta.get("level_of", 1) > 1 and asset.source_id is None:  # an uploaded DICOM slide: a file per level
            case = store.case_for_view(user, asset.case_id, audit=False)
            location = tuple(store.assets.path_for(a.sha256) for a in case.assets
                             if (a.meta or {}).get("kind") == "slide_level")
        return open_pyramid(location, TILE, int(meta.get("max_pixels", 10**8)))

    @router.get("/case-tiles/{asset_id}/info.json", include_in_schema=False)
    def tile_info(asset_id: int, request: Request) -> Response:
        try:
            source = pyramid_of(request, asset_id, audit=True).source
        except PermissionError:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        except LoupeError:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"width": source.width, "height": source.height, "tile": TILE,
                             "max_level": max_level(source.width, source.height)})  # the gate marks it no-store

    @router.get("/case-tiles/{asset_id}/{level}/{col}_{row}.jpg", include_in_schema=False)
    def tile(asset_id: int, level: int, col: int, row: int, request: Request) -> Response:
        try:
            pyramid = pyramid_of(request, asset_id, audit=False)
            source = pyramid.source
            placed = tile_box(source.width, source.height, level, col, row)
            if placed is None:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            with _reading(pyramid):  # one read at a time per image, unless its reader is thread-safe
                image = source.read(*placed).convert("RGB")
        except PermissionError:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        except InputRejected as exc:  # the image's own budgets: said, not hidden
            return JSONResponse({"detail": str(exc)}, status_code=422)
        except LoupeError:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return Response(buffer.getvalue(), media_type="image/jpeg")  # the gate marks it no-store, as every case read

    @router.get("/vendor/{path:path}", include_in_schema=False)
    def vendor(path: str) -> Response:
        """The vendored viewers' built files (scripts, styles, icons; no CDN at run time), nothing outside."""
        target = (VENDOR / path).resolve()
        if VENDOR.resolve() not in target.parents or not target.is_file() or target.suffix not in VENDOR_SUFFIXES:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return FileResponse(target)

    return router
