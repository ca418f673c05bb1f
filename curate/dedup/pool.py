"""The points dedup looks at, as columns: one numpy array per field, read from the store in batches.

Why columns: at 10M points one Python dict per point (the payload), then lists of ids, paths, sha256
and sort keys, an id -> row dict and a set of ids cost ~1.7 GiB per 1M points, more than the fp16
vector matrix itself. Here strings live in numpy's variable-width StringDType (16 bytes per entry plus
the text when longer than 15 bytes), numbers in float / bool arrays, and ids are matched to the
vector rows by searchsorted on the sorted ids: a few hundred bytes per point in all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.dtypes import StringDType

from curate.dedup.groups import PointInfo
from curate.store import Condition, Store
from curate.store.columnar import give_back_freed, load_resident_columnar

TEXT = StringDType()
MAYBE_TEXT = StringDType(na_object=None)  # sha256 may be missing: None, not ""
FIELDS = ["path", "relpath", "sha256", "width", "height", "bytes", "failed"]


def text_column(values: Sequence[str | None] | np.ndarray, nullable: bool = False) -> np.ndarray:
    dtype = MAYBE_TEXT if nullable else TEXT
    if isinstance(values, np.ndarray) and values.dtype == dtype:
        return values
    return np.array(values if isinstance(values, np.ndarray) else list(values), dtype=dtype)


def positions(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each wanted id in `sorted_ids`, found mask); an id not there gets index 0.

    A stable merge sort of the two arrays (two sorted runs when `wanted` is sorted too: linear),
    not np.searchsorted, which gives wrong answers on StringDType strings longer than 15 bytes
    (numpy 2.4)."""
    n = len(sorted_ids)
    if len(wanted) == n and np.array_equal(sorted_ids, wanted):  # the usual case: every point has a vector
        return np.arange(n, dtype=np.int64), np.ones(n, dtype=bool)
    order = np.argsort(np.concatenate([sorted_ids, wanted]), kind="stable")  # an id sorts before its equal wanted
    is_id = order < n
    last_id = np.maximum.accumulate(np.where(is_id, order, -1))[~is_id]
    w = order[~is_id] - n
    ok = last_id >= 0
    ok[ok] = sorted_ids[last_id[ok]] == wanted[w[ok]]
    pos = np.zeros(len(wanted), dtype=np.int64)
    found = np.zeros(len(wanted), dtype=bool)
    pos[w[ok]], found[w[ok]] = last_id[ok], True
    return pos, found


def lookup(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`positions` for ids in any order (a store's ids come sorted: then no sort is made)."""
    if len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1])):
        return positions(ids, wanted)
    by_id = np.argsort(ids, kind="stable")
    pos, found = positions(ids[by_id], wanted)
    return by_id[pos], found


