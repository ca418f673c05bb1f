"""Density, k-means and TypiClust typicality against brute-force references on small random data."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from curate.select.density import inverse_distance, knn_density, mean_knn_distance
from curate.select.kmeans import kmeans
from curate.select.typicality import cluster_typicality, typiclust_select


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dist(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    return np.sqrt(np.maximum(((X[:, None] - Y[None]) ** 2).sum(-1), 0))


def brute_mean_knn(X: np.ndarray, k: int, ref: np.ndarray | None = None) -> np.ndarray:
    ref = np.arange(len(X)) if ref is None else ref
    D = _dist(X, X[ref])
    out = []
    for i in range(len(X)):
        d = [D[i, j] for j, r in enumerate(ref) if r != i]
        out.append(np.mean(sorted(d)[:k]))
    return np.asarray(out)


def test_exact_density_matches_brute_force() -> None:
    X = _unit(150, 6, 0)
    got = mean_knn_distance(X, 7, device="cpu")
    np.testing.assert_allclose(got, brute_mean_knn(X, 7), rtol=1e-4, atol=1e-5)
    dens = knn_density(X, 7, device="cpu")
    assert np.argmax(dens) == np.argmin(brute_mean_knn(X, 7))


def test_sampled_density_matches_brute_force_on_the_same_sample() -> None:
    X = _unit(300, 5, 1)
    ref = np.sort(np.random.default_rng(3).choice(300, size=120, replace=False))
    got = mean_knn_distance(X, 6, reference_size=120, seed=3, device="cpu")
    np.testing.assert_allclose(got, brute_mean_knn(X, 6, ref), rtol=1e-4, atol=1e-5)


def test_inverse_distance_floors_duplicates() -> None:
    d = np.array([0.0, 0.0, 0.5, 1.0, 2.0] * 40, dtype=np.float32)
    s = inverse_distance(d)
    assert np.isfinite(s).all() and s.max() == s[0] == 2.0


def test_kmeans_matches_sklearn_lloyd_from_same_init() -> None:
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(6, 8)) * 4
    X = (centers[rng.integers(0, 6, 400)] + rng.normal(size=(400, 8))).astype(np.float32)
    init = X[rng.choice(400, 6, replace=False)]
    cent, labels = kmeans(X, 6, init=init, max_iter=100, tol=0.0, device="cpu")
    sk = KMeans(6, init=init, n_init=1, max_iter=100, tol=0.0, algorithm="lloyd").fit(X)
    assert (labels == sk.labels_).all()
    np.testing.assert_allclose(cent, sk.cluster_centers_, atol=1e-4)


def test_kmeans_is_deterministic_and_finds_blobs() -> None:
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(5, 8)) * 10
    truth = rng.integers(0, 5, 500)
    X = (centers[truth] + rng.normal(size=(500, 8))).astype(np.float32)
    a = kmeans(X, 5, seed=1, device="cpu")[1]
    b = kmeans(X, 5, seed=1, device="cpu")[1]
    assert (a == b).all()
    # every found cluster is pure (k-means++ on separated blobs)
    for c in range(5):
        assert len(set(truth[a == c])) == 1


def test_cluster_typicality_matches_brute_force() -> None:
    X = _unit(200, 5, 6)
    labels = np.random.default_rng(7).integers(0, 4, 200)
    labels[0] = 9  # a singleton cluster scores 0
    got = cluster_typicality(X, labels, k=5, device="cpu")
    want = np.zeros(200)
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        if len(m) > 1:
            want[m] = brute_mean_knn(X[m], min(5, len(m) - 1))
    assert got[0] == 0
    rest = np.arange(1, 200)
    # no percentile floor inside clusters: the ranking is the brute-force distance's own
    np.testing.assert_allclose(got[rest], 1.0 / want[rest], rtol=1e-4)


def brute_typiclust(labels, score, budget, cand, centers, groups=None, quotas=None, min_size=5):
    n = len(labels)
    size = np.bincount(labels)
    covered = np.bincount(labels[centers], minlength=len(size))
    taken: set[int] = set()
    counts: dict[int, int] = {}
    picks = []
    while len(picks) < budget:
        elig = [
            i for i in range(n)
            if cand[i] and i not in taken
            and (groups is None or (groups[i] >= 0 and counts.get(groups[i], 0) < quotas[groups[i]]))
        ]
        if not elig:
            break
        cls = {int(labels[i]) for i in elig}
        big = [c for c in cls if size[c] >= min_size]
        c = min(big or cls, key=lambda c: (covered[c], -size[c], c))
        best = max((i for i in elig if labels[i] == c), key=lambda i: (score[i], -i))
        picks.append(best)
        taken.add(best)
        covered[c] += 1
        if groups is not None:
            counts[groups[best]] = counts.get(groups[best], 0) + 1
    return picks


def test_typiclust_selection_matches_brute_force() -> None:
    rng = np.random.default_rng(8)
    for trial in range(6):
        n = 120
        labels = rng.integers(0, 12, n)
        labels[:3] = 12  # one small cluster
        score = rng.integers(0, 5, n).astype(np.float64)  # many ties
        cand = rng.random(n) < 0.8
        centers = (~cand) & (rng.random(n) < 0.5)
        groups = quotas = None
        if trial % 2:
            groups = rng.integers(-1, 3, n)
            quotas = np.array([5, 3, 20])
        budget = 40 if trial < 4 else 200
        got, cl = typiclust_select(labels, score, budget, candidates=cand, centers=centers,
                                   groups=groups, quotas=quotas)
        want = brute_typiclust(labels, score, budget, cand, centers, groups, quotas)
        assert got.tolist() == want
        assert (labels[got] == cl).all()


def test_typiclust_first_picks_cover_distinct_clusters_largest_first() -> None:
    labels = np.repeat(np.arange(4), [30, 20, 10, 6])
    score = np.arange(66, dtype=float)
    got, cl = typiclust_select(labels, score, 4, candidates=np.ones(66, bool), centers=np.zeros(66, bool))
    assert cl.tolist() == [0, 1, 2, 3]
    assert got.tolist() == [29, 49, 59, 65]  # the most typical member of each


def _blobs(n: int, d: int, modes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((modes, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, modes, n)] + 0.8 * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_approximate_density_ranks_like_exact_knn_density() -> None:
    from scipy.stats import spearmanr

    X = _blobs(2000, 32, 10, 0)
    exact = knn_density(X, 20, device="cpu")  # 2000 <= EXACT_MAX: the exact path
    np.testing.assert_allclose(exact, inverse_distance(mean_knn_distance(X, 20, device="cpu")))
    for seed in (0, 1):
        approx = knn_density(X, 20, exact_max=0, seed=seed, device="cpu")  # 512 references, soft top-k
        assert spearmanr(exact, approx)[0] > 0.85
    # an isolated point is the least dense either way
    Y = np.vstack([X, -X.mean(axis=0, keepdims=True) / np.linalg.norm(X.mean(axis=0))]).astype(np.float32)
    assert np.argmin(knn_density(Y, 20, exact_max=0, device="cpu")) == len(Y) - 1
