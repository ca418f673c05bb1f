"""Out-of-core paths (fp16 resident matrix, fp32 tiles, no pool-sized copies, bounded ingest)
against the in-memory fp32 ones on small data: identical picks, groups and slices where the data has
no near ties, and the documented tolerance where it has."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from curate import kernels
from curate.dedup.run import run_dedup
from curate.kernels import as_unit_rows, topk_similarity
from curate.select.config import SelectionConfig, shorthand
from curate.select.kcenter import kcenter_select
from curate.select.run import run_selection
from curate.slices import SliceRequest, build_slice
from curate.store import Condition, edge, open_store
from curate.store.base import Store
from curate.store.resident import load_resident, resident_dtype
from curate.store.vector_cache import VectorCache

CPU = torch.device("cpu")


def _blobs(n: int = 1500, d: int = 16, centers: int = 60, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centers (cos ~0.8 inside a blob), with 2% copies (cos > 0.9999)."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centers, d))
    x = mu[rng.integers(0, centers, n)] + spread * rng.standard_normal((n, d))
    x[1::50] = x[0::50] + 1e-4 * rng.standard_normal((len(x[1::50]), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def pool_store(tmp_path):
    x = _blobs(600)
    rng = np.random.default_rng(1)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(len(x))]
    with open_store(str(tmp_path / "s")) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": x.shape[1]})
        s.upsert_points("pool", ids, [{"path": f"/p/{i:05d}.jpg", "sha256": f"{i:064x}"} for i in range(len(x))])
        s.upsert_vectors("pool", "enc", ids, x)
    return tmp_path / "s", ids, x


def test_resident_dtype_policy(monkeypatch):
    monkeypatch.delenv("CURATE_RESIDENT_DTYPE", raising=False)
    assert resident_dtype(1000, 512) == np.float32
    assert resident_dtype(10_000_000, 512) == np.float16  # 20 GB of fp32 is over 1/8 of any RAM here
    monkeypatch.setenv("CURATE_RESIDENT_DTYPE", "float16")
    assert resident_dtype(10, 4) == np.float16
    monkeypatch.setenv("CURATE_RESIDENT_DTYPE", "bf16")
    with pytest.raises(ValueError, match="CURATE_RESIDENT_DTYPE"):
        resident_dtype(10, 4)


def test_no_pool_sized_copy_of_unit_rows(monkeypatch):
    monkeypatch.setattr(kernels, "NO_COPY_BYTES", 0)
    x = _blobs(200, 8)
    assert as_unit_rows(x, CPU, torch.float32).data_ptr() == x.ctypes.data  # used in place
    h = x.astype(np.float16)
    t = as_unit_rows(h, CPU, torch.float32)
    assert t.dtype == torch.float16 and t.data_ptr() == h.ctypes.data  # stays fp16, no copy
    y = 3 * x  # not unit: normalized (into a copy), as before
    np.testing.assert_allclose(as_unit_rows(y, CPU, torch.float32).numpy(), x, atol=1e-6)


def test_topk_fp16_matches_fp32_where_no_near_ties():
    x = _blobs(800, seed=3)
    q = x[::40]
    s32, i32 = topk_similarity(q, x, 5, device=CPU)
    s16, i16 = topk_similarity(q.astype(np.float16), x.astype(np.float16), 5, device=CPU)
    assert np.abs(s16 - s32).max() < 1e-3  # the documented fp16 tolerance on a cosine
    gap = np.diff(-s32, axis=1).min(axis=1)  # rows whose top-5 are separated by more than that
    clear = gap > 2e-3
    assert clear.sum() >= 5 and np.array_equal(i16[clear], i32[clear])


def test_kcenter_fp16_picks_identical_or_near_tie():
    x = _blobs(1200, 16, centers=40, seed=5)
    a = kcenter_select(x, 60, device=CPU)
    b = kcenter_select(x.astype(np.float16), 60, device=CPU)
    first_diff = next((t for t in range(60) if a.indices[t] != b.indices[t]), 60)
    assert first_diff >= 25  # the first picks (far apart) are identical
    if first_diff < 60:  # later picks may differ only on a near tie (fp32 distances within 1e-3)
        assert abs(a.distances[first_diff] - b.distances[first_diff]) < 1e-3
    # covering radius of the picks, measured in fp32 on the fp32 rows
    radius = [float(np.sqrt(np.maximum(0, 2 - 2 * (x @ x[r.indices].T).max(axis=1))).max()) for r in (a, b)]
    assert abs(radius[0] - radius[1]) < 1e-3


# "auto" is density-kcenter above AUTO_TYPICALITY_MAX picks (every large pool); typicality runs
# k-means, whose clusters can move with fp16 rounding, so it is not compared pick for pick
@pytest.mark.parametrize("strategy", ["kcenter", "density-kcenter"])
def test_select_through_store_fp16_equals_fp32(pool_store, monkeypatch, strategy, tmp_path):
    path, ids, _ = pool_store
    picks = {}
    for dtype in ("float32", "float16"):
        monkeypatch.setenv("CURATE_RESIDENT_DTYPE", dtype)
        steps, label = shorthand(strategy)
        with open_store(str(path)) as st:
            assert load_resident(st, "pool", "enc")[1].dtype == np.dtype(dtype)
            res = run_selection(st, "pool", SelectionConfig(steps=steps, strategy=label, budget=40),
                                device="cpu", out_dir=tmp_path / dtype, dry_run=True)
        picks[dtype] = res.ids
        path_of = {pid: f"/p/{i:05d}.jpg" for i, pid in enumerate(ids)}  # lean read: paths of the picks only
        assert res.paths == [path_of[pid] for pid in res.ids]
    assert len(picks["float32"]) == 40
    if strategy == "kcenter":
        assert picks["float16"] == picks["float32"]
    else:  # the density weight is a product with k-NN distances: fp16 moves near-equal products
        assert len(set(picks["float16"]) & set(picks["float32"])) >= 32  # 36 of 40 here


def test_dedup_clustered_fp16_groups_equal_fp32(pool_store, monkeypatch):
    path, _, _ = pool_store
    tables = {}
    for dtype in ("float32", "float16"):
        monkeypatch.setenv("CURATE_RESIDENT_DTYPE", dtype)
        with open_store(str(path)) as st:
            res = run_dedup(st, "pool", "enc", None, threshold=0.98, write_tags=False, force=True,
                            mode="clustered", n_clusters=8, device="cpu")
        tables[dtype] = res.table.select("id", "group", "kept").sort("id")
    assert tables["float32"]["group"].n_unique() == 12  # the 12 planted copy pairs
    assert tables["float16"].equals(tables["float32"])


def _near_cut_pairs(n_pairs: int, cut: float, d: int = 64, seed: int = 0) -> np.ndarray:
    """Random unit rows, each with a partner at cosine cut +- 1e-5..1.5e-4 (fp32-exact to ~1e-7):
    fp16 rounding (~1e-4 on a cosine at d=64) puts many of them on the other side of the cut."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_pairs, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    u = rng.standard_normal((n_pairs, d))
    u -= (u * base).sum(1, keepdims=True) * base
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    cos = cut + rng.choice([-1, 1], n_pairs) * rng.uniform(1e-5, 1.5e-4, n_pairs)
    partner = cos[:, None] * base + np.sqrt(1 - cos**2)[:, None] * u
    return np.concatenate([base, partner]).astype(np.float32)


