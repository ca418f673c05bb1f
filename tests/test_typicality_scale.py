"""Typicality in clusters larger than the mates sample (issue 8): k nearest of the sampled mates,
and the contenders that the TypiClust procedure ranks, against brute-force references."""

from __future__ import annotations

import numpy as np
import torch

from curate.select.compose import Pool, select
from curate.select.config import SelectionConfig, shorthand
from curate.select.density import reference_rows
from curate.select.typicality import (
    Clustering,
    cluster_pool,
    cluster_typicality,
    contenders,
    typiclust_select,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact_mean_knn(X: np.ndarray, k: int = 20) -> np.ndarray:
    x = _unit(X).astype(np.float64)
    d = np.sqrt(np.maximum(0, 2 - 2 * x @ x.T))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def _with_duplicates(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Off-origin Gaussian rows, 2% of them in planted near-duplicate pairs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 2.0
    src = rng.choice(n, n // 100, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), n // 100, replace=False)
    X[dst] = X[src] + 1e-4 * rng.standard_normal((len(src), d))
    dup = np.zeros(n, bool)
    dup[src] = dup[dst] = True
    return X.astype(np.float32), dup


def test_large_cluster_typicality_ranks_like_exact_and_not_near_duplicates() -> None:
    """A cluster 30x the mates sample (as 1M rows at budget 50 is 80x): the most typical rows must be
    typical by the exact 20-NN too, not rows that happen to have their twin among the sampled mates
    (the former estimator, the 20 x 64 / 2000 = 1 nearest sampled mate, put those on top)."""
    X, dup = _with_duplicates(2000, 16, 0)
    labels = np.zeros(len(X), dtype=np.int64)
    exact_rank = np.argsort(np.argsort(_exact_mean_knn(X))) / len(X)  # 0 = most typical
    for seed in range(3):
        typ = cluster_typicality(X, labels, k=20, reference_size=64, seed=seed, device="cpu")
        top = np.argsort(-typ, kind="stable")[:10]
        assert not dup[top].any()
        assert exact_rank[top[0]] < 0.02 and exact_rank[top].mean() < 0.05


def test_contenders_are_the_candidates_nearest_the_centroid_and_the_sampled_mates() -> None:
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((700, 8)) + 1.5).astype(np.float32)
    # cluster 0 above 4x the sample (contenders); 1 above the sample but under 4x (every candidate)
    labels = np.repeat(np.arange(3), [500, 150, 50]).astype(np.int64)
    cand = rng.random(700) > 0.2
    got = contenders(X, labels, cand, reference_size=100, seed=4, device="cpu")
    m = np.flatnonzero(labels == 0)
    d2 = ((X[m].astype(np.float64) - X[m].mean(axis=0)) ** 2).sum(axis=1)  # to the members' mean
    near = [r for r in m[np.argsort(d2, kind="stable")] if cand[r]][:100]
    mates = m[reference_rows(500, 100, 4)]
    want = sorted(set(near) | {int(r) for r in mates if cand[r]} | set(np.flatnonzero(cand & (labels > 0)).tolist()))
    assert got.tolist() == want
    far = np.zeros((3, 8), np.float32)  # given centroids (k-means'): nearest those instead
    far[0] = X[m[np.argmax(d2)]]
    got = contenders(X, labels, cand, centroids=far, reference_size=100, seed=4, device="cpu")
    assert (m[np.argmax(d2)] in got) == bool(cand[m[np.argmax(d2)]])
    near = [r for r in m[np.argsort(((X[m] - far[0]) ** 2).sum(axis=1), kind="stable")] if cand[r]][:100]
    assert set(near) <= set(got.tolist()) and not set(near) <= set(want)


def test_ranking_is_typicality_at_the_contenders_and_zero_elsewhere() -> None:
    X, _ = _with_duplicates(600, 8, 2)
    labels = (np.arange(600) >= 500).astype(np.int64)  # 500 rows (contenders) and 100 (exact)
    cand = np.ones(600, bool)
    cl = Clustering(labels, X=X, k=20, seed=5, device="cpu", reference_size=100)
    rank = cl.ranking(cand)
    assert cl._typicality is None  # the full pass did not run
    full = cluster_typicality(X, labels, k=20, seed=5, reference_size=100, device="cpu")
    rows = contenders(X, labels, cand, reference_size=100, seed=5, device="cpu")
    assert len(rows) < 400 and np.isin(np.arange(500, 600), rows).all()
    np.testing.assert_allclose(rank[rows], full[rows], rtol=1e-5)
    assert (np.delete(rank, rows) == 0).all()
    np.testing.assert_array_equal(cl.typicality_at(rows[::7]), rank[rows[::7]])  # the manifest reuses them
    others = np.setdiff1d(np.arange(500), rows)[:3]
    np.testing.assert_allclose(cl.typicality_at(others), full[others], rtol=1e-5)  # the rest computed


def test_a_cluster_of_two_modes_is_represented_by_a_mode_not_the_gap_between() -> None:
    """k-means at a tiny budget can merge modes: the rows nearest the centroid are then the sparse
    bridge between them. The sampled mates are contenders too, so the pick lies in a mode, as
    exact typicality's does."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((600, 16)) * 0.05 + np.eye(16)[0]
    b = rng.standard_normal((600, 16)) * 0.05 + np.eye(16)[1]
    t = rng.random((40, 1))
    bridge = t * np.eye(16)[0] + (1 - t) * np.eye(16)[1] + rng.standard_normal((40, 16)) * 0.05
    X = _unit(np.vstack([a, b, bridge]))
    labels = np.zeros(len(X), dtype=np.int64)
    cl = Clustering(labels, X=X, k=20, seed=0, device="cpu", reference_size=64)
    pick = int(np.argmax(cl.ranking(np.ones(len(X), bool))))
    assert pick < 1200 and int(np.argmin(_exact_mean_knn(X))) < 1200


def test_select_picks_the_most_typical_contender_of_each_large_cluster() -> None:
    """End to end (`curate select --strategy typicality`), clusters above 4 x REFERENCE_MATES: each pick
    is the brute-force argmax of (k nearest sampled mates) over its cluster's contenders."""
    rng = np.random.default_rng(7)
    centers = _unit(rng.standard_normal((3, 12)))
    mode = np.repeat(np.arange(3), [1500, 1300, 1100])
    X = _unit(centers[mode] + 0.25 * rng.standard_normal((len(mode), 12)))
    n = len(X)
    steps, label = shorthand("typicality")
    cfg = SelectionConfig(steps=steps, strategy=label, seed=2).validate()
    ids = [f"p{i:05d}" for i in range(n)]  # sorted ids: the canonical order is the row order
    sel = select(Pool(X, np.ones(n, bool), np.zeros(n, bool), [{}] * n, ids=ids), cfg, 3, device=torch.device("cpu"))
    assert sorted(mode[sel.indices].tolist()) == [0, 1, 2]
    labels = cluster_pool(X, 3, seed=2, device="cpu").labels  # select's clusters (about the modes)
    assert np.bincount(labels).min() > 4 * 256  # every cluster ranks contenders
    for p in sel.indices:
        m = np.flatnonzero(labels == labels[p])
        rows = contenders(X[m], np.zeros(len(m), np.int64), np.ones(len(m), bool), seed=2, device="cpu")
        ref = m[reference_rows(len(m), 256, 2)]
        x, r = X[m].astype(np.float64), X[ref].astype(np.float64)
        d = np.sqrt(np.maximum(0, 2 - 2 * x @ r.T))
        d[np.searchsorted(m, ref), np.arange(len(ref))] = np.inf  # a sampled row is not its own mate
        mean20 = np.sort(d, axis=1)[:, :20].mean(axis=1)
        assert p == m[rows[np.argmin(mean20[rows])]]


def test_select_ranks_every_member_once_a_clusters_picks_outnumber_its_contenders() -> None:
    """800 picks from each of three clusters of 1,100-1,500 rows: more than their ~512 contenders, so
    the rest must still come in typicality order (the full pass), not in row order."""
    rng = np.random.default_rng(7)
    centers = _unit(rng.standard_normal((3, 12)))
    mode = np.repeat(np.arange(3), [1500, 1300, 1100])
    X = _unit(centers[mode] + 0.25 * rng.standard_normal((len(mode), 12)))
    n, budget = len(X), 2400
    steps, label = shorthand("typicality")
    cfg = SelectionConfig(steps=steps, strategy=label, seed=2, max_clusters=3).validate()
    ids = [f"p{i:05d}" for i in range(n)]  # sorted ids: the canonical order is the row order
    sel = select(Pool(X, np.ones(n, bool), np.zeros(n, bool), [{}] * n, ids=ids), cfg, budget,
                 device=torch.device("cpu"))
    labels = cluster_pool(X, 3, seed=2, device="cpu").labels  # select's clusters
    assert np.bincount(labels).min() > 4 * 256 and budget // 3 > 2 * 256  # contenders, and too few
    typ = cluster_typicality(X, labels, 20, seed=2, device="cpu")
    want, _ = typiclust_select(labels, typ.astype(np.float64), budget, candidates=np.ones(n, bool),
                               centers=np.zeros(n, bool))
    assert len(sel.indices) == budget
    np.testing.assert_array_equal(sel.indices, want)


def test_kmeans_distances_are_each_rows_to_its_centroid_and_give_the_same_contenders() -> None:
    """`kmeans(return_distance=True)` hands over its last assignment's squared distances (all rows fitted,
    and fitted on a sample then assigned): equal to brute force, and `contenders` ranks by them as by
    distances it computes itself."""
    from curate.select.kmeans import kmeans

    rng = np.random.default_rng(3)
    X = _unit(rng.standard_normal((6000, 16)) + 0.5 * rng.standard_normal(16))
    for sample in (None, 1500):
        cent, labels, d2 = kmeans(X, 3, seed=1, sample_size=sample, device="cpu", return_distance=True)
        want = ((X.astype(np.float64) - cent[labels].astype(np.float64)) ** 2).sum(axis=1)
        np.testing.assert_allclose(d2, want, atol=1e-5)
        assert np.bincount(labels).min() > 4 * 256
        cand = rng.random(len(X)) > 0.3
        mine = contenders(X, labels, cand, centroids=cent, seed=2, device="cpu")
        handed = contenders(X, labels, cand, centroids=cent, centroid_d2=d2, seed=2, device="cpu")
        np.testing.assert_array_equal(mine, handed)
