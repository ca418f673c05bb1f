"""One behaviour, two backends: every test runs on Qdrant Edge and on qdrant-client (":memory:")."""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from curate.store import StoreError, StoreLockedError, open_store, parse_where
from curate.store.filters import Condition


@pytest.fixture(params=["edge", "remote"])
def store(request, tmp_path):
    s = open_store(str(tmp_path / "store")) if request.param == "edge" else open_store(url=":memory:")
    yield s
    s.close()


def _ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(store, n=300, d=8):
    ids = _ids(n)
    payloads = [
        {
            "path": f"/pool/{i}.png",
            "width": 10 + i,
            "label": i % 3,
            "source": ["camA", "camB"][i % 2],
            "score": i / 7.0,
        }
        for i in range(n)
    ]
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"family": "test", "dim": d})
    store.upsert_points("pool", ids, payloads)
    store.upsert_vectors("pool", "enc", ids, _vectors(n, d))
    return ids, payloads


def test_roundtrip_vectors_sorted_by_id(store):
    ids, _ = _fill(store)
    got_ids, mat = store.load_vectors("pool", "enc")
    assert got_ids == sorted(ids)
    want = _vectors(300, 8)[[ids.index(i) for i in got_ids]]
    np.testing.assert_allclose(mat, want, atol=1e-6)
    np.testing.assert_allclose(store.get_vectors("pool", "enc", ids[:5]), _vectors(300, 8)[:5], atol=1e-6)
    assert store.count("pool") == 300 and store.count_vectors("pool", "enc") == 300
    assert store.list_collections() == ["pool"]


@pytest.mark.parametrize(
    "where",
    [
        "width >= 100",
        "label == 1",
        "source == camB",
        "label in [0, 2]",
        "label != 1",
        "width < 50 and source == camA",
        "score > 10.5",
        "label not in [1]",
        "missing_key exists",
        "missing_key missing",
    ],
)
def test_filters_match_reference(store, where):
    ids, payloads = _fill(store)
    conds = parse_where(where)
    want = {i for i, p in zip(ids, payloads, strict=True) if all(c.matches(p) for c in conds)}
    got = {pid for batch in store.scan_payload("pool", conds) for pid, _ in batch}
    assert got == want
    assert store.count("pool", conds) == len(want)
    vec_ids, mat = store.load_vectors("pool", "enc", where=conds)
    assert vec_ids == sorted(want) and mat.shape == (len(want), 8)


def test_payload_updates(store):
    ids, _ = _fill(store)
    store.set_payload("pool", ids[:10], {"selected_round": 1})
    store.set_payloads("pool", {ids[20]: {"rank": 0}, ids[21]: {"rank": 1}, ids[22]: {"selected_round": 1}})
    sel = store.payloads("pool", [Condition("selected_round", "==", 1)], fields=["path"])
    assert set(sel) == set(ids[:10]) | {ids[22]}
    assert all(set(p) == {"path"} for p in sel.values())
    assert store.payloads("pool", parse_where("rank exists"), fields=["rank"]) == {
        ids[20]: {"rank": 0},
        ids[21]: {"rank": 1},
    }
    store.delete_payload_keys("pool", ["selected_round"], parse_where("label == 0"))
    left = set(store.payloads("pool", parse_where("selected_round exists"), fields=[]))
    assert left == {i for k, i in enumerate(ids[:10]) if k % 3 != 0} | ({ids[22]} if 22 % 3 else set())
    store.delete_payload_keys("pool", ["selected_round"])
    assert store.count("pool", parse_where("selected_round exists")) == 0


