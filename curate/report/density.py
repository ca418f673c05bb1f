"""Outliers and click-neighbours for the report, from the embedding (not from the 2-D map).

Density of a point = mean cosine similarity to its k most similar other points; the lowest are the
outliers. Up to `exact_limit` points this is exact (all pairs, tiled) and the same top-k gives the
neighbours a click on the map shows. Beyond it, density is measured against a seeded sample of
`sample` points (cost N x sample, not N x N: the ranking of the sparsest points survives
sampling, their exact values do not) and the page finds click-neighbours on the map itself
instead, saying so.
"""

from __future__ import annotations

import numpy as np

from curate.kernels import topk_similarity


def density_and_neighbours(
    X: np.ndarray, k: int = 10, n_neighbours: int = 8, exact_limit: int = 20_000, sample: int = 5_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """(density [N] float32, neighbours [N, n_neighbours] int32 or None when N > exact_limit)."""
    n = X.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.float32), None
    if n <= exact_limit:
        kk = min(max(k, n_neighbours), n - 1)
        sims, idx = topk_similarity(X, X, kk, exclude_self=True)
        return sims[:, : min(k, kk)].mean(axis=1), idx[:, :n_neighbours].astype(np.int32)
    rng = np.random.default_rng(seed)
    keys = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    sims, idx = topk_similarity(X, X[keys], k + 1)
    is_self = keys[idx] == np.arange(n)[:, None]  # a sampled point finds itself: drop that column
    sims = np.where(is_self, np.nan, sims)
    keep = np.sort(np.where(np.isnan(sims), np.inf, -sims), axis=1)[:, :k]  # k best non-self
    return (-keep).mean(axis=1).astype(np.float32), None
