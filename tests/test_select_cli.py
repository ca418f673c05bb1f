"""Labeling rounds end to end through the CLI, on an Edge store in tmp_path filled through the Store API
with synthetic vectors and payload (no images are embedded; export uses small real files)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_select_kcenter import brute_kcenter
from typer.testing import CliRunner

from curate.cli import app
from curate.select import kcenter_greedy
from curate.store import open_store

runner = CliRunner()
N, D = 120, 8
WEATHER = ["sun", "rain", "snow"]


def _make_store(root: Path) -> tuple[Path, list[str], np.ndarray]:
    """120 points: 4 failed (no vector), 6 marked duplicates, payload with weather/width."""
    rng = np.random.default_rng(0)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(N)]
    img = root / "img"
    img.mkdir()
    payloads = []
    for i in range(N):
        f = img / f"im{i:03d}.jpg"
        f.write_bytes(b"x" * 10)
        p = {"path": str(f), "relpath": f"im{i:03d}.jpg", "weather": WEATHER[i % 3], "width": 8 + i}
        if i < 4:
            p["failed"] = True
        if 4 <= i < 10:
            p["is_duplicate"] = True
        payloads.append(p)
    X = rng.normal(size=(N, D)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    path = root / "store"
    with open_store(str(path)) as st:
        st.ensure_collection("pool")
        st.ensure_encoder("pool", "enc", {"family": "test", "dim": D})
        st.upsert_points("pool", ids, payloads)
        st.upsert_vectors("pool", "enc", ids[4:], X[4:])
        st.flush()
    return path, ids, X


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store, ids, X = _make_store(tmp_path)
    return tmp_path, store, ids, X


def cli(store: Path, *args: str):  # noqa: ANN201
    return runner.invoke(app, [*args, "--store", str(store), "-c", "pool"])


def _sorted_pool(ids: list[str], X: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The store's view: points with a vector, sorted by id."""
    order = sorted(range(4, N), key=lambda i: ids[i])
    return [ids[i] for i in order], X[order]


def _payloads(store: Path) -> dict:
    with open_store(str(store)) as st:
        return st.payloads("pool", fields=["selected_round", "selection_name", "labeled", "weather", "width"])


