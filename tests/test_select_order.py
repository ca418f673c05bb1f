"""Picks are a function of vectors, ids, payload and seed, never of the order rows arrive in
(issue 13): every strategy, permuted pools, with and without ids, and API == store/CLI path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_select_cli import _make_store

from curate.select.compose import Pool, canonical_order, row_hash, select
from curate.select.config import SelectionConfig, Step, shorthand
from curate.select.run import run_selection
from curate.store import open_store

CPU = torch.device("cpu")
STRATEGIES = ["kcenter", "density", "typicality", "density-kcenter", "random", "auto", "uncertainty",
              "similarity", "kcenter+balance", "typicality+balance", "random+balance"]


def _data(kind: str, n: int = 150, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        X = rng.normal(size=(n, d))
    else:  # 6 tight blobs of unequal size: many near-ties in density and typicality
        means = rng.normal(size=(6, d)) * 3
        X = means[rng.choice(6, n, p=[0.35, 0.25, 0.15, 0.1, 0.1, 0.05])] + 0.3 * rng.normal(size=(n, d))
    X = X.astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _pool(X: np.ndarray, with_ids: bool, seed: int = 0) -> Pool:
    n = len(X)
    rng = np.random.default_rng(seed + 100)
    center = np.zeros(n, bool)
    center[rng.choice(n, 4, replace=False)] = True
    payloads = [{"weather": ["sun", "rain", "snow"][i % 3]} for i in range(n)]
    ids = [f"id-{(i * 7919) % 100003:06d}" for i in range(n)] if with_ids else None
    unc = rng.random(n)
    return Pool(X, ~center, center, payloads, unc, X[[0, 5]], ids)


def _cfg(strategy: str, seed: int = 3) -> SelectionConfig:
    name, _, extra = strategy.partition("+")
    steps, label = shorthand(name, predictions="p.csv" if name == "uncertainty" else None,
                             similar=name == "similarity", balance_by=["weather"] if extra else None)
    return SelectionConfig(steps=steps, strategy=label, seed=seed, knn=5, predictions="p.csv",
                           similar_to=["q"]).validate()


def _shuffle(pool: Pool, perm: np.ndarray) -> Pool:
    return Pool(pool.X[perm], pool.candidate[perm], pool.center[perm], [pool.payloads[i] for i in perm],
                pool.uncertainty[perm], pool.query, None if pool.ids is None else [pool.ids[i] for i in perm])


@pytest.mark.parametrize("with_ids", [True, False])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_permuting_rows_never_changes_the_picks(kind: str, with_ids: bool) -> None:
    pool = _pool(_data(kind), with_ids)
    rng = np.random.default_rng(1)
    perms = [rng.permutation(len(pool.X))]
    for strategy in STRATEGIES:
        for budget in (6, 30):  # auto: typicality at 6 (+4 labeled), density-kcenter at 30 with the cap below
            cfg = _cfg(strategy)
            base = select(pool, cfg, budget, device=CPU).indices
            assert len(base) == budget, strategy
            for perm in perms:
                got = perm[select(_shuffle(pool, perm), cfg, budget, device=CPU).indices]
                assert got.tolist() == base.tolist(), (strategy, budget)


def test_auto_both_branches_are_order_free(monkeypatch: pytest.MonkeyPatch) -> None:
    import curate.select.compose as compose

    pool = _pool(_data("clustered", seed=4), True)
    perm = np.random.default_rng(2).permutation(len(pool.X))
    for cap in (1000, 1):  # auto -> typicality, then auto -> density-kcenter
        monkeypatch.setattr(compose, "AUTO_TYPICALITY_MAX", cap)
        a = select(pool, _cfg("auto"), 12, device=CPU)
        b = select(_shuffle(pool, perm), _cfg("auto"), 12, device=CPU)
        assert perm[b.indices].tolist() == a.indices.tolist()
        assert a.strategy == ("auto->typicality" if cap == 1000 else "auto->density-kcenter")


def test_canonical_order_by_id_then_by_content() -> None:
    X = _data("random", n=20)
    pool = _pool(X, True)
    order = canonical_order(pool)
    assert [pool.ids[i] for i in order] == sorted(pool.ids)
    no_ids = _pool(X, False)
    h = row_hash(X)
    assert (np.diff(h[canonical_order(no_ids)].astype(np.float64)) >= 0).all()
    perm = np.random.default_rng(0).permutation(20)
    assert np.array_equal(row_hash(X[perm]), h[perm])  # a row's key does not depend on its position
    pool.ids[1] = pool.ids[0]
    with pytest.raises(ValueError, match="unique"):
        canonical_order(pool)


@pytest.mark.parametrize("strategy", ["typicality", "kcenter", "density-kcenter", "random", "density"])
def test_api_on_file_order_equals_store_path(tmp_path: Path, strategy: str) -> None:
    store, ids, X = _make_store(tmp_path)
    # the API user's view: the same points in file order (not id order), duplicates left out as the CLI does
    rows = [i for i in range(10, len(ids))]
    rows = list(np.random.default_rng(5).permutation(rows))
    pool = Pool(X[rows], np.ones(len(rows), bool), np.zeros(len(rows), bool), [{} for _ in rows],
                ids=[ids[i] for i in rows])
    steps, label = shorthand(strategy)
    cfg = SelectionConfig(steps=steps, strategy=label, seed=2, knn=5).validate()
    api = [ids[rows[i]] for i in select(pool, cfg, 12, device=CPU).indices]
    with open_store(str(store)) as st:
        res = run_selection(st, "pool", SelectionConfig(steps=steps, strategy=label, seed=2, knn=5, budget=12),
                            device="cpu", out_dir=tmp_path / "out", dry_run=True)
    assert res.ids == api


def test_weights_and_threshold_steps_follow_rows() -> None:
    pool = _pool(_data("clustered", seed=6), True)
    cfg = SelectionConfig(steps=[Step("threshold", "uncertainty", min=0.3), Step("diversity"),
                                 Step("weights", "uncertainty")], predictions="p.csv", seed=1).validate()
    perm = np.random.default_rng(3).permutation(len(pool.X))
    a = select(pool, cfg, 15, device=CPU)
    b = select(_shuffle(pool, perm), cfg, 15, device=CPU)
    assert perm[b.indices].tolist() == a.indices.tolist()
    assert (pool.uncertainty[a.indices] >= 0.3).all()
    np.testing.assert_allclose(a.columns["uncertainty"], pool.uncertainty[a.indices])
