"""Band presets: which bands show as red, green and blue.

Bands are found by what the file says (colour interpretation, band descriptions); a 4-band image that
names only red, green and blue is taken as R, G, B, near infrared, the usual order of aerial RGBN
products (the viewer says so).
"""

from __future__ import annotations

from .indices import INDICES

TRUE_COLOUR = "true colour"
FALSE_COLOUR = "false colour (near infrared as red)"
GREY = "first band (grey)"
MAX_SINGLE_BANDS = 16  # bands offered one at a time (a hyperspectral cube has hundreds)


def band_roles(colorinterp: list[str], descriptions: list[str | None]) -> dict[str, int]:
    """1-based band numbers by role: red, green, blue, nir where known."""
    roles: dict[str, int] = {}
    for number, (interp, text) in enumerate(zip(colorinterp, descriptions, strict=True), start=1):
        label = (text or "").lower()
        if interp in ("red", "green", "blue"):
            roles.setdefault(interp, number)
        elif "nir" in label or "infrared" in label:
            roles.setdefault("nir", number)
    if len(colorinterp) == 4 and "nir" not in roles and {"red", "green", "blue"} <= set(roles):
        roles["nir"] = next(n for n in range(1, 5) if n not in roles.values())
    return roles


def presets(roles: dict[str, int], count: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    if {"red", "green", "blue"} <= set(roles):
        out[TRUE_COLOUR] = [roles["red"], roles["green"], roles["blue"]]
    elif count >= 3:
        out[TRUE_COLOUR] = [1, 2, 3]
    if {"nir", "red", "green"} <= set(roles):
        out[FALSE_COLOUR] = [roles["nir"], roles["red"], roles["green"]]
    out[GREY] = [1]
    for name, (a, b) in INDICES.items():  # computed from the two bands' values (indices.py)
        if {a, b} <= set(roles):
            out[name] = [roles[a], roles[b]]
    for number in range(2, min(count, MAX_SINGLE_BANDS) + 1):  # any band alone
        out[f"band {number} (grey)"] = [number]
    return out


def is_index(preset: str) -> bool:
    return preset in INDICES