def test_two_rounds_with_labeled_images_as_centers(env) -> None:
    tmp, store, ids, X = env
    res = cli(store, "select", "--budget", "10", "--strategy", "kcenter", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "selected 10 of 110 candidates as 'round-1'" in res.output
    csv = pl.read_csv(tmp / "curate-out" / "pool" / "round-1.csv")
    pq = pl.read_parquet(tmp / "curate-out" / "pool" / "round-1.parquet")
    assert csv["id"].to_list() == pq["id"].to_list() and csv["rank"].to_list() == list(range(1, 11))
    assert set(csv.columns) >= {"id", "path", "rank", "strategy", "distance", "round", "selection_name"}
    # reference: k-center over the 110 candidates (failed have no vector, duplicates excluded)
    pid, pX = _sorted_pool(ids, X)
    cand = [i for i, u in enumerate(pid) if ids.index(u) >= 10]
    ref = [cand[i] for i in kcenter_greedy(pX[cand], 10, device="cpu")]
    assert csv["id"].to_list() == [pid[i] for i in ref]
    pay = _payloads(store)
    assert {u for u, p in pay.items() if p.get("selected_round") == 1} == set(csv["id"].to_list())

    res = cli(store, "labeled", str(tmp / "curate-out" / "pool" / "round-1.csv"))
    assert res.exit_code == 0 and "marked 10 image(s) as labeled" in res.output, res.output
    res = cli(store, "labeled", str(tmp / "curate-out" / "pool" / "round-1.csv"))
    assert "marked 0 image(s)" in res.output and "10 already were" in res.output

    res = cli(store, "select", "--budget", "10", "--strategy", "kcenter", "--device", "cpu")
    assert res.exit_code == 0, res.output
    second = pl.read_csv(tmp / "curate-out" / "pool" / "round-2.csv")["id"].to_list()
    assert not set(second) & set(csv["id"].to_list())
    rows = [i for i, u in enumerate(pid) if ids.index(u) >= 10]  # candidates + round-1 centers
    sub = pX[rows]
    centers = [rows.index(i) for i in ref]
    want, _ = brute_kcenter(sub, 10, centers)
    assert second == [pid[rows[i]] for i in want]
    pay = _payloads(store)
    assert sum(p.get("selected_round") == 2 for p in pay.values()) == 10
    assert {p.get("selection_name") for p in pay.values() if p.get("selected_round") == 2} == {"round-2"}


def test_balance_where_export_name_and_dry_run(env) -> None:
    tmp, store, ids, X = env
    out = tmp / "sel.parquet"
    args = ["select", "-n", "12", "--balance-by", "weather", "--where", "width >= 40", "--name", "eval-1",
            "--out", str(out), "--export-dir", str(tmp / "exp"), "--device", "cpu", "--quiet"]
    res = cli(store, *args)
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(out)
    assert sorted(df["group"].to_list()) == sorted(WEATHER * 4)
    pay = _payloads(store)
    assert all(pay[u]["width"] >= 40 for u in df["id"].to_list())
    assert all(pay[u].get("selection_name") == "eval-1" for u in df["id"].to_list())
    links = sorted((tmp / "exp").iterdir())
    assert len(links) == 12 and all(p.is_symlink() for p in links) and links[0].name.startswith("00001_")
    res = cli(store, *args)
    assert res.exit_code == 2 and "'eval-1' is already used" in res.output

    before = _payloads(store)
    res = cli(store, "select", "-n", "5", "--strategy", "random", "--seed", "4", "--dry-run", "--out",
              str(tmp / "a.csv"), "--device", "cpu")
    assert res.exit_code == 0 and "dry run" in res.output, res.output
    res = cli(store, "select", "-n", "5", "--strategy", "random", "--seed", "4", "--dry-run", "--out",
              str(tmp / "b.csv"), "--device", "cpu")
    assert _payloads(store) == before
    assert pl.read_csv(tmp / "a.preview.csv")["id"].to_list() == pl.read_csv(tmp / "b.preview.csv")["id"].to_list()
    assert not (tmp / "a.csv").exists()


def test_uncertainty_predictions_by_path_and_config_file(env) -> None:
    tmp, store, ids, X = env
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=60)
    pl.DataFrame({"path": [f"im{i:03d}.jpg" for i in range(10, 70)], "probs": probs.tolist()}).write_parquet(
        tmp / "pred.parquet")
    res = cli(store, "select", "-n", "5", "--strategy", "uncertainty", "--predictions", "pred.parquet",
              "--uncertainty", "least_confidence", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "50 candidates have no prediction" in res.output
    got = pl.read_csv(tmp / "curate-out" / "pool" / "round-1.csv")
    lc = (1 - probs.max(1)) * 1.5
    want = np.argsort(-lc, kind="stable")[:5] + 10
    assert got["path"].to_list() == [str(tmp / "img" / f"im{i:03d}.jpg") for i in want]
    np.testing.assert_allclose(got["uncertainty"].to_numpy(), lc[want - 10], rtol=1e-6)

    (tmp / "sel.yaml").write_text(
        "budget: 6\nstrategies:\n  - {type: diversity}\n  - {type: weights, input: field:width}\n"
        "  - {type: threshold, input: field:width, min: 100}\n"
    )
    res = cli(store, "select", "--config", "sel.yaml", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    got = pl.read_csv(tmp / "curate-out" / "pool" / "round-2.csv")
    assert len(got) == 6 and (got["width"] >= 100).all() and got["strategy"][0] == "custom"


def _err(res) -> str:  # noqa: ANN001
    assert res.exit_code == 2, res.output
    text = " ".join(ln.strip() for ln in res.output.strip().splitlines())  # rich wraps at 80 columns
    assert text.count("error:") == 1, res.output
    return text[text.index("error:"):]


def test_clear_one_line_errors(env, tmp_path) -> None:
    tmp, store, ids, X = env
    assert "budget 999 is larger than the 110 selectable images" in _err(cli(store, "select", "-n", "999"))
    msg = _err(cli(store, "select", "-n", "5", "--balance-by", "wether"))
    assert "unknown metadata key 'wether' for --balance-by; keys in the pool: is_duplicate, path, relpath," in msg
    assert "--budget N or --fraction" in _err(cli(store, "select"))
    pl.DataFrame({"id": [ids[20], "not-an-id"], "score": [1.0, 2.0]}).write_csv(tmp / "p.csv")
    assert "name images not in the collection" in _err(
        cli(store, "select", "-n", "5", "--predictions", "p.csv", "--uncertainty", "score"))
    pl.DataFrame({"id": [ids[20], ids[21]], "p_a": [0.5, float("nan")], "p_b": [0.5, 0.5]}).write_csv(tmp / "n.csv")
    assert "NaN probability in row 2" in _err(cli(store, "select", "-n", "5", "--predictions", "n.csv"))
    assert "unknown --strategy" in _err(cli(store, "select", "-n", "5", "--strategy", "best"))
    (tmp / "l.txt").write_text("im011.jpg\nnope.jpg\n")
    assert "1 entry not in the collection (e.g. 'nope.jpg'); nothing was marked" in _err(
        cli(store, "labeled", "l.txt"))
    empty = tmp / "empty"
    with open_store(str(empty)) as st:
        st.ensure_collection("pool")
    assert "holds no vectors yet" in _err(cli(empty, "select", "-n", "5"))
    assert "not found" in _err(cli(tmp / "nothing", "select", "-n", "5"))


def test_fraction_and_labeled_from_text_file(env) -> None:
    tmp, store, ids, X = env
    (tmp / "l.txt").write_text("\n".join([f"im{i:03d}.jpg" for i in range(10, 20)] + [ids[30]]))
    res = cli(store, "labeled", "l.txt")
    assert res.exit_code == 0 and "marked 11 image(s)" in res.output, res.output
    res = cli(store, "select", "--fraction", "0.1", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    assert "selected 10 of 99 candidates" in res.output  # 0.1 x 99 -> 10
    got = set(pl.read_csv(tmp / "curate-out" / "pool" / "round-1.csv")["id"].to_list())
    assert ids[30] not in got and not {ids[i] for i in range(10, 20)} & got
    res = cli(store, "labeled", "l.txt", "--unset")
    assert "marked 11 image(s) as unlabeled" in res.output


@pytest.mark.parametrize("cmd", ["select", "labeled"])
def test_help_has_an_example(cmd) -> None:
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0 and "Example: curate " + cmd in res.output


def test_similarity_query_by_path_and_duplicates_flag(env) -> None:
    tmp, store, ids, X = env
    res = cli(store, "select", "-n", "4", "--strategy", "similarity", "--similar-to", "im050.jpg",
              "--similar-to", ids[60], "--dry-run", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    got = pl.read_csv(tmp / "curate-out" / "pool" / "round-1.preview.csv")
    sims = np.maximum(X[10:] @ X[50], X[10:] @ X[60])  # candidates: rows 10.. (failed, duplicates excluded)
    want = [ids[10 + i] for i in np.argsort(-sims, kind="stable")[:4]]
    assert got["id"].to_list() == want and got["id"][0] in (ids[50], ids[60])
    res = cli(store, "select", "-n", "116", "--strategy", "random", "--include-duplicates", "--dry-run",
              "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    got = set(pl.read_csv(tmp / "curate-out" / "pool" / "round-1.preview.csv")["id"].to_list())
    assert got == set(ids[4:])  # every point with a vector, duplicates included; failed never
