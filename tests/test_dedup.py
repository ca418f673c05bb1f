"""Dedup against brute force: identical groups, right keepers, outputs and payload tags."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curate.dedup import Components, Pool, find_groups, groups_of, nearest_neighbour_sample, run_dedup
from curate.dedup.semdedup import clustered_near_edges
from curate.store import open_store


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(g.tolist()) for g in groups_of(labels)}


def _ref_components(n: int, a: np.ndarray, b: np.ndarray) -> set[frozenset[int]]:
    g = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return _partition(connected_components(g, directed=False)[1])


def test_components_match_reference_with_many_flushes() -> None:
    rng = np.random.default_rng(0)
    n = 500
    a, b = rng.integers(0, n, 400), rng.integers(0, n, 400)
    comps = Components(n, buffer=7)  # tiny buffer: many partial merges
    for s in range(0, 400, 13):
        comps.add(a[s : s + 13], b[s : s + 13])
    assert _partition(comps.result()) == _ref_components(n, a, b)
    assert comps.edges_seen == 400


def _pool(seed: int = 0) -> tuple[Pool, np.ndarray, list[str | None]]:
    """150 distinct images, 25 near copies (cos ~0.99), 10 byte copies, 3 chains (a~b~c where a and
    c are below the cut: union-find must join them), and one failed image (no vector) whose bytes
    equal a good image."""
    rng = np.random.default_rng(seed)
    d = 24
    base = rng.standard_normal((150, d))
    rows = [base]
    near = base[:25] + 0.1 * rng.standard_normal((25, d))
    rows.append(near)
    byte_copies = base[30:40]
    rows.append(byte_copies)
    chain = []
    for c in range(3):  # u, v=mid, w: cos(u,w) low, each to mid high
        u = base[50 + c]
        w = u + 0.45 * np.linalg.norm(u) / np.sqrt(d) * rng.standard_normal(d)
        chain.append((u + w) / 2)
        chain.append(w)
    rows.append(np.array(chain))
    x = np.concatenate(rows).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    hashes: list[str | None] = [f"h{k}" for k in range(n)]
    for k in range(10):
        hashes[175 + k] = hashes[30 + k]
    ids = [str(uuid.UUID(int=int(rng.integers(1 << 62)) * 7 + k)) for k in range(n + 1)]
    hashes.append(hashes[0])  # the failed image: same bytes as image 0, no vector
    order = np.argsort(ids)
    ids_sorted = [ids[k] for k in order]
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    pool = Pool.from_arrays(
        ids_sorted,
        paths=[f"/pool/img{k:04d}.jpg" for k in order],
        hashes=[hashes[k] for k in order],
        area=np.array([(k % 7) * 100.0 for k in order]),
        nbytes=np.array([float(k) for k in order]),
        vectors=x,
        vector_ids=ids[:n],
    )
    return pool, x, [hashes[k] for k in order]


def _brute_groups(pool: Pool, x: np.ndarray, thr: float) -> set[frozenset[str]]:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    vi, vj = np.nonzero(np.triu(s >= thr, 1))
    a = list(pool.node_of_row[vi])
    b = list(pool.node_of_row[vj])
    for p in range(len(pool.ids)):
        for q in range(p + 1, len(pool.ids)):
            if pool.hashes[p] and pool.hashes[p] == pool.hashes[q]:
                a.append(p)
                b.append(q)
    part = _ref_components(len(pool.ids), np.array(a), np.array(b))
    return {frozenset(pool.ids[m] for m in g) for g in part}


def _groups(table: pl.DataFrame) -> set[frozenset[str]]:
    return {frozenset(g["id"].to_list()) for g in table.partition_by("group")}


@pytest.mark.parametrize("chunk", [None, 32])
def test_groups_identical_to_brute_force(chunk: int | None) -> None:
    pool, x, _ = _pool()
    for thr in (0.9, 0.95):
        res = find_groups(pool, threshold=thr, keep="first", mode="exact", device="cpu", chunk=chunk,
                          linkage="single")
        assert _groups(res.table) == _brute_groups(pool, x, thr)
        assert res.n_removed == sum(len(g) - 1 for g in _brute_groups(pool, x, thr))
        assert res.n_removed + (res.n_points - len(res.table)) + res.n_groups == res.n_points


def test_chains_and_failed_images_join_groups() -> None:
    pool, x, _ = _pool()
    res = find_groups(pool, threshold=0.9, keep="first", mode="exact", device="cpu")
    t = res.table
    failed_id = pool.ids[[k for k, r in enumerate(pool.info.vec_row) if r < 0][0]]
    row = t.filter(pl.col("id") == failed_id)
    assert len(row) == 1 and row["match"][0] in ("exact", "linked") and not row["kept"][0]
    # every exact copy is reported with similarity 1.0 and match "exact"
    exact = t.filter(pl.col("match") == "exact")
    assert len(exact) >= 10 and (exact["similarity"] == 1.0).all()
    # exact only (no threshold): just the byte copies (10 pairs + the failed copy of image 0)
    res0 = find_groups(pool, threshold=None, device="cpu")
    assert res0.n_groups == 11 and res0.n_removed == 11 and res0.mode == "none"


@pytest.mark.parametrize("linkage", ["single", "star"])
def test_keep_policies(linkage: str) -> None:
    pool, x, _ = _pool()
    # star visits images in --keep order, so its keeper is also the group's best by that rule;
    # star's "central" (most neighbours first) is tested in test_dedup_linkage.py
    for keep in ("largest", "first", "central") if linkage == "single" else ("largest", "first"):
        t = find_groups(pool, threshold=0.9, keep=keep, mode="exact", device="cpu", linkage=linkage).table
        for g in t.partition_by("group"):
            ids = pool.ids.tolist()
            members = [ids.index(i) for i in g["id"]]
            kept = ids.index(g.filter(pl.col("kept"))["id"][0])
            assert g.filter(pl.col("kept"))["id"][0] == g["group"][0]
            first = min(members, key=lambda m: (pool.paths[m], pool.ids[m]))
            if keep == "first":
                assert kept == first
            elif keep == "largest":
                with_vec = [m for m in members if pool.info.vec_row[m] >= 0]
                best = max((pool.info.area[m], pool.info.nbytes[m]) for m in with_vec)
                assert (pool.info.area[kept], pool.info.nbytes[kept]) == best
            else:
                with_vec = [m for m in members if pool.info.vec_row[m] >= 0]
                v = x[pool.info.vec_row[with_vec]].astype(np.float64)
                mean = (v @ v.T).sum(1) - 1
                assert kept == with_vec[int(np.argmax(mean))] or np.isclose(
                    mean[with_vec.index(kept)], mean.max()
                )
            sims = g.filter(~pl.col("kept") & (pl.col("match") == "near"))["similarity"].to_numpy()
            krow = pool.info.vec_row[kept]
            for i, s in zip(g.filter(~pl.col("kept") & (pl.col("match") == "near"))["id"], sims, strict=True):
                r = pool.info.vec_row[ids.index(i)]
                assert abs(s - float(x[r] @ x[krow])) < 1e-5


def test_clustered_mode_finds_the_exact_pairs_here() -> None:
    pool, x, _ = _pool()
    exact = find_groups(pool, threshold=0.9, mode="exact", device="cpu")
    comps = Components(len(x))
    _, pairs = clustered_near_edges(
        x, 0.9, comps, np.arange(len(x)), n_clusters=8, probes=3, device="cpu", collect=True
    )
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    ref = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(s >= 0.9, 1)), strict=True)}
    got = {(int(i), int(j)) for i, j in pairs}
    assert got <= ref  # never a false pair
    assert len(got) >= 0.9 * len(ref)
    clustered = find_groups(pool, threshold=0.9, mode="clustered", n_clusters=8, probes=3, device="cpu")
    assert clustered.n_removed <= exact.n_removed


def test_bad_options() -> None:
    pool, _, _ = _pool()
    with pytest.raises(ValueError, match="outside"):
        find_groups(pool, threshold=1.2)
    with pytest.raises(ValueError, match="--keep"):
        find_groups(pool, keep="biggest")
    with pytest.raises(ValueError, match="--mode"):
        find_groups(pool, mode="fast")
    with pytest.raises(ValueError, match="--linkage"):
        find_groups(pool, linkage="average")


def test_nearest_neighbour_sample_is_exact() -> None:
    _, x, _ = _pool()
    ns = nearest_neighbour_sample(x, sample=60, device="cpu")
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_allclose(ns.sims, s[ns.rows].max(1), atol=1e-5)
    counts, edges, _ = ns.histogram()
    assert counts.sum() == 60 and edges[-1] >= min(float(ns.sims.max()), 1.0) and edges[0] <= np.percentile(ns.sims, 1)
    near = ns.near_cut(0.95, width=0.05)
    assert np.all(np.abs(ns.sims[near] - 0.95) <= 0.05)


def test_run_dedup_writes_files_and_tags(tmp_path) -> None:
    pool, x, hashes = _pool()
    store = open_store(url=":memory:")
    try:
        store.ensure_collection("pool")
        store.ensure_encoder("pool", "enc", {"family": "test", "dim": x.shape[1]})
        payloads = [
            {"path": p, "relpath": p.rsplit("/", 1)[1], "sha256": h, "width": 10, "height": 10, "bytes": 1}
            for p, h in zip(pool.paths, hashes, strict=True)
        ]
        store.upsert_points("pool", pool.ids.tolist(), payloads)
        vids = [pool.ids[k] for k in pool.node_of_row]
        store.upsert_vectors("pool", "enc", vids, x)
        res = run_dedup(store, "pool", "enc", tmp_path / "out", threshold=0.95, device="cpu",
                        linkage="single")
        groups = pl.read_parquet(tmp_path / "out" / "dedup_groups.parquet")
        keep = pl.read_csv(tmp_path / "out" / "dedup_keep.csv")
        remove = pl.read_csv(tmp_path / "out" / "dedup_remove.csv")
        assert _groups(groups) == _brute_groups(pool, x, 0.95)
        assert len(keep) + len(remove) == len(pool.ids) and not set(keep["id"]) & set(remove["id"])
        assert set(remove["id"]) == set(res.remove_ids)
        tags = store.payloads("pool", None, ["dup_group", "is_duplicate"])
        assert {i for i, p in tags.items() if p.get("is_duplicate")} == set(remove["id"])
        for gid, pid in groups.select("group", "id").iter_rows():
            assert tags[pid]["dup_group"] == gid
        # a stricter rerun shrinks the groups, and no stale tag survives
        res2 = run_dedup(store, "pool", "enc", None, threshold=0.999, device="cpu")
        tags = store.payloads("pool", None, ["dup_group", "is_duplicate"])
        assert {i for i, p in tags.items() if p.get("is_duplicate")} == set(res2.remove_ids)
        assert res2.n_removed < res.n_removed
        assert sum(1 for p in tags.values() if p.get("dup_group")) == len(res2.table)
    finally:
        store.close()


def test_centered_groups_match_brute_force_on_centered_vectors() -> None:
    pool, x, _ = _pool()
    shifted = x + 6.0 * np.ones(x.shape[1], np.float32) / np.sqrt(x.shape[1])  # a big shared component
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    p2 = Pool.from_arrays(pool.ids, paths=pool.paths, hashes=pool.hashes, vectors=shifted,
                          vector_ids=[pool.ids[k] for k in pool.node_of_row])
    raw = find_groups(p2, threshold=0.95, mode="exact", device="cpu", linkage="single")
    cen = find_groups(p2, threshold=0.95, mode="exact", device="cpu", center=True, linkage="single")
    c = shifted.astype(np.float64) - shifted.astype(np.float64).mean(axis=0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    assert _groups(cen.table) == _brute_groups(p2, c.astype(np.float32), 0.95)
    assert raw.n_removed > cen.n_removed  # the shared component made unrelated rows look alike
