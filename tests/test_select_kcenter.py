"""k-center greedy against a brute-force reference that recomputes every distance per pick."""

from __future__ import annotations

import numpy as np
import pytest

import curate.select.kcenter as kc


def brute_kcenter(X, budget, initial=(), *, weights=None, cand=None, groups=None, quotas=None, min_distance=None):
    """Textbook farthest-first: full float64 distance matrix, python loop, lowest index on ties."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    D = np.sqrt(np.maximum(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1), 0))
    centers = list(initial)
    cand = np.ones(n, bool) if cand is None else np.asarray(cand, bool).copy()
    cand[list(initial)] = False
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    counts: dict[int, int] = {}
    mean = X[cand].mean(axis=0)
    picks, dists = [], []
    for _ in range(budget):
        elig = [
            i for i in range(n)
            if cand[i] and i not in picks
            and (groups is None or (groups[i] >= 0 and counts.get(groups[i], 0) < quotas[groups[i]]))
        ]
        if not centers:
            elig_d = [((X[i] - mean) ** 2).sum() for i in elig]
            if not elig:
                break
            best = elig[int(np.argmin(elig_d))]
            dist = np.inf
        else:
            md = {i: min(D[i, c] for c in centers) for i in elig}
            if min_distance is not None:
                elig = [i for i in elig if md[i] >= min_distance]
            if not elig:
                break
            scores = [md[i] * w[i] for i in elig]
            best = elig[int(np.argmax(scores))]  # np.argmax: first maximum = lowest index
            dist = md[best]
        picks.append(best)
        dists.append(dist)
        centers.append(best)
        if groups is not None:
            counts[groups[best]] = counts.get(groups[best], 0) + 1
    return picks, dists


@pytest.fixture(params=["lazy", "lazy-k3", "lazy-k17", "stream"], autouse=True)
def loop(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both exact loops; the lazy one also with tiny top-K sets, so its bound,
    its full passes and its tie handling are exercised on small data."""
    import curate.select.kcenter as kc

    if request.param == "stream":
        original = kc.kcenter_select
        monkeypatch.setattr(kc, "kcenter_select", lambda *a, **k: original(*a, **{**k, "lazy": False}))
    elif request.param.startswith("lazy-k"):
        monkeypatch.setattr(kc, "LAZY_TOP", int(request.param[6:]))
    return request.param


def test_matches_reference_random_gaussian() -> None:
    rng = np.random.default_rng(0)
    for n, d, budget in [(60, 5, 20), (200, 16, 50), (31, 3, 31)]:
        X = rng.normal(size=(n, d)).astype(np.float32)
        ref, ref_d = brute_kcenter(X, budget)
        got = kc.kcenter_select(X, budget, device="cpu")
        assert got.indices.tolist() == ref
        np.testing.assert_allclose(got.distances[1:], ref_d[1:], rtol=1e-4, atol=1e-4)
        assert kc.kcenter_greedy(X, budget, device="cpu").tolist() == ref


def test_first_center_is_closest_to_mean() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 8)).astype(np.float32)
    first = kc.kcenter_greedy(X, 1, device="cpu")[0]
    assert first == int(np.argmin(((X.astype(np.float64) - X.mean(0)) ** 2).sum(1)))


def test_ties_go_to_lowest_index_on_integer_grid() -> None:
    # Small integer coordinates: every squared distance is exact in fp32, so ties are real ties.
    rng = np.random.default_rng(2)
    X = rng.integers(0, 3, size=(80, 3)).astype(np.float32)
    X = np.concatenate([X, X[:10]])  # exact duplicates too
    for initial in ([0], [5, 17], list(range(0, 80, 9))):
        budget = 25
        ref, _ = brute_kcenter(X, budget, initial)
        assert kc.kcenter_greedy(X, budget, initial, device="cpu").tolist() == ref


def test_initial_centers_are_never_picked_and_count_as_centers() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 6)).astype(np.float32)
    init = [3, 40, 99]
    picks = kc.kcenter_greedy(X, 30, init, device="cpu")
    assert not set(picks.tolist()) & set(init)
    assert picks.tolist() == brute_kcenter(X, 30, init)[0]
    mask = np.zeros(150, bool)
    mask[init] = True
    assert kc.kcenter_greedy(X, 30, mask, device="cpu").tolist() == picks.tolist()