def test_existing_ids_and_second_encoder(store):
    ids, _ = _fill(store)
    assert store.existing_ids("pool", ids[:5] + _ids(3, seed=9)) == set(ids[:5])
    assert store.existing_ids("pool", ids[:5], encoder="other") == set()
    store.ensure_encoder("pool", "other", {"family": "test", "dim": 4})
    store.upsert_vectors("pool", "other", ids[:50], _vectors(50, 4, seed=1))
    assert store.existing_ids("pool", ids[:60], encoder="other") == set(ids[:50])
    assert sorted(store.encoders("pool")) == ["enc", "other"]
    assert store.count_vectors("pool", "other") == 50 and store.count_vectors("pool", "enc") == 300
    with pytest.raises(StoreError, match="dim"):
        store.ensure_encoder("pool", "other", {"family": "test", "dim": 5})
    assert store.require_encoder("pool", "enc") == "enc"
    with pytest.raises(StoreError, match="several encoders"):
        store.require_encoder("pool", None)
    with pytest.raises(StoreError, match="not found"):
        store.require_encoder("nope", None)


def test_drop_and_invalid_names(store):
    _fill(store)
    store.drop_collection("pool")
    assert store.list_collections() == []
    with pytest.raises(StoreError, match="invalid collection name"):
        store.ensure_collection("bad/name")
    with pytest.raises(StoreError, match="invalid collection name"):
        store.ensure_collection("a__b")


def test_edge_store_persists_and_locks(tmp_path):
    path = str(tmp_path / "store")
    s = open_store(path)
    ids, _ = _fill(s)
    # A second process must get a clear error, not corrupt the store.
    code = f"from curate.store import open_store\nopen_store({path!r})"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode != 0 and "in use by curate process" in res.stderr
    with pytest.raises(StoreLockedError):
        open_store(path)
    s.close()
    s2 = open_store(path)
    assert s2.count("pool") == 300 and s2.load_vectors("pool", "enc")[0] == sorted(ids)
    s2.close()


def test_build_index_keeps_vectors(tmp_path):
    s = open_store(str(tmp_path / "store"))
    ids, _ = _fill(s)
    assert s._vectors("pool", "enc").info().indexed_vectors_count == 0  # ingest builds no index
    s.build_index("pool", "enc")
    assert s._vectors("pool", "enc").info().indexed_vectors_count == 300
    assert s.load_vectors("pool", "enc")[0] == sorted(ids)
    s.close()


def test_edge_vector_cache_rebuilds_when_stale_or_missing(tmp_path):
    import qdrant_edge as qe

    from curate.store.edge import EdgeStore

    s = open_store(str(tmp_path / "store"))
    assert isinstance(s, EdgeStore)
    ids, _ = _fill(s)
    want_ids, want = s.load_vectors("pool", "enc")
    cache = s._cache("pool", "enc")
    # missing cache -> rebuilt from the shard
    cache.clear()
    got_ids, got = s.load_vectors("pool", "enc")
    assert got_ids == want_ids and np.array_equal(got, want)
    # a cache that lags the shard (crash between the two writes) -> rebuilt
    extra = _ids(5, seed=3)
    s.upsert_points("pool", extra, [{"path": "x"}] * 5)
    points = [qe.Point(i, {"enc": v}) for i, v in zip(extra, _vectors(5, 8, 7).tolist(), strict=True)]
    s._vectors("pool", "enc").update(qe.UpdateOperation.upsert_points(points))  # shard only, as after a crash
    got_ids, got = s.load_vectors("pool", "enc")
    assert got_ids == sorted(ids + extra) and got.shape == (305, 8)
    # a torn last write (partial row) is ignored, then the count check repairs the cache
    with open(cache.folder / "rows.f32", "ab") as f:
        f.write(b"\x00" * 7)
    assert s.load_vectors("pool", "enc")[0] == sorted(ids + extra)
    # a corrupted row is caught by the sample check only if sampled: corrupt all rows to be sure
    raw = np.fromfile(cache.folder / "rows.f32", dtype=np.float32)
    (raw * 0 + 0.5).astype(np.float32).tofile(cache.folder / "rows.f32")
    got_ids, got = s.load_vectors("pool", "enc")
    np.testing.assert_allclose(got[[got_ids.index(i) for i in want_ids]], want, atol=1e-6)
    s.close()
