"""`curate leaks` against brute force: every cross pair at or above the cut, exact copies included."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest

from curate.leaks import cross_pairs, find_leaks, write_leaks
from curate.slices import SliceError
from curate.store import open_store

D, N = 12, 160


@pytest.fixture()
def pool():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D)).astype(np.float32)
    x[100:110] = x[0:10] + 0.05 * rng.standard_normal((10, D)).astype(np.float32)  # test copies of train
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = sorted(str(uuid.UUID(int=int(rng.integers(1 << 62)) * 13 + k)) for k in range(N + 1))
    payloads = [{"path": f"/d/{k}.png", "sha256": f"h{k}", "split": "train" if k < 80 else "test"} for k in range(N)]
    payloads[150]["sha256"] = "h20"  # byte copy of train image 20 in test (vectors differ: exact must still count)
    payloads.append({"path": "/d/broken.png", "sha256": "h30", "split": "test", "failed": True})  # no vector
    store = open_store(url=":memory:")
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"family": "test", "dim": D})
    store.upsert_points("pool", ids, payloads)
    store.upsert_vectors("pool", "enc", ids[:N], x)
    yield store, ids, x
    store.close()


def test_leaks_match_brute_force(pool, tmp_path) -> None:
    store, ids, x = pool
    rep = find_leaks(store, "pool", "enc", "where:split == train", "where:split == test", threshold=0.9, device="cpu")
    s = x[:80].astype(np.float64) @ x[80:].T.astype(np.float64)
    want = {(ids[i], ids[80 + j]) for i, j in zip(*np.nonzero(s >= 0.9), strict=True)}
    want |= {(ids[20], ids[150]), (ids[30], ids[N])}
    got = set(zip(rep.pairs["a_id"], rep.pairs["b_id"], strict=True))
    assert got == want and len(got) >= 12
    assert rep.pairs.filter(pl.col("exact"))["b_id"].to_list() in ([ids[150], ids[N]], [ids[N], ids[150]])
    assert rep.n_a == 80 and rep.n_b == 81 and rep.b_leaked == len({b for _, b in want})
    files = write_leaks(rep, tmp_path)
    assert pl.read_csv(files[0]).shape == (len(want), 6)


def test_cross_pairs_tiled() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 8)).astype(np.float32)
    b = np.concatenate([a[:30] + 0.1 * rng.standard_normal((30, 8)).astype(np.float32), rng.standard_normal((50, 8))])
    i, j, _ = cross_pairs(a, b, 0.8, device="cpu", chunk=16)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    want = set(zip(*np.nonzero(an @ bn.T >= 0.8), strict=True))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(int(p), int(q)) for p, q in want}


def test_leak_errors(pool) -> None:
    store, *_ = pool
    with pytest.raises(SliceError, match="outside"):
        find_leaks(store, "pool", "enc", "where:split == train", "where:split == test", threshold=-2)
    with pytest.raises(SliceError, match="empty"):
        find_leaks(store, "pool", "enc", "where:split == train", "where:split == val")
    with pytest.raises(SliceError, match="unknown set"):
        find_leaks(store, "pool", "enc", "train", "where:split == test")


def test_leaks_center_matches_brute_force_on_centered_union(pool) -> None:
    store, ids, x = pool
    shifted = x + 4.0 / np.sqrt(D)  # a big component shared by every image: raw cosines all look alike
    store.upsert_vectors("pool", "enc", ids[:N], shifted)
    a_rows, b_rows = np.arange(80), np.arange(80, N)
    raw = find_leaks(store, "pool", "enc", "where:split == train", "where:split == test", threshold=0.9,
                     device="cpu")
    rep = find_leaks(store, "pool", "enc", "where:split == train", "where:split == test", threshold=0.9,
                     device="cpu", center=True)
    u = shifted / np.linalg.norm(shifted, axis=1, keepdims=True)
    c = u.astype(np.float64) - u.astype(np.float64).mean(axis=0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    s = c[a_rows] @ c[b_rows].T
    want = {(ids[i], ids[80 + j]) for i, j in zip(*np.nonzero(s >= 0.9), strict=True)}
    want |= {(ids[20], ids[150]), (ids[30], ids[N])}
    assert set(zip(rep.pairs["a_id"], rep.pairs["b_id"], strict=True)) == want
    assert raw.n_pairs > 10 * rep.n_pairs  # without centering the shared component matches everything
