"""A random sample spread over k-means clusters: `auto`'s choice on pools without cluster structure.

Where the pool has no modes (`structure.cluster_structure` below AUTO_STRUCTURE_MIN), the most typical
image of a cluster is no better a representative than any member, so `auto` samples at random, but
spread evenly: a systematic sample over the candidates laid out cluster by cluster (clusters in a
seeded random order, members in a seeded random order inside each), one pick every
candidates / budget positions from a seeded random start. Each candidate is still picked with
probability budget / candidates, as in a uniform random sample, so the expected share of every class
and region is random's; but each cluster gets the floor or the ceiling of its proportional share,
so no region is missed or doubled by luck. (One image per cluster, which the branch took before,
over-represents small compact clusters: on the textile photos it lost the pixel models' cells to
random; BENCHMARKS.md, label efficiency.)

Labeled and already picked images are not candidates and do not otherwise change the sample: in a
later round it is a spread uniform sample of what is still unlabeled, as random's would be.

The picks are returned round by round (every cluster's first pick, in cluster order, then every
second pick, ...), so any prefix of the manifest is itself spread over the clusters.
"""

from __future__ import annotations

import numpy as np


def stratified_select(
    labels: np.ndarray,
    budget: int,
    *,
    candidates: np.ndarray,
    seed: int,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(picked row indices, cluster of each pick). `groups`/`quotas` are hard balance quotas
    (group -1: never picked); a systematic position whose row's group is full moves on to the next
    row of the layout that fits, so quotas bend the spread as little as they can."""
    labels = np.asarray(labels, dtype=np.int64)
    cand = np.asarray(candidates, bool).copy()
    if groups is not None:
        assert quotas is not None
        groups = np.asarray(groups, np.int64)
        quotas = np.asarray(quotas, np.int64)
        cand &= groups >= 0
        cand[groups >= 0] &= quotas[groups[groups >= 0]] > 0
    rows = np.flatnonzero(cand)
    rng = np.random.default_rng(seed)
    n_cl = int(labels.max()) + 1 if len(labels) else 0
    cluster_rank = rng.permutation(n_cl)
    layout = rows[np.lexsort((rng.random(len(rows)), cluster_rank[labels[rows]]))]
    m = len(layout)
    if budget <= 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if budget >= m:
        at = np.arange(m)
    else:
        step = m / budget
        at = np.floor(rng.uniform(0, step) + step * np.arange(budget)).astype(np.int64)
    if groups is not None:
        assert quotas is not None
        at = _respect_quotas(layout, at, groups, quotas, budget)
    picks = layout[at]
    # round by round: the j-th pick of every cluster before any (j+1)-th, clusters in layout order
    rank = cluster_rank[labels[picks]]  # non-decreasing: `at` is sorted
    round_of = np.arange(len(picks)) - np.searchsorted(rank, rank)
    order = np.lexsort((rank, round_of))
    return picks[order], labels[picks[order]]


def _respect_quotas(layout: np.ndarray, at: np.ndarray, groups: np.ndarray, quotas: np.ndarray,
                    budget: int) -> np.ndarray:
    """Positions of the layout to take: each systematic position, or the next one (cyclically)
    whose row's group still has room; fewer than the positions only when no row fits any more."""
    g_of = groups[layout]
    count = np.zeros(len(quotas), np.int64)
    ok = quotas[g_of] > 0  # rows still takeable
    out: list[int] = []
    for p in at.tolist():
        if not ok.any():
            break
        q = p + int(np.argmax(ok[p:])) if ok[p:].any() else int(np.argmax(ok))
        ok[q] = False
        g = g_of[q]
        count[g] += 1
        if count[g] >= quotas[g]:
            ok[g_of == g] = False
        out.append(q)
        if len(out) == budget:
            break
    return np.sort(np.asarray(out, np.int64))
