"""Composed selections against brute-force references built from the textbook definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_select_density import brute_mean_knn, brute_typiclust
from test_select_kcenter import brute_kcenter

from curate.select.compose import AUTO_TYPICALITY_MAX, Pool, resolve_auto, select
from curate.select.config import SelectionConfig, Step, shorthand
from curate.select.density import inverse_distance
from curate.select.typicality import cluster_pool, n_clusters_for

CPU = torch.device("cpu")


def _pool(n=160, d=6, seed=0, n_centers=5, **extra) -> Pool:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    center = np.zeros(n, bool)
    center[rng.choice(n, n_centers, replace=False)] = True
    payloads = [{"weather": ["sun", "rain", "snow"][i % 3], "sharp": float(i % 7)} for i in range(n)]
    # ids in row order: the canonical order (see compose.canonical_order) is the given one, so the
    # row-index references below apply as they are
    return Pool(X, ~center, center, payloads, ids=[f"p{i:06d}" for i in range(n)], **extra)


def _cfg(strategy: str, **kw) -> SelectionConfig:
    steps, label = shorthand(strategy, predictions=kw.pop("predictions", None), balance_by=kw.pop("balance_by", None),
                             min_distance=kw.pop("min_distance", None))
    return SelectionConfig(steps=steps, strategy=label, **kw).validate()


def test_kcenter_uses_existing_centers() -> None:
    pool = _pool()
    sel = select(pool, _cfg("kcenter"), 20, device=CPU)
    ref, ref_d = brute_kcenter(pool.X, 20, np.flatnonzero(pool.center).tolist())
    assert sel.indices.tolist() == ref
    np.testing.assert_allclose(sel.columns["distance"], ref_d, rtol=1e-4)


def test_density_weighted_kcenter_matches_reference() -> None:
    pool = _pool(seed=1)
    sel = select(pool, _cfg("density-kcenter", knn=5), 25, device=CPU)
    dens = inverse_distance(brute_mean_knn(pool.X, 5).astype(np.float32)).astype(np.float64)
    ref, _ = brute_kcenter(pool.X, 25, np.flatnonzero(pool.center).tolist(), weights=dens)
    assert sel.indices.tolist() == ref
    np.testing.assert_allclose(sel.columns["density"], dens[ref], rtol=1e-4)


def test_diversity_strength_and_two_weights_multiply() -> None:
    rng = np.random.default_rng(2)
    pool = _pool(seed=2, uncertainty=rng.random(160))
    cfg = SelectionConfig(steps=[Step("diversity", strength=2.0), Step("weights", "uncertainty", strength=3.0),
                                 Step("weights", "field:sharp")], predictions="p.csv").validate()
    sel = select(pool, cfg, 15, device=CPU)
    w = (pool.uncertainty ** 3 * np.array([p["sharp"] for p in pool.payloads])) ** 0.5  # d^2 * W  ==  d * W^(1/2)
    ref, _ = brute_kcenter(pool.X, 15, np.flatnonzero(pool.center).tolist(), weights=w)
    assert sel.indices.tolist() == ref


def test_thresholds_first_then_rank_by_uncertainty_with_missing_predictions_reported() -> None:
    rng = np.random.default_rng(3)
    u = rng.random(160)
    u[:10] = np.nan
    pool = _pool(seed=3, uncertainty=u)
    cfg = SelectionConfig(steps=[Step("threshold", "uncertainty", max=0.9), Step("weights", "uncertainty")],
                          predictions="p.csv").validate()
    sel = select(pool, cfg, 12, device=CPU)
    ok = [i for i in range(160) if pool.candidate[i] and not np.isnan(u[i]) and u[i] <= 0.9]
    ref = sorted(ok, key=lambda i: (-u[i], i))[:12]
    assert sel.indices.tolist() == ref
    n_missing = int((pool.candidate & np.isnan(u)).sum())
    assert any(f"{n_missing} candidates have no prediction" in m for m in sel.messages)


def test_typicality_procedure_matches_reference_on_the_same_clusters() -> None:
    pool = _pool(n=200, seed=4)
    budget = 12
    cfg = _cfg("typicality", knn=5, seed=7)
    sel = select(pool, cfg, budget, device=CPU)
    k = n_clusters_for(200, int(pool.center.sum()), budget)
    cl = cluster_pool(pool.X, k, k=5, seed=7, device="cpu")
    ref = brute_typiclust(cl.labels, cl.typicality, budget, pool.candidate, pool.center)
    assert sel.indices.tolist() == ref
    assert sel.columns["cluster"].tolist() == cl.labels[ref].tolist()


def test_auto_rule() -> None:
    assert resolve_auto(0, AUTO_TYPICALITY_MAX) == "typicality"
    assert resolve_auto(1, AUTO_TYPICALITY_MAX) == "density-kcenter"
    pool = _pool(n=400, seed=5, n_centers=0)
    # the typicality branch; on these structure-free vectors with a random image per cluster
    assert select(pool, _cfg("auto"), 10, device=CPU).strategy == "auto->stratified"
    assert select(pool, _cfg("auto"), AUTO_TYPICALITY_MAX + 1, device=CPU).strategy == "auto->density-kcenter"


def test_balance_with_kcenter_is_exact_and_reports_shortfall() -> None:
    pool = _pool(n=90, seed=6, n_centers=0)
    sel = select(pool, _cfg("kcenter", balance_by=["weather"]), 30, device=CPU)
    assert sorted(sel.columns["group"].tolist()) == ["rain"] * 10 + ["snow"] * 10 + ["sun"] * 10
    # 'snow' has 30 rows; asking for 80% snow out of 45 picks is infeasible -> redistributed, reported
    cfg = _cfg("kcenter", balance_by=["weather"])
    cfg.steps[-1].target = {"snow": 0.8, "sun": 0.1, "rain": 0.1}
    sel = select(pool, cfg, 45, device=CPU)
    g = sel.columns["group"].tolist()
    assert len(g) == 45 and g.count("snow") == 30 and g.count("sun") + g.count("rain") == 15
    assert any("snow wanted 36, only 30 available" in m for m in sel.messages)


def test_min_distance_stop_is_reported() -> None:
    pool = _pool(n=100, seed=7, n_centers=0)
    sel = select(pool, _cfg("kcenter", min_distance=1.2), 100, device=CPU)
    assert 1 < len(sel.indices) < 100
    assert any("stopped at" in m and "min_distance 1.2" in m for m in sel.messages)


def test_random_is_seeded() -> None:
    pool = _pool(seed=8)
    a = select(pool, _cfg("random", seed=1), 10, device=CPU).indices
    b = select(pool, _cfg("random", seed=1), 10, device=CPU).indices
    c = select(pool, _cfg("random", seed=2), 10, device=CPU).indices
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert not pool.center[a].any()


def test_negative_weight_input_is_an_error() -> None:
    pool = _pool(seed=9)
    for p in pool.payloads:
        p["sharp"] -= 3
    cfg = SelectionConfig(steps=[Step("weights", "field:sharp")]).validate()
    with pytest.raises(ValueError, match="negative values"):
        select(pool, cfg, 5, device=CPU)


def test_similarity_rank_matches_brute_force_max_cosine() -> None:
    pool = _pool(seed=10)
    pool.query = pool.X[[0, 1]]
    cfg = SelectionConfig(steps=[Step("threshold", "similarity", min=0.0), Step("weights", "similarity")],
                          similar_to=["x"]).validate()
    sel = select(pool, cfg, 8, device=CPU)
    sims = (pool.X.astype(np.float64) @ pool.query.T.astype(np.float64)).max(axis=1)
    ok = [i for i in range(len(sims)) if pool.candidate[i] and sims[i] >= 0]
    assert sel.indices.tolist() == sorted(ok, key=lambda i: (-sims[i], i))[:8]
    np.testing.assert_allclose(sel.columns["similarity"], sims[sel.indices], atol=1e-5)
