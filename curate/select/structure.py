"""Does the pool have cluster structure? `auto`'s label-free check before it runs TypiClust.

Typicality helps when the pool has modes: the most typical image of a k-means cluster is then a
mode's centre. When the vectors fill a continuum (textile photos whose defect classes overlap in
MobileNetV2 space), k-means still returns clusters, but they cut the continuum and the most typical
image is no better a representative than any member.

The check, gap-statistic style (Tibshirani et al. 2001): on a seeded sample of `ROWS` rows,
randomly projected to `DIMS` dimensions (each distance kept within about 20%, the same projection
for the sample and its reference, and the k-means work 8-20x smaller), k-means with K in `KS`
clusters scores its mean simplified silhouette (`typicality.cluster_separation`); so does k-means
on a structure-free reference of the same shape, a Gaussian with the sample's mean and covariance
(rows unit-normalised, as the sample's). The structure score is the largest difference over the
grid. Pure noise, whatever its covariance or dimension, scores about 0 at every K; a pool with
modes scores well above 0 at the grid's K nearest its number of modes. A silhouette alone does not
tell them apart: it grows with K on noise, depends on the noise's dimension, and falls when K is
below the number of modes (the 200-mode synthetic pool reads 0.15 at 50 clusters, textile's
features 0.09-0.12), so the old fixed threshold (0.2) on `auto`'s own K = budget clusters misjudged
many-mode pools at small budgets.

The grid does not depend on the budget, so the decision is the same at every budget; the seed is
fixed, so it is a property of the pool (its canonical row order), not of `--seed`. Cost: 2 x len(KS)
k-means fits on ROWS x DIMS, about 0.1 s of CPU at any N (8-12% of `auto`'s CPU time at 50,000 x
512, budgets 10-100; BENCHMARKS.md, label efficiency).
"""

from __future__ import annotations

import numpy as np
import torch

from curate.select.kmeans import kmeans, one_thread
from curate.select.typicality import cluster_separation

ROWS = 1024  # sample the score is measured on
DIMS = 64  # random projection of the sample (none when the vectors have fewer dimensions)
KS = (10, 20, 50)  # k-means resolutions compared with the reference (capped at ROWS / MIN_PER_CLUSTER)
MIN_PER_CLUSTER = 5
ITERS = 10  # Lloyd iterations per fit (one k-means++ init): the score needs the solution's shape, not its last digit
SEED = 0


def cluster_structure(X: np.ndarray, *, ks: tuple[int, ...] = KS, rows: int = ROWS, dims: int = DIMS,
                      seed: int = SEED) -> float:
    """Largest (silhouette of the sample's k-means - silhouette of a Gaussian reference's) over `ks`
    (module doc); NaN when the pool is too small for any K of the grid (then nothing is judged)."""
    n = len(X)
    ks = tuple(k for k in ks if k * MIN_PER_CLUSTER <= min(n, rows))
    if not ks:
        return float("nan")
    cpu = torch.device("cpu")  # a few hundred KB: no device transfer is worth it
    with one_thread(cpu):  # every product here is tiny (the covariance too): threads only wait
        rng = np.random.default_rng(seed)
        x = np.asarray(X[np.sort(rng.choice(n, size=rows, replace=False))] if n > rows else X, dtype=np.float64)
        if x.shape[1] > dims:
            x = x @ rng.standard_normal((x.shape[1], dims)) / np.sqrt(dims)
        x = _unit(x)
        # a Gaussian with the sample's mean and covariance (eigendecomposition of the <= DIMS x DIMS covariance)
        mean = x.mean(axis=0, dtype=np.float64)
        var, vec = np.linalg.eigh(np.cov(x, rowvar=False))
        ref = _unit(mean + rng.standard_normal(x.shape) * np.sqrt(np.clip(var, 0, None)) @ vec.T)
        gaps = []
        for k in ks:
            score = []
            for v in (x, ref):
                labels = kmeans(v, k, seed=seed, max_iter=ITERS, device=cpu)[1]
                score.append(cluster_separation(v, labels, sample=len(v), device=cpu))
            gaps.append(score[0] - score[1])
    return float(max(gaps))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
