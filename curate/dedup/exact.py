"""Exact duplicates: the same file bytes, found from the sha256 stored at embed time.

Byte-identical files need no encoder and no threshold, and they include images that failed to
decode (they still have a hash), so this runs on every point, vector or not.
"""

from __future__ import annotations

import numpy as np


def exact_edges(hashes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Edges (first index of a hash, every later index with the same hash); points without a hash
    have no exact duplicates. Returns two int64 arrays; a star per hash is enough for union-find."""
    by_hash: dict[str, int] = {}
    a: list[int] = []
    b: list[int] = []
    for idx, h in enumerate(hashes):
        if not h:
            continue
        first = by_hash.setdefault(h, idx)
        if first != idx:
            a.append(first)
            b.append(idx)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
