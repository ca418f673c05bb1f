"""Ids as one sorted bytes column (IdColumn) in select and slice: lookups equal Python's on ids of every
length (short, > 15 bytes, unicode), the columnar read equals `load_vectors`' list of str, and the
outputs of select and slice equal those of the list path (another backend) and the pre-column rules."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest

from curate.select.compose import Pool, canonical_order
from curate.select.config import SelectionConfig, shorthand
from curate.select.run import run_selection
from curate.slices import SliceRequest, build_slice
from curate.store import Condition, columnar, open_store, parse_where
from curate.store.columnar import load_id_column
from curate.store.idcolumn import IdColumn

WORDS = ["a", "ab", "b", "é", "z" * 15, "z" * 16, "/data/ünïcode/路径/img_000001.jpg", "/data/img_2.jpg",
         "f0e1d2c3-b4a5-4697-8899-aabbccddeeff", "日本", "ab\u0301", "ZZ"]


def test_id_column_lookups_equal_python_on_short_long_and_unicode_ids():
    ids = sorted(set(WORDS))
    assert sorted(ids, key=lambda s: s.encode()) == ids  # UTF-8 bytes sort as the strings do
    col = IdColumn.from_strings(ids)
    assert len(col) == len(ids) and list(col) == ids and [col[i] for i in range(len(ids))] == ids
    queries = ids + ["", "a" * 40, "/data/ünïcode/路径/img_000001.jpgx", "z" * 14, "é" * 3, "日"]
    want = [ids.index(q) if q in ids else -1 for q in queries]
    assert col.rows(queries).tolist() == want
    assert col.mask(queries[::-1]).tolist() == [True] * len(ids)
    assert col.mask(["日本", "nope"]).tolist() == [i == "日本" for i in ids]
    rows = np.array([5, 0, 7, 7])
    assert col.strings(rows) == [ids[r] for r in rows]
    keep = np.array([i % 3 == 0 for i in range(len(ids))])
    assert list(col.take(keep)) == [i for i, k in zip(ids, keep, strict=True) if k]
    assert list(col.take(np.flatnonzero(keep))) == list(col.take(keep))
    assert list(col[2:6]) == ids[2:6]
    with pytest.raises(ValueError, match="sorted"):
        IdColumn.from_strings(ids[::-1])
    with pytest.raises(ValueError, match="sorted"):
        col.take(np.array([3, 1]))
    empty = IdColumn.from_strings([])
    assert len(empty) == 0 and empty.rows(["a"]).tolist() == [-1] and list(empty) == []


def test_canonical_order_of_an_id_column_equals_the_list_path():
    ids = sorted(set(WORDS))
    X = np.random.default_rng(0).standard_normal((len(ids), 4)).astype(np.float32)
    n = len(ids)

    def pool(i):  # noqa: ANN001, ANN202
        return Pool(X, np.ones(n, bool), np.zeros(n, bool), [{} for _ in ids], ids=i)

    assert canonical_order(pool(IdColumn.from_strings(ids))).tolist() == canonical_order(pool(ids)).tolist()
    assert canonical_order(pool(ids)).tolist() == list(range(n))


def test_id_column_lookups_on_many_long_ids_in_blocks(monkeypatch):
    """The case numpy 2.4's StringDType searchsorted gets wrong: many ids > 15 bytes; blocks of 7."""
    from curate.store import idcolumn

    monkeypatch.setattr(idcolumn, "LOOKUP_BLOCK", 7)
    rng = np.random.default_rng(0)
    ids = sorted({f"/pool/dir_{rng.integers(1000):03d}/ïmg_{rng.integers(10**6):07d}.jpg" for _ in range(500)})
    col = IdColumn.from_strings(ids)
    q = [ids[i] for i in rng.permutation(len(ids))[:100]] + [f"/pool/none_{i}.jpg" for i in range(20)]
    where = {s: i for i, s in enumerate(ids)}
    assert col.rows(q).tolist() == [where.get(s, -1) for s in q]


