"""Representativeness from k nearest neighbours: dense regions hold the typical images.

density(x) = 1 / mean distance from x to its k nearest neighbours (cosine geometry: rows are
L2-normalized, so distance = sqrt(2 - 2 cos)). This is the TypiClust "typicality" formula; applied
to the whole pool it is a density, applied inside a k-means cluster it is typicality
(typicality.py). Neighbours come from `curate.kernels.topk_similarity`, which works in tiles, so
nothing N x N is ever built.

Scale: exact kNN costs N^2 d. Above `reference_size` rows the neighbours are searched in a seeded
random reference sample of that size instead (cost N x reference_size x d): the k-NN distance in
a sample of M points estimates the (k N / M)-NN distance in the pool, i.e. the same density
estimate with a wider bandwidth, which is what a weighting needs.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.kernels import topk_similarity

DENSITY_K = 20
REFERENCE_SIZE = 20_000


def mean_knn_distance(
    X: np.ndarray,
    k: int = DENSITY_K,
    *,
    reference_size: int = REFERENCE_SIZE,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Mean distance from each row to its k nearest other rows (exact up to `reference_size`)."""
    n = int(X.shape[0])
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    if n <= reference_size:
        k = max(1, min(k, n - 1))
        sims, _ = topk_similarity(X, X, k, exclude_self=True, device=device)
    else:
        rng = np.random.default_rng(seed)
        ref = np.sort(rng.choice(n, size=reference_size, replace=False))
        k = max(1, min(k, reference_size - 1))
        sims, idx = topk_similarity(X, X[ref], k + 1, device=device)
        # A row that is in the sample must not count itself: drop exactly that column,
        # otherwise drop the (k+1)-th neighbour.
        own = np.full(n, -1, dtype=np.int64)
        own[ref] = np.arange(reference_size)
        is_self = idx == own[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
        keep = np.ones_like(is_self)
        keep[np.arange(n), drop] = False
        sims = sims[keep].reshape(n, k)
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
    return dist.mean(axis=1).astype(np.float32)


def inverse_distance(mean_dist: np.ndarray) -> np.ndarray:
    """1 / mean distance, with the distance floored at its 1st percentile (exact duplicates
    would otherwise get an infinite score and swamp any product of weights)."""
    if mean_dist.size == 0:
        return mean_dist.astype(np.float32)
    pos = mean_dist[mean_dist > 0]
    floor = float(np.quantile(pos, 0.01)) if pos.size else 1.0
    return (1.0 / np.maximum(mean_dist, floor)).astype(np.float32)


def knn_density(
    X: np.ndarray,
    k: int = DENSITY_K,
    *,
    reference_size: int = REFERENCE_SIZE,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Density score per row (higher = more typical of the pool)."""
    return inverse_distance(mean_knn_distance(X, k, reference_size=reference_size, seed=seed, device=device))
