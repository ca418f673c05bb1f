"""The payload fields curate writes itself, and how metadata columns are kept away from them.

A manifest column named like one of curate's fields would silently become curate's tag (a `labeled`
column would exclude rows from selection, dedup would overwrite an `is_duplicate` column). Such a
column is stored under `meta_<name>` instead, and the caller warns about the rename.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

# Facts embed writes per image, tags the analyses write, and the id column of manifests.
CURATE_FIELDS = frozenset(
    {
        "id", "path", "relpath", "folder", "root", "sha256", "width", "height", "bytes", "format",
        "failed", "error", "labeled", "selected_round", "selection_name", "is_duplicate", "dup_group",
    }
)
CURATE_PREFIXES = ("slice_",)  # slice_<name>: true tags
META_PREFIX = "meta_"


def is_curate_field(name: str) -> bool:
    return name in CURATE_FIELDS or name.startswith(CURATE_PREFIXES)


def rename_reserved(columns: list[str], keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """{column: new name} for every column (not in `keep`) that would collide with curate's fields.

    The new name is `meta_<name>`, with more `meta_` prefixes if that is taken too."""
    taken = set(columns)
    renamed: dict[str, str] = {}
    for col in columns:
        if col in keep or not is_curate_field(col):
            continue
        new = META_PREFIX + col
        while new in taken:
            new = META_PREFIX + new
        taken.add(new)
        renamed[col] = new
    return renamed


def rename_message(renamed: dict[str, str], source: object) -> str:
    pairs = ", ".join(f"{old} -> {new}" for old, new in renamed.items())
    return f"{source}: column(s) named like curate's own fields are stored renamed: {pairs}"


def index_by_path(points: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """{stored path or relpath: point id}. An absolute path names one point; a relpath may be
    shared by pools under other roots, so the first point keeps it and paths win over relpaths."""
    by_path: dict[str, str] = {}
    for pid, p in points:
        if p.get("relpath"):
            by_path.setdefault(str(p["relpath"]), pid)
        if p.get("path"):
            by_path[str(p["path"])] = pid
    return by_path


def find_by_path(by_path: dict[str, str], ref: str) -> str | None:
    """The point a path names as written (stored path or relpath), else as an absolute path."""
    return by_path.get(ref) or by_path.get(os.path.abspath(ref))
