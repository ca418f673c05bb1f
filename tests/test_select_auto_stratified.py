"""`auto` at typicality budgets: the most typical image per k-means cluster when the pool has
cluster structure, a seeded random image per cluster (a stratified sample) when it does not (issue
8, textile), decided the same way at every budget (`structure.cluster_structure`: k-means
silhouettes of a sample against a Gaussian reference's). `cluster_separation` is checked against the
simplified silhouette written out in numpy."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.select.compose import Pool, select
from curate.select.config import AUTO_STRUCTURE_MIN, SelectionConfig, shorthand
from curate.select.structure import cluster_structure
from curate.select.typicality import cluster_pool, cluster_separation, n_clusters_for, typiclust_select

CPU = torch.device("cpu")


def brute_separation(X: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """Mean over `rows` of (b - a) / max(a, b): a = distance to the own cluster's mean, b = to the
    nearest other cluster's mean; 0 for a row alone in its cluster."""
    K = labels.max() + 1
    cent = np.stack([X[labels == c].astype(np.float64).mean(axis=0) for c in range(K)])
    out = []
    for i in rows:
        if (labels == labels[i]).sum() < 2:
            out.append(0.0)
            continue
        d = np.linalg.norm(cent - X[i], axis=1)
        a = d[labels[i]]
        b = np.min(np.delete(d, labels[i]))
        out.append((b - a) / max(a, b))
    return float(np.mean(out))


