"""What the map PNG and the report read from the store: payloads, coordinates, field roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.maps import load_map
from curate.store import Store

# Fields every embedded point has, written by `curate embed`: not "metadata" to colour or chart by.
FILE_FIELDS = {"path", "relpath", "sha256", "width", "height", "bytes", "format", "failed", "error"}
# Fields analyses write; each gets its own section, some are also useful colours.
ANALYSIS_FIELDS = {"selected_round", "selection_name", "labeled", "dup_group", "is_duplicate"}
PREFERRED_COLOURS = ("label", "class", "category", "source")


def is_internal(key: str) -> bool:
    return key.startswith("map_")


def metadata_keys(payloads: dict[str, dict[str, Any]]) -> list[str]:
    """Keys that came from the user's manifest, in first-seen order."""
    seen: dict[str, None] = {}
    for p in payloads.values():
        for k in p:
            if k not in FILE_FIELDS and k not in ANALYSIS_FIELDS and not is_internal(k) and not k.startswith("slice_"):
                seen.setdefault(k, None)
    return list(seen)


def slice_keys(payloads: dict[str, dict[str, Any]]) -> list[str]:
    return sorted({k for p in payloads.values() for k, v in p.items() if k.startswith("slice_") and v is True})


def default_colour(payloads: dict[str, dict[str, Any]]) -> str | None:
    keys = metadata_keys(payloads)
    for k in PREFERRED_COLOURS:
        if k in keys:
            return k
    return keys[0] if keys else None


def map_encoder(store: Store, collection: str, encoder: str | None) -> str:
    """The encoder whose map to show: the given one, else the only one mapped, else the only one stored."""
    if encoder is None:
        mapped = sorted(store.get_meta(collection).get("maps", {}))
        if len(mapped) == 1:
            return mapped[0]
    return store.require_encoder(collection, encoder)


@dataclass
class MapFrame:
    ids: list[str]
    xy: np.ndarray
    values: list[Any]
    selected: np.ndarray
    color_by: str


def map_frame(store: Store, collection: str, encoder: str | None, color_by: str | None) -> MapFrame:
    """Coordinates plus one field's values and the selection mask, for the static PNG."""
    enc = map_encoder(store, collection, encoder)
    _, ids, xy = load_map(store, collection, enc)
    payloads = store.payloads(collection)
    key = color_by or default_colour(payloads) or "selected_round"
    known = {k for p in payloads.values() for k in p}
    if key not in known:
        shown = ", ".join(sorted(k for k in known if not is_internal(k) and k not in FILE_FIELDS))
        raise ValueError(f"--color-by {key!r} is not a payload field here; try one of: {shown or 'none'}")
    values = [payloads.get(i, {}).get(key) for i in ids]
    selected = np.array([payloads.get(i, {}).get("selected_round") is not None for i in ids], dtype=bool)
    return MapFrame(ids, xy, values, selected, key)
