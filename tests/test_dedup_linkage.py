"""Star / complete grouping (no chaining) against a brute-force sequential greedy."""

from __future__ import annotations

import numpy as np
import pytest

from curate.dedup import Pool, find_groups
from curate.dedup.linkage import brute_force_groups, complete_groups, star_groups


def _chained(n_chains: int = 6, length: int = 8, d: int = 16, seed: int = 0) -> np.ndarray:
    """Random walks: consecutive points are close, the ends of a chain far apart, so single
    linkage would chain whole walks into one group while star must split them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_chains):
        v = rng.normal(size=d)
        for _ in range(length):
            out.append(v / np.linalg.norm(v))
            v = v / np.linalg.norm(v) + 0.25 * rng.normal(size=d) / np.sqrt(d)
    x = np.asarray(out, dtype=np.float32)
    return x[rng.permutation(len(x))]


def _cos(x: np.ndarray) -> np.ndarray:
    v = x.astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tile", [3, 7, 512])
def test_star_equals_brute_force_and_members_within_cut(seed: int, tile: int) -> None:
    x = _chained(seed=seed)
    cut = 0.95
    got = star_groups(x, cut, device="cpu", tile=tile, cols=tile + 2)
    ref = brute_force_groups(x, cut, "star")
    assert np.array_equal(got, ref)
    s = _cos(x)
    assert all(s[i, got[i]] >= cut - 1e-6 for i in range(len(x)))
    assert len(set(got.tolist())) < len(x)  # there are groups at all


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("tile", [4, 256])
def test_complete_equals_brute_force_and_is_cliques(seed: int, tile: int) -> None:
    x = _chained(seed=seed)
    cut = 0.93
    got = complete_groups(x, cut, device="cpu", tile=tile, cols=tile + 3)
    assert np.array_equal(got, brute_force_groups(x, cut, "complete"))
    s = _cos(x)
    for k in set(got.tolist()):
        m = np.flatnonzero(got == k)
        assert (s[np.ix_(m, m)] >= cut - 1e-6).all()


def test_find_groups_star_does_not_chain_where_single_does() -> None:
    # a line of points 0.97 apart step by step: single linkage makes one group of all
    angles = np.arange(8) * np.arccos(0.97)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ids = [f"p{k}" for k in range(8)]
    pool = Pool.from_arrays(ids, vectors=x)
    single = find_groups(pool, threshold=0.96, keep="first", linkage="single", mode="exact", device="cpu")
    star = find_groups(pool, threshold=0.96, keep="first", linkage="star", mode="exact", device="cpu")
    assert single.n_groups == 1 and single.table["group_size"][0] == 8
    # keep=first: p0 keeps p1, p2 keeps p3, ...
    groups = {g[0]: sorted(d["id"].to_list()) for g, d in star.table.group_by("group")}
    assert groups == {"p0": ["p0", "p1"], "p2": ["p2", "p3"], "p4": ["p4", "p5"], "p6": ["p6", "p7"]}
    kept_sims = star.table.filter(~star.table["kept"])["similarity"].to_numpy()
    assert (kept_sims >= 0.96 - 1e-6).all()


def test_keep_rule_is_the_visit_order() -> None:
    x = np.array([[1, 0], [0.99, 0.141], [0.96, 0.28]], dtype=np.float32)  # 0~1, 1~2, 0!~2 at 0.98
    ids = ["a", "b", "c"]
    pool = Pool.from_arrays(ids, vectors=x, area=np.array([1.0, 9.0, 4.0]))
    res = find_groups(pool, threshold=0.98, keep="largest", mode="exact", device="cpu")
    # b (largest) is visited first and takes both neighbours: one group kept at b
    assert res.table.filter(res.table["kept"])["id"].to_list() == ["b"]
    assert sorted(res.table["id"].to_list()) == ["a", "b", "c"]
    res = find_groups(pool, threshold=0.98, keep="first", mode="exact", device="cpu")
    assert res.table.filter(res.table["kept"])["id"].to_list() == ["a"]  # a takes b; c stays alone
    assert sorted(res.table["id"].to_list()) == ["a", "b"]
    res = find_groups(pool, threshold=0.98, keep="central", mode="exact", device="cpu")
    assert res.table.filter(res.table["kept"])["id"].to_list() == ["b"]  # b has 2 neighbours


def test_exact_copies_stay_together_also_without_vectors() -> None:
    x = _chained(n_chains=3, length=6, seed=4)
    n = len(x)
    ids = [f"p{k:02d}" for k in range(n)] + ["z_dup_of_p03", "z_failed_copy_of_p05", "z_f1", "z_f2"]
    hashes = [f"h{k}" for k in range(n)] + ["h3", "h5", "hz", "hz"]
    vecs = np.concatenate([x, x[3:4]])  # the copy of p03 has (the same) vector; the others none
    pool = Pool.from_arrays(ids, hashes=hashes, vectors=vecs, vector_ids=ids[: n + 1])
    res = find_groups(pool, threshold=0.95, keep="first", mode="exact", device="cpu")
    grp = dict(zip(res.table["id"].to_list(), res.table["group"].to_list(), strict=True))
    assert grp["z_dup_of_p03"] == grp["p03"]
    assert grp["z_failed_copy_of_p05"] == grp["p05"]
    assert grp["z_f1"] == grp["z_f2"] == "z_f1"
    kept = set(res.table.filter(res.table["kept"])["id"].to_list())
    assert not kept & {"z_dup_of_p03", "z_failed_copy_of_p05"}
    # the near part equals the brute force on the distinct vectors (keep=first: id order)
    ref = brute_force_groups(x, 0.95)
    assert [grp.get(f"p{i:02d}", f"p{i:02d}") for i in range(n)] == [f"p{r:02d}" for r in ref]


def test_clustered_mode_keeps_the_star_property() -> None:
    x = _chained(n_chains=10, length=10, d=8, seed=5)
    ids = [f"p{k:03d}" for k in range(len(x))]
    pool = Pool.from_arrays(ids, vectors=x)
    one = find_groups(pool, threshold=0.95, keep="first", mode="clustered", n_clusters=1, device="cpu")
    exact = find_groups(pool, threshold=0.95, keep="first", mode="exact", device="cpu")
    assert one.table.sort("id").equals(exact.table.sort("id"))
    many = find_groups(pool, threshold=0.95, keep="first", mode="clustered", n_clusters=4, probes=2, device="cpu")
    s = _cos(x)
    pos = {pid: k for k, pid in enumerate(ids)}
    for g, pid in many.table.select("group", "id").iter_rows():
        assert s[pos[g], pos[pid]] >= 0.95 - 1e-6


@pytest.mark.parametrize("local_bytes", [0, 1 << 30])  # subsets read in place / gathered once
@pytest.mark.parametrize("fn", [star_groups, complete_groups])
def test_order_reads_ranks_through_the_matrix_without_reordering_it(fn, local_bytes, monkeypatch) -> None:
    from curate.dedup import linkage

    monkeypatch.setattr(linkage, "LOCAL_BYTES", local_bytes)
    x = _chained(n_chains=8, seed=4)
    perm = np.random.default_rng(0).permutation(len(x))
    subsets = [np.arange(0, 40), np.arange(30, len(x))]
    for dtype in (np.float32, np.float16):
        before = x.astype(dtype)
        held = before.copy()
        got = fn(held, 0.93, order=perm, subsets=subsets, device="cpu", tile=5, cols=7)
        assert np.array_equal(held, before)  # the matrix is not touched
        assert np.array_equal(got, fn(before[perm], 0.93, subsets=subsets, device="cpu", tile=5, cols=7))
    assert np.array_equal(fn(x, 0.93, order=perm, device="cpu"), brute_force_groups(x[perm], 0.93, fn.__name__[:-7]))
