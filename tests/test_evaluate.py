"""curate evaluate: simulated labeling rounds with a linear probe, on small synthetic clustered data."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.evaluate import EvaluateError, evaluate_pool, parse_budgets, simulate
from curate.store import open_store

runner = CliRunner()


def _clusters(seed=0, big=240, small=12, k=8, d=16):
    """One big cluster and k-1 small ones, far apart: random picks mostly hit the big one."""
    rng = np.random.default_rng(seed)
    centers = np.eye(d)[:k] * 4
    sizes = [big] + [small] * (k - 1)
    X = np.concatenate([c + rng.normal(scale=0.4, size=(s, d)) for c, s in zip(centers, sizes, strict=True)])
    y = np.repeat(np.arange(k), sizes)
    return X.astype(np.float32), y


def test_result_shape_and_diversity_beats_random_on_imbalanced_clusters() -> None:
    X, y = _clusters()
    labels = [f"class{v}" for v in y]
    res = evaluate_pool(X, labels, [8, 16], ["kcenter", "random"], 2, device="cpu")
    assert res.runs.shape == (2 * 2 * 2, 6)
    assert res.runs.columns == ["strategy", "seed", "budget", "n_labeled", "accuracy", "resolved"]
    assert res.runs["n_labeled"].to_list() == [8, 16] * 4
    assert res.summary.shape == (4, 5) and res.summary["seeds"].to_list() == [2] * 4
    assert res.classes == 8 and res.n_test == round(0.3 * len(X))
    mean = {r["strategy"]: r["mean"] for r in res.summary.filter(pl.col("budget") == 8).iter_rows(named=True)}
    assert mean["kcenter"] > mean["random"] + 0.1
    assert res.recommended == "kcenter" and "over random (more than the spread" in res.verdict


def test_rounds_are_nested_and_task_model_strategies_start_cold() -> None:
    X, y = _clusters(seed=1)
    test = np.zeros(len(X), bool)
    test[::4] = True
    out = simulate(X, y, "cluster-margin", [8, 20], 0, test, device=__import__("torch").device("cpu"))
    assert [o[0] for o in out] == [8, 20] and [o[1] for o in out] == [8, 20]
    assert out[0][3].startswith("auto") and out[1][3] == "cluster-margin"


def test_bad_input_is_one_line() -> None:
    X, y = _clusters()
    with pytest.raises(EvaluateError, match="largest budget 500 exceeds the"):
        evaluate_pool(X, list(y), [500], ["random"], 1)
    with pytest.raises(EvaluateError, match="single class"):
        evaluate_pool(X, [0] * len(X), [5], ["random"], 1)
    with pytest.raises(EvaluateError, match="whole numbers"):
        parse_budgets("10,x")
    assert parse_budgets("50, 10,20,10") == [10, 20, 50]


def test_cli_writes_table_csv_and_png(tmp_path, monkeypatch) -> None:
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    X, y = _clusters(seed=2, big=120, small=10, k=5)
    rng = np.random.default_rng(0)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(len(X))]
    store = tmp_path / "store"
    with open_store(str(store)) as st:
        st.ensure_collection("pool")
        st.ensure_encoder("pool", "enc", {"family": "test", "dim": X.shape[1]})
        st.upsert_points("pool", ids, [{"path": f"/data/{i}.jpg", "relpath": f"{i}.jpg"} for i in range(len(X))])
        st.upsert_vectors("pool", "enc", ids, X / np.linalg.norm(X, axis=1, keepdims=True))
        st.flush()
    pl.DataFrame({"path": [f"{i}.jpg" for i in range(len(X))], "cls": [f"c{v}" for v in y]}).write_csv(
        tmp_path / "labels.csv")
    res = runner.invoke(app, ["evaluate", "--labels", "labels.csv", "--label-column", "cls", "--budgets", "5,10",
                              "--strategies", "kcenter,random", "--seeds", "2", "--store", str(store),
                              "-c", "pool", "--device", "cpu", "-o", "ev", "-q"])
    assert res.exit_code == 0, res.output
    assert "recommended:" in res.output and "random" in res.output
    runs = pl.read_csv(tmp_path / "ev" / "evaluate.csv")
    assert runs.shape[0] == 2 * 2 * 2
    assert set(runs["collection"]) == {"pool"}  # the report shows a collection's own evaluation only
    from curate.report.collect import evaluation

    ev = evaluation(tmp_path / "ev", "pool")
    assert ev is not None and ev.budgets == [5, 10] and {r[0] for r in ev.rows} == {"kcenter", "random"}
    assert evaluation(tmp_path / "ev", "other") is None
    summary = pl.read_csv(tmp_path / "ev" / "evaluate-summary.csv")
    assert summary.shape == (4, 5)
    png = (tmp_path / "ev" / "evaluate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    res = runner.invoke(app, ["evaluate", "--labels", "labels.csv", "--label-column", "klass", "--store", str(store),
                              "-c", "pool"])
    assert res.exit_code == 2 and "no column 'klass'" in res.output
    res = runner.invoke(app, ["evaluate", "--labels", "labels.csv", "--label-column", "cls", "--strategies",
                              "kcenter,best", "--store", str(store), "-c", "pool"])
    assert res.exit_code == 2 and "not evaluable 'best'" in res.output


def test_probe_matches_sklearn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    from curate.evaluate import PROBE_C, Probe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.arange(60) % 4
    ref = LogisticRegression(C=PROBE_C, max_iter=10_000, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(Probe(X, y, 4).proba(X), ref.predict_proba(X), atol=1e-4)
    one = Probe(X[:5], np.zeros(5, np.int64), 3)  # a single class seen: predicts it everywhere
    assert (one.proba(X).argmax(axis=1) == 0).all()