@pytest.mark.parametrize("mode", ["exact", "clustered"])
def test_dedup_fp16_rescores_pairs_near_the_cut(tmp_path, monkeypatch, mode):
    x = _near_cut_pairs(150, 0.98)
    rng = np.random.default_rng(2)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(len(x))]
    with open_store(str(tmp_path / "s")) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": x.shape[1]})
        s.upsert_points("pool", ids, [{"path": f"/p/{i:05d}.jpg"} for i in range(len(x))])
        s.upsert_vectors("pool", "enc", ids, x)

    def groups(dtype: str) -> tuple[object, int]:
        monkeypatch.setenv("CURATE_RESIDENT_DTYPE", dtype)
        with open_store(str(tmp_path / "s")) as st:
            res = run_dedup(st, "pool", "enc", None, threshold=0.98, write_tags=False, force=True, verify="off",
                            mode=mode, n_clusters=4, device="cpu")
        return res.table.select("id", "group", "kept").sort("id"), res.n_groups

    ref, n_ref = groups("float32")
    assert 40 < n_ref < 110  # about half the planted pairs are above the cut in fp32
    got, _ = groups("float16")
    assert got.equals(ref)
    from curate.dedup import run

    monkeypatch.setattr(run, "_rescorer", lambda pool, rows: None)  # fp16 as it is: pairs flip
    flipped, _ = groups("float16")
    assert not flipped.equals(ref)


@pytest.mark.parametrize("where", [None, [Condition("sha256", "!=", f"{3:064x}")]])
def test_columnar_resident_read_equals_load_resident(pool_store, monkeypatch, where):
    from curate.store.columnar import load_resident_columnar

    path, ids, _ = pool_store
    monkeypatch.setenv("CURATE_RESIDENT_DTYPE", "float16")
    with open_store(str(path)) as st:
        ref_ids, ref = load_resident(st, "pool", "enc", where)
        opened = []
        monkeypatch.setattr(st, "_vectors", lambda *a, **k: opened.append(a) or pytest.fail("shard opened"))
        if where is None:  # sealed cache: ids straight from its 16-byte UUIDs, the shard stays closed
            got_ids, got = load_resident_columnar(st, "pool", "enc", where)
            assert got_ids.dtype.kind == "T" and not opened
        else:
            monkeypatch.undo()
            monkeypatch.setenv("CURATE_RESIDENT_DTYPE", "float16")
            got_ids, got = load_resident_columnar(st, "pool", "enc", where)
    assert got_ids.tolist() == ref_ids and len(ref_ids) == len(ids) - (where is not None)
    assert got.dtype == np.float16 and np.array_equal(got, ref)


