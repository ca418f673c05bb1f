"""curate import-vectors: vectors computed elsewhere as another encoder, by id, path or --create."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_select_cli import _make_store, cli
from test_select_kcenter import brute_kcenter

from curate.sources import discover
from curate.store import open_store


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store, ids, _X = _make_store(tmp_path)
    return tmp_path, store, ids


def _err(res) -> str:  # noqa: ANN001
    assert res.exit_code == 2, res.output
    text = " ".join(ln.strip() for ln in res.output.strip().splitlines())
    assert text.count("error:") == 1, res.output
    return text[text.index("error:"):]


def _unit(V: np.ndarray) -> np.ndarray:
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def test_import_by_id_then_select_on_the_new_encoder(env) -> None:
    tmp, store, ids = env
    rng = np.random.default_rng(3)
    V = rng.normal(size=(116, 5)) * 3  # not normalized: curate normalizes
    pl.DataFrame({"id": ids[4:], "vector": V.tolist()}).write_parquet(tmp / "feats.parquet")
    res = cli(store, "import-vectors", "feats.parquet", "--encoder", "task-feats")
    assert res.exit_code == 0, res.output
    assert "imported 116 vectors (dim 5) as encoder 'task-feats'" in res.output
    with open_store(str(store)) as st:
        assert st.encoders("pool")["task-feats"]["dim"] == 5
        got = st.get_vectors("pool", "task-feats", ids[4:])
    np.testing.assert_allclose(got, _unit(V), rtol=1e-5, atol=1e-6)
    res = cli(store, "select", "-n", "7", "--strategy", "kcenter", "--encoder", "task-feats", "--device", "cpu",
              "--dry-run", "-o", "k.csv")
    assert res.exit_code == 0, res.output
    order = sorted(range(10, 120), key=lambda i: ids[i])  # the pool by id; failed and duplicate images out
    Xs = _unit(V)[[i - 4 for i in order]]
    ref, _ = brute_kcenter(Xs, 7, [])
    assert pl.read_csv(tmp / "k.preview.csv")["id"].to_list() == [ids[order[r]] for r in ref]
    # re-import is an update of the same encoder; another dimension under the same name is refused
    assert cli(store, "import-vectors", "feats.parquet", "--encoder", "task-feats").exit_code == 0
    pl.DataFrame({"id": ids[4:6], "vector": [[1.0, 0.0], [0.0, 1.0]]}).write_parquet(tmp / "d2.parquet")
    assert "stored in 'pool' with dim 5, but" in _err(cli(store, "import-vectors", "d2.parquet", "--encoder",
                                                          "task-feats"))


def test_import_by_path_and_npy_with_manifest(env) -> None:
    tmp, store, ids = env
    V = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    paths = ["im010.jpg", str(tmp / "img" / "im011.jpg"), "im012.jpg"]  # relpath or absolute path
    pl.DataFrame({"path": paths, "vector": V.tolist()}).write_parquet(tmp / "p.parquet")
    assert cli(store, "import-vectors", "p.parquet", "--encoder", "a").exit_code == 0
    np.save(tmp / "m.npy", V)
    pl.DataFrame({"id": ids[10:13]}).write_csv(tmp / "m.csv")
    assert cli(store, "import-vectors", "m.npy", "--manifest", "m.csv", "--encoder", "b").exit_code == 0
    with open_store(str(store)) as st:
        np.testing.assert_allclose(st.get_vectors("pool", "a", ids[10:13]), _unit(V), rtol=1e-5)
        np.testing.assert_allclose(st.get_vectors("pool", "b", ids[10:13]), _unit(V), rtol=1e-5)


def test_bad_vectors_fail_with_one_line_and_write_nothing(env) -> None:
    tmp, store, ids = env
    pl.DataFrame({"id": ids[4:7], "vector": [[1.0, 2.0], [float("nan"), 1.0], [0.5, 0.5]]}).write_parquet(
        tmp / "nan.parquet")
    assert "NaN or inf in the vector of row 2" in _err(cli(store, "import-vectors", "nan.parquet", "--encoder", "x"))
    pl.DataFrame({"id": ids[4:7], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0], [0.5, 0.5]]}).write_parquet(
        tmp / "dims.parquet")
    assert "row 2 has 3 values but most rows have 2" in _err(
        cli(store, "import-vectors", "dims.parquet", "--encoder", "x"))
    pl.DataFrame({"id": [ids[4], "nope", "nada"], "vector": [[1.0, 2.0]] * 3}).write_parquet(tmp / "unk.parquet")
    assert "2 of 3 rows name images not in 'pool' (e.g. 'nope')" in _err(
        cli(store, "import-vectors", "unk.parquet", "--encoder", "x"))
    with open_store(str(store)) as st:
        assert "x" not in st.encoders("pool")
    res = cli(store, "import-vectors", "unk.parquet", "--encoder", "x", "--skip-unknown")
    assert res.exit_code == 0 and "imported 1 vectors" in res.output and "2 rows skipped" in res.output
    pl.DataFrame({"id": ids[4:5], "vector": [[0.0, 0.0]]}).write_parquet(tmp / "zero.parquet")
    assert "all zeros" in _err(cli(store, "import-vectors", "zero.parquet", "--encoder", "x"))
    pl.DataFrame({"id": ids[4:5], "vector": [[1.0] * 8]}).write_parquet(tmp / "enc.parquet")
    assert "was made by curate embed" in _err(cli(store, "import-vectors", "enc.parquet", "--encoder", "enc"))
    np.save(tmp / "v.npy", np.ones((2, 3)))
    assert "needs --manifest" in _err(cli(store, "import-vectors", "v.npy", "--encoder", "x"))
    msg = _err(cli(store, "import-vectors", "unk.parquet", "--encoder", "x", "--column", "emb"))
    assert "no 'emb' column (columns: id, vector); name the list column" in msg


def test_create_makes_points_with_embed_ids_and_metadata(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool").mkdir()
    n = 30
    rng = np.random.default_rng(5)
    V = rng.normal(size=(n, 6))
    f = tmp_path / "pool" / "embedded_elsewhere.parquet"
    pl.DataFrame({"path": [f"sub/img{i}.jpg" for i in range(n)], "weather": ["sun", "rain"] * (n // 2),
                  "vector": V.tolist()}).write_parquet(f)
    store = tmp_path / "store"
    res = cli(store, "import-vectors", str(f), "--encoder", "dino", "--create")
    assert res.exit_code == 0, res.output
    assert "30 new points" in res.output
    want = discover(f).table  # what `curate embed` would compute for the same manifest
    with open_store(str(store)) as st:
        pays = st.payloads("pool")
        assert set(pays) == set(want["id"].to_list())
        row = want.row(0, named=True)
        assert pays[row["id"]]["path"] == row["path"] and pays[row["id"]]["relpath"] == row["relpath"]
        assert pays[row["id"]]["weather"] == row["weather"] and "vector" not in pays[row["id"]]
        got = st.get_vectors("pool", "dino", want["id"].to_list())
    by_rel = {f"sub/img{i}.jpg": i for i in range(n)}
    np.testing.assert_allclose(got, _unit(V[[by_rel[r] for r in want["relpath"].to_list()]]), rtol=1e-5)
    res = cli(store, "select", "-n", "4", "--strategy", "kcenter", "--balance-by", "weather", "--device", "cpu")
    assert res.exit_code == 0, res.output
    # again: existing points keep their payload (the selection tags), nothing new is created
    res = cli(store, "import-vectors", str(f), "--encoder", "dino", "--create")
    assert res.exit_code == 0 and "new points" not in res.output
    with open_store(str(store)) as st:
        assert sum(p.get("selected_round") == 1 for p in st.payloads("pool").values()) == 4
