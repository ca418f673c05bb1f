"""Uncertainty from predictions files, similarity to queries, and selection configs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from curate.select.config import ConfigError, from_mapping, load_config, shorthand, with_overrides
from curate.select.similarity import QueryError, max_similarity, resolve_query_ids
from curate.select.uncertainty import (
    PredictionsError,
    load_predictions,
    match_predictions,
    uncertainty_from_probs,
)

P = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])


def test_uncertainty_formulas_against_hand_computed_values() -> None:
    for row, p in enumerate(P):
        h = -sum(x * math.log(x) for x in p if x > 0) / math.log(3)
        top = sorted(p, reverse=True)
        assert uncertainty_from_probs(P, "entropy")[row] == pytest.approx(h)
        assert uncertainty_from_probs(P, "margin")[row] == pytest.approx(1 - (top[0] - top[1]))
        assert uncertainty_from_probs(P, "least_confidence")[row] == pytest.approx((1 - top[0]) * 3 / 2)
    assert uncertainty_from_probs(P, "entropy")[1] == pytest.approx(1.0)
    assert uncertainty_from_probs(P, "margin")[2] == pytest.approx(0.0)


def test_prediction_files_in_three_layouts(tmp_path) -> None:
    ids = ["a", "b", "c", "d"]
    f1 = tmp_path / "cols.csv"
    pl.DataFrame({"id": ids, "prob_cat": P[:, 0], "prob_dog": P[:, 1], "prob_car": P[:, 2]}).write_csv(f1)
    f2 = tmp_path / "list.parquet"
    pl.DataFrame({"path": ids, "probs": P.tolist()}).write_parquet(f2)
    f3 = tmp_path / "score.csv"
    pl.DataFrame({"id": ids, "score": [0.1, 2.0, 0.0, 5.0]}).write_csv(f3)
    a = load_predictions(f1, "margin")
    b = load_predictions(f2, "margin")
    assert a.key_column == "id" and b.key_column == "path"
    np.testing.assert_allclose(a.scores, uncertainty_from_probs(P, "margin"))
    np.testing.assert_allclose(b.scores, a.scores)
    c = load_predictions(f3)
    assert c.kind == "score" and c.scores.tolist() == [0.1, 2.0, 0.0, 5.0]


def test_bad_prediction_files_fail_with_one_clear_line(tmp_path) -> None:
    bad = P.copy()
    bad[2, 1] = np.nan
    f = tmp_path / "nan.parquet"
    pl.DataFrame({"id": ["a", "b", "c", "d"], "probs": bad.tolist()}).write_parquet(f)
    with pytest.raises(PredictionsError, match=r"NaN probability in row 3 \(c\)"):
        load_predictions(f)
    f = tmp_path / "logits.csv"
    pl.DataFrame({"id": ["a", "b"], "p_0": [2.0, 0.1], "p_1": [-1.0, 0.9]}).write_csv(f)
    with pytest.raises(PredictionsError, match=r"\[0, 1\]"):
        load_predictions(f)
    f = tmp_path / "sum.csv"
    pl.DataFrame({"id": ["a", "b"], "p_0": [0.9, 0.1], "p_1": [0.9, 0.9]}).write_csv(f)
    with pytest.raises(PredictionsError, match="sum to 1.8"):
        load_predictions(f)
    f = tmp_path / "nokey.csv"
    pl.DataFrame({"file": ["a"], "p_0": [1.0], "p_1": [0.0]}).write_csv(f)
    with pytest.raises(PredictionsError, match="'id' or 'path' column"):
        load_predictions(f)
    f = tmp_path / "dup.csv"
    pl.DataFrame({"id": ["a", "a"], "p_0": [1.0, 0.5], "p_1": [0.0, 0.5]}).write_csv(f)
    with pytest.raises(PredictionsError, match="more than once"):
        load_predictions(f)


def test_matching_by_id_absolute_and_relative_path(tmp_path) -> None:
    f = tmp_path / "p.csv"
    pl.DataFrame({"path": ["/pool/x/1.jpg", "x/2.jpg"], "score": [1.0, 2.0]}).write_csv(f)
    pred = load_predictions(f, "score")
    rows = match_predictions(pred, ["i0", "i1", "i2"], ["/pool/x/0.jpg", "/pool/x/1.jpg", "/pool/x/2.jpg"],
                             ["x/0.jpg", "x/1.jpg", "x/2.jpg"])
    assert rows.tolist() == [1, 2]
    pl.DataFrame({"id": ["i0", "zz"], "score": [1.0, 2.0]}).write_csv(f)
    with pytest.raises(PredictionsError, match=r"1 prediction\(s\) name images not in the collection \(e.g. 'zz'\)"):
        match_predictions(load_predictions(f, "score"), ["i0"], [None], [None])


def test_similarity_is_max_cosine_over_queries() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X[[3, 7]]
    got = max_similarity(X, Q, device="cpu")
    np.testing.assert_allclose(got, (X @ Q.T).max(axis=1), atol=1e-5)
    assert got[3] == pytest.approx(1.0, abs=1e-5)
    payloads = {"u1": {"path": "/p/a.jpg", "relpath": "a.jpg"}, "u2": {"path": "/p/b.jpg"}}
    assert resolve_query_ids(["a.jpg", "u2", "/p/a.jpg"], payloads) == ["u1", "u2", "u1"]
    with pytest.raises(QueryError, match="'nope.jpg' is not in the collection"):
        resolve_query_ids(["nope.jpg"], payloads)


def test_config_file_and_shorthands(tmp_path) -> None:
    f = tmp_path / "sel.yaml"
    f.write_text(
        "budget: 50\nseed: 3\nwhere: 'width >= 10'\npredictions: {file: p.csv, uncertainty: margin}\n"
        "strategies:\n"
        "  - {type: threshold, input: uncertainty, min: 0.2}\n"
        "  - {type: diversity, min_distance: 0.1}\n"
        "  - {type: weights, input: density, strength: 2}\n"
        "  - {type: balance, keys: 'weather, time'}\n"
    )
    cfg = load_config(f).validate()
    assert cfg.budget == 50 and cfg.seed == 3 and cfg.where == ["width >= 10"]
    assert cfg.predictions == "p.csv" and cfg.uncertainty == "margin"
    assert [s.type for s in cfg.steps] == ["threshold", "diversity", "weights", "balance"]
    assert cfg.balance is not None and cfg.balance.keys == ["weather", "time"]
    cfg2 = with_overrides(cfg, fraction=0.1)
    assert cfg2.budget is None and cfg2.fraction == 0.1
    steps, label = shorthand("kcenter", predictions="p.csv", balance_by=["weather"], min_distance=0.2)
    assert label == "kcenter+uncertainty+balance"
    assert [(s.type, s.input) for s in steps] == [("diversity", None), ("weights", "uncertainty"), ("balance", None)]
    assert steps[0].min_distance == 0.2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"budgett": 5, "strategy": "kcenter"}, "unknown key"),
        ({"strategies": [{"type": "diversity"}, {"type": "typicality"}]}, "at most one of"),
        ({"strategies": [{"type": "weights", "input": "sharpness"}]}, "unknown input 'sharpness'"),
        ({"strategies": [{"type": "threshold", "input": "density"}]}, "needs min and/or max"),
        ({"strategies": [{"type": "balance", "keys": ["w"]}]}, "nothing to select by"),
        ({"strategy": "uncertainty"}, "needs a predictions file"),
        ({"strategy": "kcenter", "budget": 0}, "budget must be >= 1"),
        ({"strategies": [{"type": "weights", "input": "density", "min_distance": 1}]}, "min_distance applies"),
    ],
)
def test_config_errors(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(data).validate()


def test_text_queries_use_the_encoder_text_tower(tiny_clip) -> None:
    import torch

    from curate.encoders import load_encoder
    from curate.select.similarity import text_queries

    enc = load_encoder(tiny_clip.model, tiny_clip.checkpoint, device="cpu")
    got = text_queries(enc.spec, ["a photo of a cat", "a truck at night"], torch.device("cpu"))
    want = enc.encode_texts(["a photo of a cat", "a truck at night"]).numpy()
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    assert got.shape == (2, enc.dim)
    pix = load_encoder("pixels", device="cpu")
    with pytest.raises(QueryError, match="no text tower"):
        text_queries(pix.spec, ["a cat"], torch.device("cpu"))