def first_ranks(relpaths: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rank of every point in "first" order: relative path, then id."""
    order = np.lexsort((ids, relpaths))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


@dataclass
class Pool:
    """The points dedup looks at, as aligned columns (sorted by id when read from a store)."""

    ids: np.ndarray  # StringDType
    paths: np.ndarray  # StringDType: the file verification reads
    hashes: np.ndarray  # sha256 digests ("S33", see hash_column; b"" where unknown) or StringDType (None)
    info: PointInfo
    vectors: np.ndarray | None  # [n_vec, d] rows of points that have a vector
    node_of_row: np.ndarray  # vector row -> index into ids
    failed: np.ndarray | None = None  # True where the image failed to decode or embed
    relpaths: np.ndarray | None = None  # what "first" orders by and names show (None: `paths`)
    # vector rows -> their fp32 vectors, read from the store (set when `vectors` is fp16): the greedy
    # re-scores pairs near the cut with them (curate.dedup.linkage.Judge)
    fp32_rows: Callable[[np.ndarray], np.ndarray] | None = None

    def name(self, node: int) -> str:
        """Short display name: the relative path (what "first" orders by)."""
        return str((self.relpaths if self.relpaths is not None else self.paths)[int(node)])

    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str] | np.ndarray,
        *,
        paths: Sequence[str] | np.ndarray | None = None,
        hashes: Sequence[str | None] | np.ndarray | None = None,
        area: np.ndarray | None = None,
        nbytes: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        vector_ids: Sequence[str] | np.ndarray | None = None,
    ) -> Pool:
        """`paths` are the relative paths ("first" order and names; default: the ids)."""
        ids = text_column(ids)
        n = len(ids)
        rel = text_column(paths) if paths is not None else ids
        vec_row = np.full(n, -1, dtype=np.int64)
        node_of_row = np.empty(0, dtype=np.int64)
        if vectors is not None:
            vids = text_column(vector_ids) if vector_ids is not None else ids
            pos, found = lookup(ids, vids)
            if not found.all():
                raise ValueError(f"vector id {vids[np.flatnonzero(~found)[0]]!r} is not in the pool")
            node_of_row = pos.astype(np.int64)
            vec_row[node_of_row] = np.arange(len(vids))
        info = PointInfo(
            first_rank=first_ranks(rel, ids),
            area=np.zeros(n) if area is None else np.asarray(area, dtype=np.float64),
            nbytes=np.zeros(n) if nbytes is None else np.asarray(nbytes, dtype=np.float64),
            vec_row=vec_row,
        )
        if not (isinstance(hashes, np.ndarray) and hashes.dtype.kind == "S"):
            hashes = text_column(hashes if hashes is not None else [None] * n, nullable=True)
        return cls(ids, rel, hashes, info, vectors, node_of_row, relpaths=rel)


def hash_column(values: list[str | None]) -> np.ndarray:
    """sha256 hex strings as digests ("S33": 33 bytes a point instead of ~113 as a string), each
    behind a 0x01 byte so that no digest reads as b"" (missing), or as StringDType when any value is
    not 64 hex digits."""
    try:
        if all(h is None or len(h) == 64 for h in values):
            return np.array([b"\x01" + bytes.fromhex(h) if h else b"" for h in values], dtype="S33")
    except ValueError:
        pass
    return text_column(values, nullable=True)


def _hex_text(h: np.ndarray) -> np.ndarray:
    """A digest column back to hex strings (to join a batch of other hashes)."""
    if h.dtype.kind != "S":
        return h
    return text_column([b[1:].ljust(32, b"\0").hex() if b else None for b in h.tolist()], nullable=True)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if len({p.dtype.kind for p in parts}) > 1:  # digests and other hashes: all as strings
        parts = [_hex_text(p) for p in parts]
    return np.concatenate(parts)


def _batch_columns(batch: list[tuple[str, dict]]) -> dict[str, np.ndarray]:
    """One scan batch (id, payload dict) as columns; the dicts die with the batch."""
    ids = [pid for pid, _ in batch]
    rel = [str(p.get("relpath") or p.get("path") or pid) for pid, p in batch]
    return {
        "ids": text_column(ids),
        "rel": text_column(rel),
        "paths": text_column([str(p.get("path") or r) for (_, p), r in zip(batch, rel, strict=True)]),
        "hashes": hash_column([str(h) if (h := p.get("sha256")) else None for _, p in batch]),
        "area": np.array([float(p.get("width") or 0) * float(p.get("height") or 0) for _, p in batch]),
        "nbytes": np.array([float(p.get("bytes") or 0) for _, p in batch]),
        "failed": np.array([bool(p.get("failed")) for _, p in batch], dtype=bool),
    }


def scan_columns(store: Store, collection: str, where: list[Condition] | None = None) -> dict[str, np.ndarray]:
    """The payload fields dedup uses, streamed batch by batch into columns, sorted by id."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in store.scan_payload(collection, where or None, FIELDS):
        for k, v in _batch_columns(batch).items():
            parts.setdefault(k, []).append(v)
    if not parts:
        return {}
    cols = {k: _concat(v) for k, v in parts.items()}
    del parts
    order = np.argsort(cols["ids"], kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        cols = {k: v[order] for k, v in cols.items()}
    return cols


def load_pool(store: Store, collection: str, encoder: str | None, where: list[Condition] | None = None) -> Pool:
    """Payload of every point matching `where` plus the encoder's vectors (None: exact only)."""
    cols = scan_columns(store, collection, where)
    if not cols:
        raise ValueError(f"no points in {collection!r}" + (" match --where" if where else ""))
    ids = cols["ids"]
    give_back_freed()
    vectors = None
    vector_ids: np.ndarray | None = None
    if encoder is not None:
        vector_ids, vectors = load_resident_columnar(store, collection, encoder, where or None)
        _, found = positions(ids, vector_ids)
        if not found.all():  # points added mid-read
            vector_ids, vectors = vector_ids[found], vectors[found]
    pool = Pool.from_arrays(ids, paths=cols["rel"], hashes=cols["hashes"], area=cols["area"],
                            nbytes=cols["nbytes"], vectors=vectors, vector_ids=vector_ids)
    pool.paths = cols["paths"]
    failed = cols["failed"]
    if vectors is not None:
        failed |= pool.info.vec_row < 0  # no vector for this encoder: it failed to embed
    pool.failed = failed
    give_back_freed()
    if vectors is not None and vectors.dtype == np.float16:
        def fp32_rows(rows: np.ndarray) -> np.ndarray:
            return store.get_vectors(collection, encoder, pool.ids[pool.node_of_row[rows]].tolist())

        pool.fp32_rows = fp32_rows
    return pool
