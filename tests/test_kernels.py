"""The shared similarity kernels against brute force: same neighbours, same ties, same pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.kernels import pairs_above, topk_similarity


def _lattice(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors with exactly four +-0.5 entries: every dot product is a multiple of 0.25 and
    exact in fp32, so ties are real ties and any tile order must give the same answer."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        cols = rng.choice(d, 4, replace=False)
        x[r, cols] = rng.choice([-0.5, 0.5], 4)
    return x


def _brute_topk(q: np.ndarray, k_: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k_ / np.linalg.norm(k_, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ kn.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    idx = np.empty((len(q), k), np.int64)
    for r in range(len(q)):
        order = np.lexsort((np.arange(s.shape[1]), -s[r]))  # value desc, then index asc
        idx[r] = order[:k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("chunk", [None, 7, 32])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_topk_ties_exact(chunk: int | None, exclude_self: bool) -> None:
    x = _lattice(150, 6, seed=1)  # few dims: many exact ties and exact duplicate rows
    sims, idx = topk_similarity(x, x, 9, exclude_self=exclude_self, device="cpu", chunk=chunk)
    ref_s, ref_i = _brute_topk(x, x, 9, exclude_self)
    assert sims.dtype == np.float32 and idx.dtype == np.int64 and sims.shape == (150, 9)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-6)
    if exclude_self:
        assert not (idx == np.arange(150)[:, None]).any()


@pytest.mark.parametrize("chunk", [None, 13])
def test_topk_random_queries_vs_keys(chunk: int | None) -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(40, 16)).astype(np.float32) * 3  # not normalized: the kernel normalizes
    keys = rng.normal(size=(300, 16)).astype(np.float32)
    sims, idx = topk_similarity(torch.from_numpy(q), keys, 5, device="cpu", chunk=chunk)
    ref_s, ref_i = _brute_topk(q, keys, 5, False)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    np.testing.assert_array_equal(idx, ref_i)  # random data: gaps are far larger than fp32 error
    assert np.all(np.diff(sims, axis=1) <= 0)


def test_topk_errors() -> None:
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="k=4"):
        topk_similarity(x, x, 4, exclude_self=True, device="cpu")
    with pytest.raises(ValueError, match="dim"):
        topk_similarity(x, np.eye(3, dtype=np.float32), 1, device="cpu")
    with pytest.raises(ValueError, match="same rows"):
        topk_similarity(x, x[:3], 1, exclude_self=True, device="cpu")


def _brute_pairs(x: np.ndarray, thr: float, y: np.ndarray | None = None) -> set[tuple[int, int]]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = xn if y is None else y / np.linalg.norm(y, axis=1, keepdims=True)
    s = xn.astype(np.float64) @ yn.astype(np.float64).T
    ii, jj = np.nonzero(s >= thr)
    return {(int(i), int(j)) for i, j in zip(ii, jj, strict=True) if y is not None or i < j}


@pytest.mark.parametrize("chunk", [None, 16, 50])
def test_pairs_lattice_exact(chunk: int | None) -> None:
    x = _lattice(200, 8, seed=2)
    for thr in (0.5, 0.75, 1.0):  # thresholds exactly on attainable values: >= must include them
        i, j, s = pairs_above(x, thr, device="cpu", chunk=chunk)
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_pairs(x, thr)
        assert np.all(i < j) and np.all(s >= thr)
        assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == len(i)  # no pair twice


def test_pairs_cross_sets() -> None:
    a = _lattice(120, 8, seed=3)
    b = _lattice(90, 8, seed=4)
    i, j, s = pairs_above(a, 0.75, b, device="cpu", chunk=17)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_pairs(a, 0.75, b)
    ref = (a @ b.T)[i, j]
    np.testing.assert_allclose(s, ref, atol=1e-6)


def test_pairs_random_near_duplicates() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(300, 32)).astype(np.float32)
    x = np.concatenate([base, base[:60] + 0.05 * rng.normal(size=(60, 32)).astype(np.float32)])
    i, j, _ = pairs_above(x, 0.95, device="cpu", chunk=64)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    assert got == _brute_pairs(x, 0.95)
    assert {(r, 300 + r) for r in range(60)} <= got


def test_pairs_threshold_and_guard() -> None:
    x = _lattice(30, 8, seed=6)
    for bad in (1.5, -1.01, float("nan")):
        with pytest.raises(ValueError, match="outside"):
            pairs_above(x, bad, device="cpu")
    with pytest.raises(ValueError, match="raise the threshold"):
        pairs_above(x, -1.0, device="cpu", max_pairs=10)


def test_fp16_storage_path_same_answers(monkeypatch) -> None:
    """The GPU code path (fp16 storage, fp32 products, no CPU buffer), exercised on CPU: lattice
    vectors are exact in fp16, so answers must equal the fp32 brute force exactly."""
    import curate.kernels as K

    monkeypatch.setattr(K, "storage_dtype", lambda device: torch.float16)
    monkeypatch.setattr(K._Tiles, "__init__", lambda self, r, c, d: setattr(self, "buf", None))
    x = _lattice(120, 8, seed=9)
    sims, idx = topk_similarity(x, x, 5, exclude_self=True, device="cpu", chunk=16)
    ref_s, ref_i = _brute_topk(x, x, 5, True)
    np.testing.assert_array_equal(idx, ref_i)
    assert sims.dtype == np.float32
    i, j, _ = pairs_above(x, 0.75, device="cpu", chunk=16)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_pairs(x, 0.75)


def test_topk_exclude_self_with_uneven_default_tiles() -> None:
    """2,500 rows: default CPU tiles are 2048 rows x 2500 columns, so the diagonal crosses a tile
    boundary in the second row band."""
    x = _lattice(2500, 6, seed=11)
    sims, idx = topk_similarity(x, x, 3, exclude_self=True, device="cpu")
    ref_s, ref_i = _brute_topk(x, x, 3, True)
    np.testing.assert_array_equal(idx, ref_i)
    i, j, _ = pairs_above(x, 1.0, device="cpu")  # exact duplicate rows only
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_pairs(x, 1.0)
