"""The resident matrix with its ids as one numpy string column instead of a list of Python strings.

Why: `load_vectors` returns one Python string per vector (~90 bytes each with the list), alive while
the matrix is filled: ~0.9 GiB at 10M points, at the moment the memory peaks. On the embedded store
the ids are built straight from the cache's 16-byte UUIDs, a block at a time (a `where` filter is
applied by sorted lookup, batch by batch); a server store reads through `load_vectors`.
Two shapes: StringDType (dedup) and `IdColumn` (fixed-width bytes: select, slice; sorted lookups).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.dtypes import StringDType

from curate.store.base import Store
from curate.store.filters import Condition
from curate.store.idcolumn import IdColumn
from curate.store.resident import resident_dtype

T = TypeVar("T")

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


def uuid_text(raw: np.ndarray) -> np.ndarray:
    """Canonical UUID strings of 16-byte rows as one 'S36' array (no Python string per row)."""
    out = np.empty(len(raw), dtype="S36")
    keep = np.setdiff1d(np.arange(36), DASHES)
    for s in range(0, len(raw), BLOCK):
        r = raw[s : s + BLOCK]
        digits = np.empty((len(r), 32), dtype=np.uint8)
        digits[:, 0::2], digits[:, 1::2] = HEX[r >> 4], HEX[r & 15]
        text = np.full((len(r), 36), ord("-"), dtype=np.uint8)
        text[:, keep] = digits
        out[s : s + len(r)] = text.view("S36").ravel()
    return out


def uuid_column(raw: np.ndarray) -> np.ndarray:
    """Canonical UUID strings of 16-byte rows as a StringDType array (no Python string per row)."""
    out = np.empty(len(raw), dtype=StringDType())
    for s in range(0, len(raw), BLOCK):
        out[s : s + BLOCK] = uuid_text(raw[s : s + BLOCK]).astype(StringDType())
    return out


def _sorted_rows(store: Store, collection: str, encoder: str, where: list[Condition] | None):
    """The embedded store's (16-byte ids sorted, cache rows, cache) read, or None for another backend."""
    from curate.store.edge import EdgeStore

    return store.sorted_cache_rows(collection, encoder, where) if isinstance(store, EdgeStore) else None


def _load(store: Store, collection: str, encoder: str, where: list[Condition] | None,
          from_raw: Callable[[np.ndarray], T], from_list: Callable[[list[str]], T]) -> tuple[T, np.ndarray]:
    """(ids, the matrix in the resident dtype), sorted by id: the one read behind both column
    loaders below. The embedded store's 16-byte ids become the column (`from_raw`) before the matrix
    is filled, so the read's temporaries are gone by then; another backend's id list goes through
    `from_list` and is dropped."""
    n = store.count_vectors(collection, encoder)
    dim = int(store.encoders(collection)[encoder]["dim"])
    dtype = resident_dtype(n, dim)
    read = _sorted_rows(store, collection, encoder, where)
    if read is None:
        ids_list, matrix = store.load_vectors(collection, encoder, where, dtype=dtype)
        return from_list(ids_list), matrix
    raw_ids, src, cache = read
    ids = from_raw(raw_ids)
    del raw_ids, read
    give_back_freed()  # the id read's temporaries, before the matrix is filled
    return ids, cache.gather(src, dtype)


def load_resident_columnar(
    store: Store, collection: str, encoder: str, where: list[Condition] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids as StringDType, matrix in the resident dtype), sorted by id: `load_resident`'s result."""
    return _load(store, collection, encoder, where, uuid_column, lambda ids: np.array(ids, dtype=StringDType()))


def load_id_column(
    store: Store, collection: str, encoder: str, where: list[Condition] | None = None
) -> tuple[IdColumn, np.ndarray]:
    """(ids as a sorted `IdColumn`, matrix in the resident dtype): `load_resident` without one Python
    string per vector (36 bytes a row for the embedded store's UUIDs)."""
    return _load(store, collection, encoder, where,
                 lambda raw: IdColumn(uuid_text(raw), check=False),  # sorted by sorted_cache_rows
                 IdColumn.from_strings)
