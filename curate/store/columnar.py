"""The resident matrix with its ids as one numpy string column instead of a list of Python strings.

Why: `load_vectors` returns one Python string per vector (~90 bytes each with the list), alive while
the matrix is filled: ~0.9 GiB at 10M points, at the moment the memory peaks. On the embedded store
with a sealed cache the ids are built straight from the cache's 16-byte UUIDs, a block at a time;
any other case (a filter, a server store, an unsealed cache) reads through `load_vectors` as before.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numpy.dtypes import StringDType

from curate.store.base import Store
from curate.store.filters import Condition
from curate.store.resident import resident_dtype

HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
DASHES = (8, 13, 18, 23)  # positions of "-" in a canonical UUID string
BLOCK = 1 << 20


def give_back_freed() -> None:
    """Return freed heap memory to the OS (glibc malloc_trim; a no-op elsewhere). glibc keeps freed
    blocks (one per string, per payload dict, and the temporaries of a sort), ~0.2-0.3 GiB per 1M
    points here, and a pool-sized matrix allocated next cannot reuse them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def uuid_column(raw: np.ndarray) -> np.ndarray:
    """Canonical UUID strings of 16-byte rows as a StringDType array (no Python string per row)."""
    out = np.empty(len(raw), dtype=StringDType())
    keep = np.setdiff1d(np.arange(36), DASHES)
    for s in range(0, len(raw), BLOCK):
        r = raw[s : s + BLOCK]
        digits = np.empty((len(r), 32), dtype=np.uint8)
        digits[:, 0::2], digits[:, 1::2] = HEX[r >> 4], HEX[r & 15]
        text = np.full((len(r), 36), ord("-"), dtype=np.uint8)
        text[:, keep] = digits
        out[s : s + len(r)] = text.view("S36").ravel().astype(StringDType())
    return out


def load_resident_columnar(
    store: Store, collection: str, encoder: str, where: list[Condition] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids as StringDType, matrix in the resident dtype), sorted by id: `load_resident`'s result."""
    n = store.count_vectors(collection, encoder)
    dim = int(store.encoders(collection)[encoder]["dim"])
    dtype = resident_dtype(n, dim)
    from curate.store.edge import EdgeStore
    from curate.store.vector_cache import id_order

    if isinstance(store, EdgeStore) and not where and (collection, encoder) not in store._reseal:
        cache = store._cache(collection, encoder)
        sealed = cache.load_sealed()
        if sealed is not None:
            raw_ids, src = sealed
            order = id_order(raw_ids)
            ids, src = uuid_column(raw_ids[order]), src[order]
            del raw_ids, order, sealed
            give_back_freed()  # the id read's temporaries, before the matrix is filled
            return ids, cache.gather(src, dtype)
    ids_list, matrix = store.load_vectors(collection, encoder, where, dtype=dtype)
    return np.array(ids_list, dtype=StringDType()), matrix
