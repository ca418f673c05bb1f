"""The columnar pool read (curate.dedup.pool) against the per-point dict read it replaced."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from curate.dedup.exact import exact_edges
from curate.dedup.pool import load_pool, lookup, positions, text_column
from curate.store import Condition, open_store


def _odd_store(tmp_path, kind: str):
    """Points with missing fields, empty and shared sha256, a failed image, points without a vector,
    long and non-ASCII paths (StringDType keeps strings over 15 bytes outside the entry), small batches."""
    rng = np.random.default_rng(3)
    n = 57
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    payloads = []
    for k in range(n):
        p: dict = {"path": f"/data/{'ünïcode' if k % 5 == 0 else 'plain'}/{'deep/' * (k % 4)}img{k:03d}.jpg"}
        if k % 3:
            p["relpath"] = p["path"][6:]
        if k % 4:
            p["sha256"] = f"{k % 17:064x}" if k % 7 else ""
        if k % 6 == 1:
            p["width"], p["height"] = 64 + k, 48
        if k % 5 == 2:
            p["bytes"] = 1000 + k
        if k == 9:
            p = {"failed": True, "sha256": f"{9 % 17:064x}"}  # failed: no path at all
        if k % 11 == 4:
            p.pop("path", None)
        p["tag"] = k % 2
        payloads.append(p)
    with_vec = [k for k in range(n) if k not in (9, 13, 40)]
    x = rng.standard_normal((len(with_vec), 8)).astype(np.float32)
    store = open_store(str(tmp_path / "s")) if kind == "edge" else open_store(url=":memory:")
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"dim": 8})
    store.upsert_points("pool", ids, payloads)
    store.upsert_vectors("pool", "enc", [ids[k] for k in with_vec], x)
    return store


def _reference(store, where):
    """What load_pool held before: one dict per point, lists, an id -> row dict."""
    payload = store.payloads("pool", where, ["path", "relpath", "sha256", "width", "height", "bytes", "failed"])
    ids = sorted(payload)
    rel = [str(payload[i].get("relpath") or payload[i].get("path") or i) for i in ids]
    vids, vec = store.load_vectors("pool", "enc", where)
    pos = {p: k for k, p in enumerate(ids)}
    node_of_row = np.array([pos[v] for v in vids])
    vec_row = np.full(len(ids), -1)
    vec_row[node_of_row] = np.arange(len(vids))
    return {
        "ids": ids,
        "rel": rel,
        "paths": [str(payload[i].get("path") or r) for i, r in zip(ids, rel, strict=True)],
        "hashes": [payload[i].get("sha256") for i in ids],
        "area": [float(payload[i].get("width") or 0) * float(payload[i].get("height") or 0) for i in ids],
        "nbytes": [float(payload[i].get("bytes") or 0) for i in ids],
        "failed": [bool(payload[i].get("failed")) or vec_row[k] < 0 for k, i in enumerate(ids)],
        "order": sorted(range(len(ids)), key=lambda k: f"{rel[k]}\0{ids[k]}"),
        "node_of_row": node_of_row,
        "vec_row": vec_row,
        "vectors": vec,
    }


@pytest.mark.parametrize("kind", ["edge", "memory"])
@pytest.mark.parametrize("where", [None, [Condition("tag", "==", 1)]])
def test_columnar_pool_equals_the_dict_read(tmp_path, kind, where, monkeypatch) -> None:
    store = _odd_store(tmp_path, kind)
    real_scan = store.scan_payload
    monkeypatch.setattr(store, "scan_payload", lambda c, where=None, fields=None, batch=10_000:
                        real_scan(c, where, fields, batch=7))
    try:
        ref = _reference(store, where)
        pool = load_pool(store, "pool", "enc", where)
    finally:
        store.close()
    assert pool.ids.tolist() == ref["ids"]
    assert pool.relpaths.tolist() == ref["rel"] and [pool.name(k) for k in range(len(ref["ids"]))] == ref["rel"]
    assert pool.paths.tolist() == ref["paths"]
    assert pool.hashes.dtype == "S33"  # 64-hex sha256: held as digests
    assert [h[1:].ljust(32, b"\0").hex() if h else None for h in pool.hashes.tolist()] == \
        [h or None for h in ref["hashes"]]
    assert pool.info.area.tolist() == ref["area"] and pool.info.nbytes.tolist() == ref["nbytes"]
    assert pool.failed.tolist() == ref["failed"] and pool.failed.sum() >= 2
    assert np.argsort(pool.info.first_rank).tolist() == ref["order"]
    assert pool.node_of_row.tolist() == ref["node_of_row"].tolist()
    assert pool.info.vec_row.tolist() == ref["vec_row"].tolist()
    assert np.array_equal(pool.vectors, ref["vectors"])
    a, b = exact_edges(pool.hashes)
    ra, rb = exact_edges(ref["hashes"])  # strings; the function is checked by brute force below
    assert a.tolist() == ra.tolist() and b.tolist() == rb.tolist() and len(a) > 0


def test_digest_and_other_hashes_in_one_scan() -> None:
    from curate.dedup.pool import _concat, hash_column

    a, b = hash_column(["0" * 64, None, "f" * 64]), hash_column(["h1", "0" * 64])
    assert a.dtype == "S33" and b.dtype.kind == "T"
    assert _concat([a, b]).tolist() == ["0" * 64, None, "f" * 64, "h1", "0" * 64]
    assert exact_edges(_concat([a, b]))[1].tolist() == [4] and exact_edges(a)[0].tolist() == []


def test_exact_edges_equal_a_dict_per_hash() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        hashes = [[None, "", "h1", "h2", "x" * 64, "é" * 20][int(i)] for i in rng.integers(0, 6, rng.integers(0, 30))]
        first: dict[str, int] = {}
        ra, rb = [], []
        for k, h in enumerate(hashes):
            if h and first.setdefault(h, k) != k:
                ra.append(first[h])
                rb.append(k)
        a, b = exact_edges(hashes)
        assert a.tolist() == ra and b.tolist() == rb


def test_id_lookup_on_long_strings() -> None:
    """np.searchsorted is wrong on StringDType strings over 15 bytes; the merge is not."""
    rng = np.random.default_rng(1)
    ids = sorted({str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(300)} | {"a", "b" * 15, "c" * 16})
    wanted = [ids[int(k)] for k in rng.integers(0, len(ids), 200)] + ["zz", "", "0" * 40]
    pos, found = positions(text_column(ids), text_column(wanted))
    assert found.tolist() == [w in ids for w in wanted]
    assert [ids[p] for p, f in zip(pos, found, strict=True) if f] == [w for w in wanted if w in ids]
    shuffled = [ids[int(k)] for k in rng.permutation(len(ids))]
    pos, found = lookup(text_column(shuffled), text_column(wanted))
    assert [shuffled[p] for p, f in zip(pos, found, strict=True) if f] == [w for w in wanted if w in ids]
