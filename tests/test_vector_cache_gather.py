"""The out-of-core read (ids in memory, rows gathered block by block from the cache file) gives the
same matrix, picks and duplicate groups as the in-memory read of the shard."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from curate.dedup.linkage import star_groups
from curate.select.kcenter import kcenter_greedy
from curate.store import Condition, open_store
from curate.store import vector_cache as vc
from curate.store.base import Store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(vc, "GATHER_BLOCK_ROWS", 7)  # many blocks, partial last block
    rng = np.random.default_rng(1)
    n, d = 240, 16
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[1::10] = x[0::10] + 0.01  # near copies for dedup
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = open_store(str(tmp_path / "store"))
    s.ensure_collection("pool")
    s.ensure_encoder("pool", "enc", {"dim": d})
    s.upsert_points("pool", ids, [{"path": f"/p/{i}.jpg", "odd": i % 2} for i in range(n)])
    s.upsert_vectors("pool", "enc", ids, x)
    s.upsert_vectors("pool", "enc", ids[:30], x[30:60])  # rewritten ids: the cache's last row must win
    yield s
    s.close()


@pytest.mark.parametrize("where", [None, [Condition("odd", "==", 1)]])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gathered_matrix_equals_in_memory_read(store, where, dtype):
    got_ids, got = store.load_vectors("pool", "enc", where, dtype=dtype)
    want_ids, want = Store.load_vectors(store, "pool", "enc", where, dtype=dtype)  # scrolls the shard
    assert got_ids == want_ids and got.dtype == want.dtype and np.array_equal(got, want)
    assert len(got_ids) == (120 if where else 240)


def test_picks_and_groups_are_identical(store):
    ids, x = store.load_vectors("pool", "enc")
    ref_ids, ref = Store.load_vectors(store, "pool", "enc")
    assert ids == ref_ids
    assert np.array_equal(kcenter_greedy(x, 25), kcenter_greedy(ref, 25))
    groups = star_groups(x, 0.98)
    assert np.array_equal(groups, star_groups(ref, 0.98)) and (groups != np.arange(len(ids))).sum() >= 10
