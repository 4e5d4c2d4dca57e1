"""Normalised band differences an analyst reads before anything else: NDVI (vegetation: near infrared
against red) and NDWI (open water, McFeeters 1996: green against near infrared), computed from the band
values themselves (not the display's stretch), in float, and shown in a colour ramp from −1 to 1.

A pixel where both bands are 0, or that the file masks (nodata), has no index: it shows black and is left
out of the region's statistics.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# name -> (band roles a, b): the index is (a - b) / (a + b)
INDICES = {"NDVI": ("nir", "red"), "NDWI": ("green", "nir")}
# The ramp's stops, value -> RGB: water and bare ground low, dense vegetation high.
RAMP = ((-1.0, (8, 48, 107)), (0.0, (235, 230, 210)), (0.3, (166, 198, 96)), (0.6, (49, 140, 50)),
        (1.0, (0, 68, 27)))


def index_values(dataset, bands: tuple[int, int], window, out_shape: tuple[int, int]) -> np.ndarray:  # noqa: ANN001
    """(a - b) / (a + b) of 1-based ``bands`` over a rasterio ``window`` read at ``out_shape`` (rows, cols),
    float32; NaN where it has no value."""
    from rasterio.enums import Resampling

    a, b = dataset.read(list(bands), window=window, out_shape=(2, *out_shape), resampling=Resampling.average,
                        masked=True).astype(np.float32)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (a - b) / total
    return np.ma.filled(np.ma.masked_where(np.ma.getmaskarray(total) | (total == 0), values), np.nan).astype(np.float32)


def ramp_image(values: np.ndarray) -> Image.Image:
    """``values`` in [-1, 1] through RAMP (NaN black)."""
    stops = np.array([s for s, _ in RAMP], dtype=np.float32)
    colours = np.array([c for _, c in RAMP], dtype=np.float32)
    clipped = np.clip(np.nan_to_num(values, nan=0.0), -1, 1)
    rgb = np.stack([np.interp(clipped, stops, colours[:, k]) for k in range(3)], axis=-1)
    rgb[np.isnan(values)] = 0
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


def summary_text(name: str, values: np.ndarray) -> str:
    """The region's index in words: mean, and the range of the middle 96 % of its pixels."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return f"{name}: no pixel with a value here"
    low, high = np.percentile(defined, [2, 98])
    return f"{name} mean {defined.mean():.3f} (2–98 %: {low:.2f} to {high:.2f})"