def _store(path, n: int = 240, d: int = 8, seed: int = 0):
    """Edge store: unicode and plain paths, a `split` field, failed / labeled / duplicate / picked flags."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    pay = [{"path": f"/data/ünïcode/路径/{k}.jpg" if k % 2 else f"/d/{k}.png", "relpath": f"{k}.jpg",
            "split": "train" if k % 3 else "test", "weather": ["sun", "rain"][k % 2]} for k in range(n)]
    for k in range(0, 20, 4):
        pay[k]["labeled"] = True
    for k in range(1, 20, 4):
        pay[k]["is_duplicate"] = True
    pay[2]["selected_round"], pay[2]["selection_name"] = 1, "first"
    failed = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(3)]
    with open_store(str(path)) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": d})
        s.upsert_points("pool", ids + failed, pay + [{"path": f"/bad/{i}.jpg", "failed": True} for i in range(3)])
        s.upsert_vectors("pool", "enc", ids, x)
    return ids, x, pay


@pytest.fixture
def edge_pool(tmp_path):
    ids, x, pay = _store(tmp_path / "s")
    return tmp_path / "s", ids, x, pay


def _list_path(monkeypatch):
    """Make the embedded store read like any other backend: `load_vectors`' list of str."""
    monkeypatch.setattr(columnar, "_sorted_rows", lambda *a: None)


@pytest.mark.parametrize("where", [None, "split == 'test'"])
def test_load_id_column_equals_load_vectors(edge_pool, monkeypatch, where):
    path, ids, x, pay = edge_pool
    conds = parse_where([where]) if where else None
    want = sorted(i for i, p in zip(ids, pay, strict=True) if where is None or p["split"] == "test")
    with open_store(str(path)) as st:
        ref_ids, ref = st.load_vectors("pool", "enc", conds)
        col, got = load_id_column(st, "pool", "enc", conds)
        _list_path(monkeypatch)
        col2, got2 = load_id_column(st, "pool", "enc", conds)
    assert ref_ids == want and list(col) == want and list(col2) == want
    assert np.array_equal(got, ref) and np.array_equal(got2, ref)
    assert got.shape == (len(want), x.shape[1])


def test_load_id_column_after_a_write_in_this_session(edge_pool):
    """Unsealed cache (this process wrote vectors): validated against the shard, same sorted ids."""
    path, ids, x, _ = edge_pool
    extra = [str(uuid.UUID(int=k + 1)) for k in range(5)]  # sorts first: 00000000-...
    with open_store(str(path)) as st:
        st.upsert_points("pool", extra, [{"path": f"/new/{k}"} for k in range(5)])
        st.upsert_vectors("pool", "enc", extra, x[:5])
        col, got = load_id_column(st, "pool", "enc", [Condition("path", "==", "/new/3")])
        assert list(col) == [extra[3]] and np.allclose(got, x[3:4], atol=1e-3)
        col, _ = load_id_column(st, "pool", "enc")
        assert list(col) == sorted(ids + extra)


def _old_candidates(ids: list[str], payloads: dict, allowed: set[str] | None) -> tuple[set[str], set[str]]:
    """The per-id rule of select before the id column (candidates, centers), as it was written."""
    cand, center = set(), set()
    for pid in ids:
        p = payloads.get(pid, {})
        if p.get("failed") is True:
            continue
        if p.get("labeled") is True or p.get("selected_round") is not None:
            center.add(pid)
        elif p.get("is_duplicate") is True:
            continue
        elif allowed is not None and pid not in allowed:
            continue
        else:
            cand.add(pid)
    return cand, center


@pytest.mark.parametrize("strategy, where", [("kcenter", []), ("kcenter", ["split == 'train'"]),
                                             ("auto", ["split == 'test'"]), ("balance", [])])
def test_select_outputs_equal_the_list_path(edge_pool, monkeypatch, tmp_path, strategy, where):
    path, ids, _, pay = edge_pool
    steps, label = shorthand("kcenter", balance_by=["weather"]) if strategy == "balance" else shorthand(strategy)
    cfg = lambda: SelectionConfig(steps=steps, strategy=label, budget=25, where=list(where))  # noqa: E731
    out = {}
    for how in ("column", "list"):
        if how == "list":
            _list_path(monkeypatch)
        with open_store(str(path)) as st:
            res = run_selection(st, "pool", cfg(), device="cpu", out_dir=tmp_path / how, dry_run=True)
        out[how] = res, [p.read_bytes() for p in res.manifests]
    (a, files_a), (b, files_b) = out["column"], out["list"]
    assert files_a == files_b and a.ids == b.ids and a.messages == b.messages
    payloads = dict(zip(ids, pay, strict=True))
    allowed = None if not where else {i for i, p in payloads.items() if p["split"] == where[0].split("'")[1]}
    cand, center = _old_candidates(sorted(ids), payloads, allowed)
    assert (a.n_candidates, a.n_centers) == (len(cand), len(center)) and set(a.ids) <= cand
    assert a.paths == [payloads[i]["path"] for i in a.ids] and len(a.ids) == 25
    df = pl.read_parquet(a.manifests[1])
    assert df["id"].to_list() == a.ids and df["path"].to_list() == a.paths


