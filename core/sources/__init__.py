"""Data sources: named places an admin lets Loupe read items from where they live.

A case opened from a source holds a reference (the source and the item's path there), never a copy of a
giant image: its tiles are read on demand, through the same access check and audit as stored files.
Kinds so far: ``folder`` (a server folder), ``http`` (an HTTP(S) prefix of Cloud-Optimized GeoTIFFs,
read with range requests through GDAL's /vsicurl/), ``s3`` (an S3 prefix of them, through /vsis3/; keys in
``credentials``), ``stac_api`` (a STAC API's search), ``stac`` (a static STAC catalogue, stac.py) and
``dicomweb`` (a PACS: series searched with QIDO-RS, read with WADO-RS, dicomweb.py).
"""

from . import credentials
from .locations import (
    KINDS,
    SourceSpec,
    check_item,
    check_readers,
    check_spec,
    item_location,
    item_under,
    list_items,
    search_items,
)

__all__ = ["KINDS", "SourceSpec", "check_item", "check_readers", "check_spec", "credentials", "item_location",
           "item_under", "list_items", "search_items"]