def test_slice_example_fp16_equals_fp32(pool_store, monkeypatch):
    path, _, _ = pool_store
    got = {}
    for dtype in ("float32", "float16"):
        monkeypatch.setenv("CURATE_RESIDENT_DTYPE", dtype)
        with open_store(str(path)) as st:
            sl = build_slice(st, "pool", "enc", SliceRequest(name="ex", examples=["/p/00123.jpg"], top_k=20),
                             device="cpu")
        got[dtype] = (sl.ids, sl.scores)
    assert got["float16"][0][:5] == got["float32"][0][:5]  # the copy and the nearest blob members
    assert np.abs(got["float16"][1] - got["float32"][1]).max() < 1e-3


def test_ingest_reopens_shards_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "REOPEN_AFTER_POINTS", 50)
    x = _blobs(230, 8)
    rng = np.random.default_rng(2)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(len(x))]
    with open_store(str(tmp_path / "s")) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": 8})
        for lo in range(0, len(x), 40):  # 6 batches: shards closed and reopened 4 times each
            s.upsert_points("pool", ids[lo : lo + 40], [{"path": f"/p/{i}"} for i in range(lo, min(lo + 40, 230))])
            s.upsert_vectors("pool", "enc", ids[lo : lo + 40], x[lo : lo + 40])
        assert s.count("pool") == 230 and s.count_vectors("pool", "enc") == 230
    with open_store(str(tmp_path / "s")) as s:
        got_ids, got = s.load_vectors("pool", "enc")
        order = np.argsort(ids)
        assert got_ids == sorted(ids) and np.allclose(got, x[order], atol=1e-6)
        assert np.allclose(s.get_vectors("pool", "enc", ids[:5]), x[:5], atol=1e-6)


def _write(path, ids, x):
    with open_store(str(path)) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": x.shape[1]})
        s.upsert_points("pool", ids, [{"path": f"/p/{i}"} for i in range(len(ids))])
        s.upsert_vectors("pool", "enc", ids, x)


def test_sealed_cache_is_read_without_opening_the_vector_shard(tmp_path):
    x = _blobs(120, 8)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(120)]
    _write(tmp_path / "s", ids, x)
    with open_store(str(tmp_path / "s")) as s:
        assert s.count_vectors("pool", "enc") == 120
        got_ids, got = s.load_vectors("pool", "enc")
        assert ("pool", "enc") not in s._shards  # never opened (mapped) for this read
        assert got_ids == ids and np.allclose(got, x, atol=1e-6)
        assert np.array_equal(got, Store.load_vectors(s, "pool", "enc")[1])  # what the shard holds


def test_a_failed_write_leaves_no_seal_and_the_next_read_checks_the_shard(tmp_path, monkeypatch):
    x = _blobs(120, 8)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(120)]
    _write(tmp_path / "s", ids[:60], x[:60])
    calls = {"n": 0}
    append = VectorCache.append

    def flaky(self, *a):  # the shard gets the second batch, the cache does not (a crash between)
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        append(self, *a)

    monkeypatch.setattr(edge, "_WRITE_BATCH", 30)
    monkeypatch.setattr(VectorCache, "append", flaky)
    with open_store(str(tmp_path / "s")) as s, pytest.raises(OSError):
        s.upsert_vectors("pool", "enc", ids[60:], x[60:])
    monkeypatch.setattr(VectorCache, "append", append)
    with open_store(str(tmp_path / "s")) as s:
        assert s.count_vectors("pool", "enc") == 120  # from the shard: the seal is gone
        got_ids, got = s.load_vectors("pool", "enc")  # cache lagged: rebuilt from the shard
        assert got_ids == ids and np.allclose(got, x, atol=1e-6)
    with open_store(str(tmp_path / "s")) as s:  # and sealed again after that check
        assert s.load_vectors("pool", "enc")[0] == ids and ("pool", "enc") not in s._shards


def test_a_whole_pool_scan_releases_the_payload_shard_and_later_calls_reopen_it(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "REOPEN_AFTER_POINTS", 50)
    x = _blobs(120, 8)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(120)]
    _write(tmp_path / "s", ids, x)
    with open_store(str(tmp_path / "s")) as s:
        s.set_payload("pool", ids[:7], {"flag": True})
        seen = 0
        for batch in s.scan_payload("pool", fields=["path"], batch=40):  # nested whole-pool scans
            seen += len(batch)
            assert len(s.payloads("pool", fields=[])) == 120
        assert seen == 120 and ("pool", "") not in s._shards  # released after the full scan
        assert s.count("pool", [Condition("flag", "==", True)]) == 7  # reopened on demand
        s.delete_payload_keys("pool", ["flag"], [Condition("flag", "==", True)])  # bool: scan, then write
        assert s.count("pool", [Condition("flag", "exists")]) == 0