def test_select_uncertainty_maps_each_prediction_to_its_row(edge_pool, tmp_path):
    path, ids, _, pay = edge_pool
    rng = np.random.default_rng(4)
    score = {i: float(s) for i, s in zip(ids, rng.uniform(0.1, 1.0, len(ids)), strict=True)}
    pl.DataFrame({"id": list(score), "score": list(score.values())}).write_parquet(tmp_path / "p.parquet")
    steps, label = shorthand("uncertainty-kcenter", predictions=str(tmp_path / "p.parquet"))
    cfg = SelectionConfig(steps=steps, strategy=label, budget=10, predictions=str(tmp_path / "p.parquet"),
                          uncertainty="score")
    with open_store(str(path)) as st:
        res = run_selection(st, "pool", cfg, device="cpu", out_dir=tmp_path / "o", dry_run=True)
    got = pl.read_parquet(res.manifests[1])
    assert got["uncertainty"].to_list() == [score[i] for i in res.ids]


@pytest.mark.parametrize("req", [
    SliceRequest("ex", examples=["/d/4.png"], top_k=30),
    SliceRequest("w", examples=["3.jpg", "/data/ünïcode/路径/5.jpg"], example_mode="each", top_k=4,
                 where=[Condition("split", "==", "train")]),
    SliceRequest("b", examples=["/d/6.png"], top_k=20, balanced_by="weather", exclude_near="first"),
    SliceRequest("f", where=[Condition("split", "==", "test")]),
])
def test_slice_outputs_equal_the_list_path(edge_pool, monkeypatch, tmp_path, req):
    path, ids, x, pay = edge_pool
    tables = {}
    for how in ("column", "list"):
        if how == "list":
            _list_path(monkeypatch)
        with open_store(str(path)) as st:
            sl = build_slice(st, "pool", "enc", req, device="cpu")
        tables[how] = sl.table.write_csv().encode(), sl.ids, sl.n_candidates, sl.n_excluded
    assert tables["column"] == tables["list"]
    payloads = dict(zip(ids, pay, strict=True))
    sl_ids = tables["column"][1]
    if req.where:
        assert all(payloads[i]["split"] == req.where[0].value for i in sl_ids)
        assert tables["column"][2] == sum(p["split"] == req.where[0].value for p in pay)
    if req.name == "ex":  # brute force: cosine to image 4, ties by id
        q = x[4]
        order = sorted(range(len(ids)), key=lambda r: (-float(x[r] @ q), ids[r]))
        assert sl_ids[:10] == [ids[r] for r in order[:10]]


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_payloads_of_fetches_only_the_given_points(tmp_path, backend):
    """select and slice read their picks' paths by id (no whole-pool scan); same payloads as a scan."""
    ids = [str(uuid.UUID(int=k + 1)) for k in range(30)]
    pay = [{"path": f"/d/ünï_{k}.jpg", "split": "a" if k % 2 else "b"} for k in range(30)]
    st = open_store(str(tmp_path / "s")) if backend == "edge" else open_store(url=":memory:")
    try:
        st.ensure_collection("pool")
        st.upsert_points("pool", ids, pay)
        want = [ids[7], ids[3], str(uuid.UUID(int=999)), ids[29]]
        full = st.payloads("pool")
        assert st.payloads_of("pool", want) == {i: full[i] for i in want if i in full}
        assert st.payloads_of("pool", want, ["path"]) == {i: {"path": full[i]["path"]} for i in want if i in full}
        assert st.payloads_of("pool", []) == {}
    finally:
        st.close()
