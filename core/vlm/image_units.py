"""Encoder inputs cut into units that are encoded independently (one tile, crop set or image each), so
vision features are cached per unit: a request that shares tiles with an earlier one (a pyramid's
tiles, a thumbnail) encodes only the new ones. Per family, the layout the processor produces:

- smolvlm: ``pixel_values`` [1, tiles, 3, H, W] with ``pixel_attention_mask`` [1, tiles, H, W]; the
  encoder returns one tensor of every tile's tokens in order. Unit: one tile.
- qwen2vl: ``pixel_values`` [patches, dim] with ``image_grid_thw`` [images, 3]; per-image tuple out.
  Unit: one image.
- llava-ov: ``pixel_values`` [images, crops, 3, H, W] with ``image_sizes`` [images, 2]; per-image list
  out. Unit: one image.

Units missing from the cache are encoded together in one call (batching kept), then split again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Unit = dict[str, Any]


def split_units(family: str, pixels: dict[str, Any]) -> list[Unit]:
    if family == "smolvlm":
        mask = pixels.get("pixel_attention_mask")
        return [{"pixel_values": pixels["pixel_values"][:, i:i + 1],
                 **({"pixel_attention_mask": mask[:, i:i + 1]} if mask is not None else {})}
                for i in range(pixels["pixel_values"].shape[1])]
    if family == "qwen2vl":
        grids = pixels["image_grid_thw"]
        counts = [int(torch.prod(row)) for row in grids]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [{"pixel_values": pixels["pixel_values"][s:s + n], "image_grid_thw": grids[i:i + 1]}
                for i, (s, n) in enumerate(zip(starts, counts, strict=True))]
    if family == "llava-ov":
        # An image in a prompt of several is encoded without its anyres patches (transformers decides by
        # ``batch_num_images``): the unit keeps that context as batch_num_images 1 (alone) or 2 (one of many).
        count = pixels["pixel_values"].shape[0]
        alone = "batch_num_images" not in pixels or int(pixels["batch_num_images"].sum()) == 1
        return [{"pixel_values": pixels["pixel_values"][i:i + 1], "image_sizes": pixels["image_sizes"][i:i + 1],
                 "batch_num_images": torch.tensor([1 if alone else 2])} for i in range(count)]
    return [pixels]


def join_units(family: str, units: Sequence[Unit]) -> dict[str, Any]:
    """One encoder call's inputs for several units (the inverse of ``split_units``). A lone LLaVA unit
    from a multi-image prompt goes in twice (see ``split_units``): take the first output part."""
    if family == "llava-ov" and len(units) == 1 and int(units[0]["batch_num_images"]) == 2:
        units = [units[0], units[0]]
    if len(units) == 1:
        return dict(units[0])
    if family == "smolvlm":
        joined = {"pixel_values": torch.cat([u["pixel_values"] for u in units], dim=1)}
        if "pixel_attention_mask" in units[0]:
            joined["pixel_attention_mask"] = torch.cat([u["pixel_attention_mask"] for u in units], dim=1)
        return joined
    if family == "qwen2vl":
        return {"pixel_values": torch.cat([u["pixel_values"] for u in units]),
                "image_grid_thw": torch.cat([u["image_grid_thw"] for u in units])}
    if family == "llava-ov":
        return {"pixel_values": torch.cat([u["pixel_values"] for u in units]),
                "image_sizes": torch.cat([u["image_sizes"] for u in units]),
                "batch_num_images": torch.tensor([len(units)])}
    raise ValueError(f"{family}: encoder inputs cannot be joined")


def split_output(family: str, pooled: Any, count: int) -> list[Any]:
    """The encoder's output for ``count`` joined units, one part per unit."""
    if family == "smolvlm":
        (tokens,) = pooled
        return list(tokens.chunk(count)) if count > 1 else [tokens]
    if family in ("qwen2vl", "llava-ov"):
        return list(pooled)
    return [pooled]


def join_output(family: str, parts: Sequence[Any]) -> Any:
    """Per-unit features back into the output format the language model takes."""
    if family == "smolvlm":
        return [torch.cat(list(parts))] if len(parts) > 1 else [parts[0]]
    if family == "qwen2vl":
        return tuple(parts)
    if family == "llava-ov":
        return list(parts)
    return parts[0]
