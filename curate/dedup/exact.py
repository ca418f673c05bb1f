"""Exact duplicates: the same file bytes, found from the sha256 stored at embed time.

Byte-identical files need no encoder and no threshold, and they include images that failed to
decode (they still have a hash), so this runs on every point, vector or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.dtypes import StringDType


def exact_edges(hashes: Sequence[str | None] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (first index of a hash, every later index with the same hash); points without a hash
    have no exact duplicates. Returns two int64 arrays (sorted by the later index); a star per hash
    is enough for union-find. Vectorized (one stable sort of the hashes): no dict per point."""
    h = hashes if isinstance(hashes, np.ndarray) and hashes.dtype.kind == "S" else \
        np.asarray(hashes, dtype=StringDType(na_object=None))
    idx = np.flatnonzero(present(h))
    if len(idx) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    vals = h[idx] if h.dtype.kind == "S" else h[idx].astype(StringDType())
    order = np.argsort(vals, kind="stable")  # equal hashes: ascending index
    sv = vals[order]
    new = np.ones(len(sv), dtype=bool)
    new[1:] = sv[1:] != sv[:-1]
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(sv)), 0))
    later = ~new
    a, b = idx[order[run_start[later]]], idx[order[later]]
    by_b = np.argsort(b, kind="stable")
    return a[by_b].astype(np.int64), b[by_b].astype(np.int64)


def present(h: np.ndarray) -> np.ndarray:
    """True where a hash is given: not None / "" (StringDType), not b"" (raw digests, curate.dedup.pool)."""
    if h.dtype.kind == "S":
        return h != b""
    return ~np.equal(h, None) & (h != "")
