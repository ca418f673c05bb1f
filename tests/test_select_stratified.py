"""`stratified_select` (auto's branch for pools without cluster structure): a systematic sample over
the candidates laid out cluster by cluster. Checked against what defines it: every candidate equally
likely (as in a uniform random sample), each cluster's count the floor or the ceiling of its
proportional share, prefixes spread over clusters, balance quotas respected."""

from __future__ import annotations

import numpy as np

from curate.select.stratified import stratified_select


def _labels(sizes: list[int], seed: int = 0) -> np.ndarray:
    lab = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(lab)


def test_each_cluster_gets_the_floor_or_ceiling_of_its_share() -> None:
    labels = _labels([3, 40, 17, 90, 5, 45])  # 200 rows, uneven clusters
    cand = np.ones(len(labels), bool)
    cand[::7] = False  # some rows are labeled or excluded already
    sizes = np.bincount(labels[cand], minlength=6)
    for budget in (1, 7, 10, 33, 100):
        share = budget * sizes / cand.sum()
        for seed in range(50):
            picks, clusters = stratified_select(labels, budget, candidates=cand, seed=seed)
            assert len(picks) == budget == len(set(picks.tolist()))
            assert cand[picks].all() and (labels[picks] == clusters).all()
            count = np.bincount(clusters, minlength=6)
            assert ((count >= np.floor(share)) & (count <= np.ceil(share))).all(), (budget, seed, count, share)


def test_every_candidate_is_equally_likely() -> None:
    """Inclusion frequency over many seeds matches budget / candidates, as a uniform sample's does,
    whatever the cluster sizes (a per-cluster quota sampler would favour small clusters' rows)."""
    labels = _labels([2, 10, 30, 58])
    cand = np.ones(100, bool)
    budget, draws = 8, 6000
    freq = np.zeros(100)
    for seed in range(draws):
        freq[stratified_select(labels, budget, candidates=cand, seed=seed)[0]] += 1
    p = budget / 100
    sd = np.sqrt(p * (1 - p) / draws)
    assert np.abs(freq / draws - p).max() < 5 * sd  # 5 sigma over 100 rows
    per_cluster = np.array([freq[labels == c].mean() / draws for c in range(4)])
    assert np.abs(per_cluster - p).max() < 3 * sd  # small clusters neither favoured nor starved


def test_prefixes_cover_distinct_clusters_first() -> None:
    labels = _labels([50, 50, 50, 50, 100])
    picks, clusters = stratified_select(labels, 12, candidates=np.ones(300, bool), seed=4)
    n_first = len(set(clusters.tolist()))
    assert len(set(clusters[:n_first].tolist())) == n_first  # round 1: every picked cluster once
    seen: dict[int, int] = {}
    rounds = [seen.__setitem__(c, seen.get(c, 0) + 1) or seen[c] for c in clusters.tolist()]
    assert rounds == sorted(rounds)  # no cluster's j+1-th pick before another's j-th


def test_budget_at_least_the_candidates_takes_them_all() -> None:
    labels = _labels([4, 6])
    cand = np.zeros(10, bool)
    cand[[1, 3, 5, 8]] = True
    picks, _ = stratified_select(labels, 9, candidates=cand, seed=0)
    assert sorted(picks.tolist()) == [1, 3, 5, 8]


def test_quotas_are_hard_and_the_budget_is_filled_where_they_allow() -> None:
    rng = np.random.default_rng(1)
    labels = _labels([60, 60, 80], seed=1)
    groups = rng.integers(0, 3, 200)
    groups[:10] = -1  # rows no quota may take
    quotas = np.array([2, 0, 13])
    for seed in range(30):
        picks, _ = stratified_select(labels, 15, candidates=np.ones(200, bool), seed=seed, groups=groups,
                                     quotas=quotas)
        assert len(picks) == 15 == len(set(picks.tolist()))
        assert (groups[picks] >= 0).all()
        assert np.bincount(groups[picks], minlength=3).tolist() == [2, 0, 13]
    # quotas that sum below the budget: as many as they allow
    picks, _ = stratified_select(labels, 15, candidates=np.ones(200, bool), seed=0, groups=groups,
                                 quotas=np.array([1, 2, 3]))
    assert np.bincount(groups[picks], minlength=3).tolist() == [1, 2, 3]