def test_many_initial_centers_tiled_like_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distances to many initial centers are computed in row tiles; force tiny tiles."""
    import curate.select.kcenter as kc

    monkeypatch.setattr(kc, "rows_per_chunk", lambda *a, **k: 7)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    init = list(range(0, 120, 3))
    assert kc.kcenter_greedy(X, 40, init, device="cpu").tolist() == brute_kcenter(X, 40, init)[0]


def test_min_distance_stops() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 4)).astype(np.float32)
    full, dists = brute_kcenter(X, 100)
    thr = float(np.median(dists[1:]))
    ref, _ = brute_kcenter(X, 100, min_distance=thr)
    got = kc.kcenter_select(X, 100, min_distance=thr, device="cpu")
    assert got.indices.tolist() == ref
    assert got.stopped == "min_distance"
    assert 1 < len(ref) < 100
    assert (got.distances[1:] >= thr).all()


def test_weights_candidates_and_quotas_match_reference() -> None:
    rng = np.random.default_rng(6)
    X = rng.integers(0, 4, size=(90, 3)).astype(np.float32)
    w = rng.integers(1, 4, size=90).astype(np.float64)
    cand = rng.random(90) < 0.7
    groups = rng.integers(-1, 3, size=90)
    quotas = np.array([4, 0, 6])
    init = [1, 2]
    ref, _ = brute_kcenter(X, 10, init, weights=w, cand=cand, groups=groups, quotas=quotas)
    got = kc.kcenter_select(X, 10, init, weights=w, candidates=cand, groups=groups, quotas=quotas, device="cpu")
    assert got.indices.tolist() == ref
    assert len(ref) == 10
    g = groups[got.indices]
    assert (g == 0).sum() == 4 and (g == 2).sum() == 6 and (g == 1).sum() == 0


def test_exhausted_candidates_stop_cleanly() -> None:
    X = np.eye(6, dtype=np.float32)
    cand = np.array([1, 1, 0, 0, 1, 0], bool)
    got = kc.kcenter_select(X, 5, candidates=cand, device="cpu")
    assert sorted(got.indices.tolist()) == [0, 1, 4]
    assert got.stopped == "no candidates"


def test_budget_larger_than_pool_is_an_error() -> None:
    X = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="budget 5 is larger than the 4"):
        kc.kcenter_greedy(X, 5, [0])


def test_chunked_argmax_keeps_lowest_index_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-chunk maxima are merged in chunk order, so a tie spanning chunks still goes low."""
    import curate.select.kcenter as kc

    monkeypatch.setattr(kc, "CPU_CHUNK", 7)
    rng = np.random.default_rng(7)
    X = rng.integers(0, 3, size=(60, 3)).astype(np.float32)
    X = np.concatenate([X, X])
    w = rng.integers(1, 3, size=120).astype(np.float64)
    for initial in ([0], [4, 30]):
        ref, _ = brute_kcenter(X, 30, initial, weights=w)
        assert kc.kcenter_select(X, 30, initial, weights=w, device="cpu").indices.tolist() == ref
    ref, _ = brute_kcenter(X, 30)
    assert kc.kcenter_greedy(X, 30, device="cpu").tolist() == ref


def test_larger_pool_against_a_vectorized_float64_reference() -> None:
    """2,000 clustered points, 150 picks: many lazy full passes and top-K refreshes."""
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(40, 24))
    X = (centers[rng.integers(0, 40, 2000)] + 0.3 * rng.normal(size=(2000, 24))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X64 = X.astype(np.float64)
    D = np.sqrt(np.maximum(((X64[:, None] - X64[None]) ** 2).sum(-1), 0))
    init = [5, 77]
    picks: list[int] = []
    for _ in range(150):
        md = D[:, init + picks].min(axis=1)  # recomputed from scratch each pick
        md[init + picks] = -1
        picks.append(int(np.argmax(md)))
    assert kc.kcenter_greedy(X, 150, init, device="cpu").tolist() == picks