def _sphere(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _blobs(n: int, d: int, modes: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(modes, d))
    X = c[rng.integers(0, modes, n)] / np.linalg.norm(c, axis=1).mean() + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _pool(X: np.ndarray) -> Pool:
    n = len(X)
    return Pool(X, np.ones(n, bool), np.zeros(n, bool), [{}] * n, ids=[f"p{i:05d}" for i in range(n)])


def _cfg(strategy: str, seed: int = 3) -> SelectionConfig:
    steps, label = shorthand(strategy)
    return SelectionConfig(steps=steps, strategy=label, seed=seed, knn=5).validate()


def test_separation_matches_the_simplified_silhouette() -> None:
    X = _sphere(120, 6, 0)
    labels = np.random.default_rng(1).integers(0, 7, 120)
    labels[5] = 7  # a cluster of one scores 0
    got = cluster_separation(X, labels, device="cpu")
    assert abs(got - brute_separation(X, labels, np.arange(120))) < 1e-5
    # above `sample` rows: the same mean over the seeded sample of rows
    rows = np.sort(np.random.default_rng(4).choice(120, size=50, replace=False))
    got = cluster_separation(X, labels, sample=50, seed=4, device="cpu")
    assert abs(got - brute_separation(X, labels, rows)) < 1e-5
    assert np.isnan(cluster_separation(X, np.zeros(120, np.int64), device="cpu"))


def _anisotropic(n: int, d: int, seed: int) -> np.ndarray:
    """Structure-free but far from round: a Gaussian off the origin with power-law variances."""
    rng = np.random.default_rng(seed)
    X = 1.0 + rng.normal(size=(n, d)) * np.arange(1, d + 1) ** -0.7
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_structure_tells_modes_from_noise_of_any_shape() -> None:
    clustered = [_blobs(600, 32, 8, 0.3, 2), _blobs(600, 32, 60, 0.5, 3), _blobs(1500, 96, 150, 0.6, 4)]
    noise = [_sphere(600, 32, 2), _sphere(600, 4, 3), _anisotropic(600, 32, 4),
             np.random.default_rng(5).random((600, 8)).astype(np.float32)]  # uniform in a cube (not unit rows)
    for X in clustered:
        assert cluster_structure(X) >= AUTO_STRUCTURE_MIN
    for X in noise:
        assert abs(cluster_structure(X)) < AUTO_STRUCTURE_MIN
    assert np.isnan(cluster_structure(_blobs(40, 8, 4, 0.3, 1)))  # too few rows for 10 clusters of 5: no verdict


def test_auto_is_typicality_at_every_budget_on_many_modes() -> None:
    """30 modes and budgets below and above that: the old check (silhouette of the budget's own
    clusters >= 0.2) went stratified at the small budgets, where a cluster spans several modes."""
    X = _blobs(500, 32, 30, 0.5, 6)
    pool = _pool(X)
    for budget in (3, 8, 40):
        auto = select(pool, _cfg("auto"), budget, device=CPU)
        assert auto.strategy == "auto->typicality" and not auto.messages, (budget, auto.messages)
        if budget == 3:  # the picks are typicality's
            assert auto.indices.tolist() == select(pool, _cfg("typicality"), budget, device=CPU).indices.tolist()
            old = cluster_separation(X, cluster_pool(X, budget, k=5, seed=3, device="cpu").labels, device="cpu")
            assert old < 0.2  # what the budget-dependent check read here
    noise = _pool(_sphere(500, 32, 6))
    for budget in (3, 40):
        assert select(noise, _cfg("auto"), budget, device=CPU).strategy == "auto->stratified"


def test_auto_keeps_typicality_on_a_pool_too_small_to_judge() -> None:
    pool = _pool(_sphere(40, 8, 1))
    assert select(pool, _cfg("auto"), 5, device=CPU).strategy == "auto->typicality"


def test_auto_keeps_the_most_typical_image_when_clusters_separate() -> None:
    pool = _pool(_blobs(300, 16, 6, 0.3, 5))
    auto = select(pool, _cfg("auto"), 12, device=CPU)
    typ = select(pool, _cfg("typicality"), 12, device=CPU)
    assert auto.strategy == "auto->typicality" and not auto.messages
    assert auto.indices.tolist() == typ.indices.tolist()


def test_auto_takes_a_random_image_per_cluster_without_structure() -> None:
    X, budget, seed = _sphere(300, 16, 6), 12, 3
    pool = _pool(X)
    sel = select(pool, _cfg("auto", seed=seed), budget, device=CPU)
    assert sel.strategy == "auto->stratified"
    assert any("separate no better than in structure-free data" in m for m in sel.messages)
    # reference: the same clusters and coverage order, the seeded random score in place of typicality
    cl = cluster_pool(X, n_clusters_for(300, 0, budget), k=5, seed=seed, device="cpu")
    score = 1.0 - np.random.default_rng(seed).random(300)
    ref, ref_cl = typiclust_select(cl.labels, score, budget, candidates=np.ones(300, bool), centers=np.zeros(300, bool))
    assert sel.indices.tolist() == ref.tolist()
    assert sel.columns["cluster"].tolist() == ref_cl.tolist()
    assert len(set(ref_cl.tolist())) == budget  # one image per cluster
    # not typicality's picks, and a different seed draws different members of the same clusters
    assert sel.indices.tolist() != select(pool, _cfg("typicality", seed=seed), budget, device=CPU).indices.tolist()
    other = select(pool, _cfg("auto", seed=seed + 1), budget, device=CPU)
    assert other.indices.tolist() != sel.indices.tolist()


def _store(root: Path, X: np.ndarray) -> Path:
    """An Edge store whose collection "pool" holds X as encoder "enc" (paths only, no images)."""
    from curate.store import open_store

    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(len(X))]
    path = root / "store"
    with open_store(str(path)) as st:
        st.ensure_collection("pool")
        st.ensure_encoder("pool", "enc", {"family": "test", "dim": X.shape[1]})
        st.upsert_points("pool", ids, [{"path": f"/img/{i}.jpg"} for i in range(len(X))])
        st.upsert_vectors("pool", "enc", ids, X)
        st.flush()
    return path


@pytest.mark.parametrize(("blobs", "ran"), [(True, "auto->typicality"), (False, "auto->stratified")])
def test_cli_reports_which_branch_auto_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blobs: bool,
                                           ran: str) -> None:
    from typer.testing import CliRunner

    from curate.cli import app

    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path, _blobs(300, 16, 30, 0.4, 7) if blobs else _sphere(300, 16, 7))
    res = CliRunner().invoke(app, ["select", "--budget", "6", "--dry-run", "--device", "cpu", "--store", str(store),
                                   "-c", "pool"])
    assert res.exit_code == 0, res.output
    assert f"selected 6 of 300 candidates as 'round-1' with {ran}" in res.output
    assert ("separate no better than in structure-free data" in res.output) == (not blobs)
