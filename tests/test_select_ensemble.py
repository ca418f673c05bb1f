"""Ensemble / MC-dropout uncertainty: several predictions files, scored against a numpy reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curate.select.uncertainty import PredictionsError, load_predictions, prediction_files, uncertainty_from_probs


def _random_members(m: int, n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(m, n, c))
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def _reference(P: np.ndarray, kind: str) -> np.ndarray:
    """Loop-per-row reference with the textbook formulas."""
    m, n, c = P.shape
    out = np.empty(n)
    for i in range(n):
        ps = P[:, i, :]
        mean = ps.mean(axis=0)

        def h(p):
            return -sum(x * np.log(x) for x in p if x > 0)

        votes = [int(np.argmax(p)) for p in ps]
        freq = np.array([votes.count(k) for k in range(c)]) / m
        top = sorted(mean, reverse=True)
        out[i] = {
            "entropy": h(mean) / np.log(c),
            "margin": 1 - (top[0] - top[1]),
            "least_confidence": (1 - top[0]) * c / (c - 1),
            "bald": (h(mean) - np.mean([h(p) for p in ps])) / np.log(c),
            "vote_entropy": h(freq) / np.log(min(m, c)),
            "variation_ratio": 1 - freq.max(),
        }[kind]
    return out


@pytest.mark.parametrize("kind", ["entropy", "margin", "least_confidence", "bald", "vote_entropy", "variation_ratio"])
@pytest.mark.parametrize("shape", [(5, 40, 3), (2, 30, 10), (8, 25, 2)])
def test_ensemble_scores_match_a_numpy_reference(kind, shape) -> None:
    P = _random_members(*shape, seed=sum(shape))
    got = uncertainty_from_probs(P, kind)
    np.testing.assert_allclose(got, _reference(P, kind), atol=1e-12)
    assert got.min() >= 0 and got.max() <= 1


def test_bald_is_zero_when_members_agree_and_high_when_confident_members_disagree() -> None:
    agree = np.repeat(np.array([[[0.5, 0.5], [0.9, 0.1]]]), 4, axis=0)  # (4 members, 2 rows, 2 classes)
    assert uncertainty_from_probs(agree, "bald") == pytest.approx([0.0, 0.0])
    split = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two certain members that disagree: MI = log 2
    assert uncertainty_from_probs(split, "bald") == pytest.approx([1.0])
    assert uncertainty_from_probs(split, "vote_entropy") == pytest.approx([1.0])
    assert uncertainty_from_probs(split, "variation_ratio") == pytest.approx([0.5])


def test_several_files_by_glob_folder_or_list_match_rows_by_key(tmp_path) -> None:
    P = _random_members(3, 6, 4, seed=1)
    ids = [f"img{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    folder = tmp_path / "passes"
    folder.mkdir()
    for m in range(3):
        order = rng.permutation(6)  # each pass lists the images in its own order
        pl.DataFrame({"id": [ids[i] for i in order], "probs": P[m][order].tolist()}).write_parquet(
            folder / f"pass_{m}.parquet")
    want = uncertainty_from_probs(P, "bald")
    first_order = pl.read_parquet(folder / "pass_0.parquet")["id"].to_list()
    ref = dict(zip(ids, want, strict=True))
    for spec in (folder, str(folder / "pass_*.parquet"), sorted(folder.iterdir())):
        pred = load_predictions(spec, "bald")
        assert pred.members == 3 and pred.keys == first_order
        np.testing.assert_allclose(pred.scores, [ref[k] for k in pred.keys])
    assert len(prediction_files([folder / "pass_0.parquet", str(folder / "pass_[12].parquet")])) == 3


def test_ensemble_input_errors_are_one_line(tmp_path) -> None:
    P = _random_members(2, 4, 3, seed=2)
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    pl.DataFrame({"id": list("wxyz"), "probs": P[0].tolist()}).write_parquet(a)
    pl.DataFrame({"id": list("wxyq"), "probs": P[1].tolist()}).write_parquet(b)
    pl.DataFrame({"id": list("wxyz"), "probs": [[0.5, 0.5]] * 4}).write_parquet(c)
    with pytest.raises(PredictionsError, match="name different images"):
        load_predictions([a, b], "bald")
    with pytest.raises(PredictionsError, match="2 classes, but"):
        load_predictions([a, c], "entropy")
    with pytest.raises(PredictionsError, match="needs several prediction files"):
        load_predictions(a, "bald")
    with pytest.raises(PredictionsError, match="matches no file"):
        load_predictions(str(tmp_path / "nothing_*.parquet"))
    with pytest.raises(PredictionsError, match="one predictions file"):
        load_predictions([a, a.with_name("a2.parquet")], "score")


def test_cli_bald_over_repeated_and_globbed_predictions(tmp_path, monkeypatch) -> None:
    from test_select_cli import _make_store, cli

    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store, ids, _X = _make_store(tmp_path)
    P = _random_members(4, 60, 3, seed=7)
    paths = [f"im{i:03d}.jpg" for i in range(10, 70)]
    for m in range(4):
        pl.DataFrame({"path": paths, "probs": P[m].tolist()}).write_parquet(tmp_path / f"mc_{m}.parquet")
    bald = _reference(P, "bald")
    want = [str(tmp_path / "img" / paths[i]) for i in np.argsort(-bald, kind="stable")[:5]]
    res = cli(store, "select", "-n", "5", "--strategy", "uncertainty", "--predictions", "mc_*.parquet",
              "--uncertainty", "bald", "--device", "cpu", "--dry-run", "-o", "a.csv")
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "a.preview.csv")["path"].to_list() == want
    args = [a for m in range(4) for a in ("--predictions", f"mc_{m}.parquet")]
    res = cli(store, "select", "-n", "5", "--strategy", "uncertainty", *args, "--uncertainty", "bald",
              "--device", "cpu", "--dry-run", "-o", "b.csv")
    assert res.exit_code == 0, res.output
    got = pl.read_csv(tmp_path / "b.preview.csv")
    assert got["path"].to_list() == want
    np.testing.assert_allclose(got["uncertainty"].to_numpy(), np.sort(bald)[::-1][:5], rtol=1e-6)
    res = cli(store, "select", "-n", "5", "--predictions", "mc_0.parquet", "--uncertainty", "bald")
    assert res.exit_code == 2 and "needs several prediction files" in res.output


def test_config_file_lists_several_prediction_files() -> None:
    from curate.select.config import from_mapping

    cfg = from_mapping({"budget": 5, "strategy": "cluster-margin", "predictions": ["a.parquet", "mc/*.parquet"],
                        "uncertainty": "bald"}).validate()
    assert cfg.predictions == ["a.parquet", "mc/*.parquet"] and cfg.strategy == "cluster-margin"
    assert [s.type for s in cfg.steps] == ["cluster_margin", "weights"]
