"""Cluster-margin (Citovsky et al., NeurIPS 2021): uncertainty first, then diversity by clusters.

1. Keep the `ratio * budget` most uncertain candidates (10x by default, the paper's k_m / k_t).
2. Cluster them. The paper clusters the whole pool once with average-linkage agglomerative
   clustering, which is O(N^2) memory; here k-means (curate.select.kmeans, chunked, GPU-capable)
   runs on the uncertain subset only, with min(budget, max_clusters, subset) clusters, so the cost
   is a few small k-means runs (N_INIT restarts, best inertia) per round whatever the pool size.
3. Round-robin over the clusters from the smallest (ties: lower cluster id): each visit takes the
   most uncertain member not yet taken (the paper samples a random member; taking the most
   uncertain one makes the selection deterministic and keeps the uncertainty order inside clusters).
Balance quotas: a member whose group is full is skipped. When quotas leave the round-robin short,
the rest of the budget is filled from the remaining candidates by uncertainty, under the quotas.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.select.kmeans import kmeans

CANDIDATE_RATIO = 10  # uncertain candidates kept per pick (the paper's k_m / k_t)
N_INIT = 3  # k-means restarts on the uncertain subset (best inertia wins)


def round_robin(
    labels: np.ndarray,
    rows: np.ndarray,
    score: np.ndarray,
    budget: int,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
) -> list[int]:
    """Picks from `rows` (cluster `labels[i]` for rows[i]): clusters from the smallest, each visit
    takes the cluster's highest-`score` row left (ties: lower row)."""
    members: dict[int, list[int]] = {}
    for lab, r in sorted(zip(labels.tolist(), rows.tolist(), strict=True), key=lambda t: (t[0], -score[t[1]], t[1])):
        members.setdefault(lab, []).append(r)
    order = sorted(members, key=lambda c: (len(members[c]), c))
    count = None if quotas is None else np.zeros(len(quotas), dtype=np.int64)
    pos = dict.fromkeys(order, 0)
    out: list[int] = []
    while len(out) < budget and order:
        alive = []
        for c in order:
            if len(out) == budget:
                break
            lst = members[c]
            while pos[c] < len(lst):
                r = lst[pos[c]]
                pos[c] += 1
                if count is None or (groups[r] >= 0 and count[groups[r]] < quotas[groups[r]]):
                    out.append(r)
                    if count is not None:
                        count[groups[r]] += 1
                    break
            if pos[c] < len(lst):
                alive.append(c)
        order = alive
    return out


def _best_kmeans(x: np.ndarray, k: int, seed: int, device: torch.device | None) -> np.ndarray:
    """Labels of the lowest-inertia of N_INIT k-means runs: one k-means++ start can merge two modes
    and split a third, and the subset is small (ratio * budget rows), so restarts are cheap."""
    best, best_inertia = None, np.inf
    for i in range(N_INIT):
        cent, labels = kmeans(x, k, seed=seed * N_INIT + i, device=device)
        inertia = float(((x - cent[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    assert best is not None
    return best


def cluster_margin_select(
    X: np.ndarray,
    score: np.ndarray,
    budget: int,
    *,
    candidates: np.ndarray,
    max_clusters: int = 500,
    ratio: int = CANDIDATE_RATIO,
    seed: int = 0,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(picked rows in order, the cluster of each pick; -1 for fill-ins beyond the round-robin)."""
    rows = np.flatnonzero(candidates & np.isfinite(score))
    ranked = rows[np.lexsort((rows, -score[rows]))]
    top = np.sort(ranked[: max(budget, ratio * budget)])
    if len(top) == 0 or budget <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    k = max(1, min(budget, max_clusters, len(top)))
    labels = _best_kmeans(X[top], k, seed, device)
    picks = round_robin(labels, top, score, budget, groups, quotas)
    cluster = dict(zip(top.tolist(), labels.tolist(), strict=True))
    if len(picks) < budget:  # quotas left the round-robin short: fill by uncertainty
        taken = set(picks)
        count = None
        if groups is not None and quotas is not None:
            count = np.bincount(groups[picks], minlength=len(quotas)) if picks else np.zeros(len(quotas), np.int64)
        for r in ranked.tolist():
            if len(picks) == budget:
                break
            if r in taken or (count is not None and (groups[r] < 0 or count[groups[r]] >= quotas[groups[r]])):
                continue
            if count is not None:
                count[groups[r]] += 1
            picks.append(r)
    return np.asarray(picks, np.int64), np.asarray([cluster.get(r, -1) for r in picks], np.int64)
