"""Selection's k-means and typicality on CUDA (fp16 storage, fp32 products) against the CPU (fp32):
the same clusters on well-separated modes, the same typicality up to fp16 rounding, the same
contenders from the handed-over centroid distances. Needs a GPU (skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.select.kmeans import kmeans
from curate.select.typicality import cluster_mean_distance, contenders

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _modes(n_per: int, k: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 4
    X = np.concatenate([c + rng.standard_normal((n_per, d)) for c in centers]).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_kmeans_and_typicality_on_cuda_match_the_cpu() -> None:
    X = _modes(3000, 4, 32, 0)  # clusters of 3,000 rows: sampled mates, scale factor, contenders
    truth = np.repeat(np.arange(4), 3000)
    for dev in ("cpu", "cuda"):
        cent, labels, d2 = kmeans(X, 4, seed=0, device=dev, return_distance=True)
        pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
        assert len(pairs) == 4  # each mode is one cluster, on either device
        want = ((X.astype(np.float64) - cent[labels].astype(np.float64)) ** 2).sum(axis=1)
        np.testing.assert_allclose(d2, want, atol=2e-3)  # fp16 storage on the GPU
    labels = truth
    cpu = cluster_mean_distance(X, labels, 20, seed=1, device="cpu")
    gpu = cluster_mean_distance(X, labels, 20, seed=1, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=5e-3)  # same mates, same scale factor, fp16 inputs
    rank_cpu, rank_gpu = np.argsort(np.argsort(cpu)), np.argsort(np.argsort(gpu))
    assert np.corrcoef(rank_cpu, rank_gpu)[0, 1] > 0.999
    cand = np.ones(len(X), bool)
    a = contenders(X, labels, cand, seed=1, device="cpu")
    b = contenders(X, labels, cand, seed=1, device="cuda")
    assert len(np.setdiff1d(a, b)) <= 0.01 * len(a)  # near ties at the 256th contender may swap
