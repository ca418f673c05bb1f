"""Clustered near-duplicate search for pools too large for all pairs (in the spirit of SemDeDup).

Spherical k-means splits the pool into K clusters; all pairs are then compared only inside each
cluster. Duplicates are very close, so they almost always share a cluster; the ones that straddle a
boundary are the recall loss. To shrink that loss every point joins its `probes` nearest clusters
(default 2), like an inverted-file index probing several lists. Cost: about probes^2 / K of exact
search for balanced clusters. Recall against exact search is measured in benchmarks/dedup.py.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.dedup.groups import Components
from curate.kernels import iter_pairs_above, topk_similarity


def default_clusters(n: int, target_size: int = 4000) -> int:
    """About `target_size` points per cluster: large enough that per-cluster GEMMs run near the
    matmul rate, small enough that the probes^2/K work saving is large."""
    return max(1, int(round(n / target_size)))


def spherical_kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    iters: int = 15,
    sample: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """K unit centroids (float32 [k, d]) fitted on a random sample of at most `sample` rows
    (default max(50k, 64 per cluster): centroids only need to partition the pool, not be exact).

    Assignment uses the shared top-k kernel, so each iteration is one tiled GEMM; empty clusters
    are re-seeded from the rows farthest from their centroid, so K stays K."""
    n = len(vectors)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample = sample if sample is not None else max(50_000, 64 * k)
    rows = rng.choice(n, size=min(n, max(sample, k)), replace=False)
    x = vectors[np.sort(rows)].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cent = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        sims, assign = topk_similarity(x, cent, 1, device=device)
        assign = assign[:, 0]
        sums = (
            torch.zeros(k, x.shape[1], dtype=torch.float64)
            .index_add_(0, torch.from_numpy(assign), torch.from_numpy(x).double())
            .numpy()
        )  # np.add.at is ~50x slower for this scatter-add
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            worst = np.argsort(sims[:, 0], kind="stable")[: len(empty)]
            sums[empty] = x[worst]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        new = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
        if np.allclose(new, cent, atol=1e-6):
            cent = new
            break
        cent = new
    return cent


def cluster_subsets(
    vectors: np.ndarray,
    *,
    n_clusters: int | None = None,
    probes: int = 2,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> list[np.ndarray]:
    """Rows of each k-means cluster (sorted; every row in its `probes` nearest clusters)."""
    n = len(vectors)
    k = n_clusters or default_clusters(n)
    probes = max(1, min(probes, k))
    cent = spherical_kmeans(vectors, k, seed=seed, device=device)
    _, assign = topk_similarity(vectors, cent, probes, device=device)
    members_of = np.argsort(assign.ravel(), kind="stable") // probes
    cluster_sorted = np.sort(assign.ravel(), kind="stable")
    cuts = np.flatnonzero(np.diff(cluster_sorted)) + 1
    return [np.sort(m) for m in np.split(members_of, cuts) if len(m)]


def clustered_near_edges(
    vectors: np.ndarray,
    threshold: float,
    comps: Components,
    node_of_row: np.ndarray,
    *,
    n_clusters: int | None = None,
    probes: int = 2,
    seed: int = 0,
    device: str | torch.device | None = None,
    collect: bool = False,
) -> tuple[int, np.ndarray | None]:
    """Fold the pairs found inside clusters into `comps` (single linkage).

    Returns (pairs visited, the unique (i, j) row pairs as an [m, 2] array when `collect`, for
    measuring recall). A pair that shares several clusters is visited once per shared cluster."""
    visited = 0
    found: list[np.ndarray] = []
    subsets = cluster_subsets(vectors, n_clusters=n_clusters, probes=probes, seed=seed, device=device)
    for members in subsets:
        if len(members) < 2:
            continue
        for i, j, _ in iter_pairs_above(vectors[members], threshold, device=device):
            gi, gj = members[i], members[j]  # members sorted: gi < gj
            visited += len(gi)
            comps.add(node_of_row[gi], node_of_row[gj])
            if collect:
                found.append(np.stack([gi, gj], axis=1))
    pairs = None
    if collect:
        pairs = np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), np.int64)
    return visited, pairs
