"""STAC catalogues (static, as files or over HTTP) read with pystac: their items, and the image to open.

A case keeps the chosen asset's path relative to the catalogue's own folder, so reads go through the same
checks as any item of a folder or HTTP source; an asset stored outside that folder is refused.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InputRejected

# Asset keys that hold the picture an analyst looks at, best first (else the first GeoTIFF asset by key)
PREFERRED_KEYS = ("visual", "image", "data")
GEOTIFF = "image/tiff"


def catalogue_root(location: str) -> str:
    """The folder (a path or URL prefix ending in '/') that holds the catalogue file and its assets."""
    return location.rsplit("/", 1)[0] + "/"


def is_remote(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


def stac_items(location: str, limit: int) -> list[str]:
    """Item ids of the catalogue at ``location`` (its children too), at most ``limit``, sorted."""
    import pystac

    catalogue = pystac.read_file(location)
    if not isinstance(catalogue, pystac.Catalog):  # a Collection is a Catalog; a lone Item is not
        raise InputRejected("The source's location is not a STAC catalogue or collection.")
    ids = []
    for item in catalogue.get_items(recursive=True):
        ids.append(item.id)
        if len(ids) >= limit:
            break
    return sorted(ids)


def image_href(item) -> str:  # noqa: ANN001 - a pystac.Item
    """The absolute href of the item's picture: its GeoTIFF asset under a preferred key, else the first one."""
    images = {key: asset for key, asset in item.assets.items() if (asset.media_type or GEOTIFF).startswith(GEOTIFF)}
    key = next((k for k in PREFERRED_KEYS if k in images), None) or next(iter(sorted(images)), None)
    if key is None:
        raise InputRejected("This item has no GeoTIFF asset to open.")
    return images[key].get_absolute_href() or ""


def stac_asset_path(location: str, item_id: str) -> str:
    """The chosen GeoTIFF asset of item ``item_id``, relative to the catalogue's folder."""
    import pystac

    catalogue = pystac.read_file(location)
    item = next((i for i in catalogue.get_items(item_id, recursive=True)), None)
    if item is None:
        raise InputRejected("No such item in this catalogue.")
    href = image_href(item)
    root = catalogue_root(location)
    if is_remote(root):
        inside = href.startswith(root)
        relative = href[len(root):]
    else:
        path = Path(unquote(urlsplit(href).path) if href.startswith("file:") else href)
        inside = path.resolve().is_relative_to(Path(root).resolve())
        relative = str(path.resolve().relative_to(Path(root).resolve())) if inside else ""
    if not inside:
        raise InputRejected("This item's image is outside its catalogue's folder: it is not read.")
    return unquote(relative) if is_remote(root) else relative
