"""`curate select --engine ray`: the selection procedures split across Ray workers.

k-center (diversity) through composable coresets. The candidates are split into P partitions
(strided over the canonical row order, so each is a spread-out sample of the pool); each Ray task
runs the ordinary greedy (`kcenter_select`) on its partition with the labeled points as existing
centers and the global budget, quotas, weights and `min_distance`; the driver then runs the same
greedy over the union of the partition picks, again with the labeled points as centers.

Why the result is within 4x of the optimal covering radius OPT (unweighted k-center; a sketch of
the composable-coreset argument, e.g. Malkomes et al., NeurIPS 2015): OPT is the smallest radius
any k picks (plus the labeled points) reach over the whole pool. (1) A greedy run on any subset S
of the pool leaves every point of S within 2 OPT of its picks: otherwise its k picks plus the
farthest leftover point would be k + 1 points of the pool more than 2 OPT apart from each other and
from the labeled points, yet each lies within OPT of one of the k optimal centers or a labeled
point, so two share an optimal center and are within 2 OPT (pigeonhole). (2) Apply (1) to each
partition: every pool point is within 2 OPT of a partition pick. (3) Apply (1) to the union of
the partition picks: every partition pick is within 2 OPT of a final pick. (4) Triangle
inequality: every pool point is within 4 OPT of a final pick. Local greedy is itself a
2-approximation and never below OPT, so the guarantee against it is radius_ray <= 4 radius_local;
measured ratios are far smaller (tests/test_select_ray.py, BENCHMARKS.md).

Typicality (TypiClust) across workers: k-means is fitted on a seeded sample in the driver (as the
local `kmeans` does at scale), then the Lloyd refinement over all rows runs as Ray tasks, one per
partition (each returns its per-cluster sums and counts; the driver averages them), the final
assignment is a Ray task per partition (it also returns each row's distance to its centroid), and
the pick loop (`typiclust_select`, which holds the global quotas) runs in the driver. Where
typicality alone ranks, only the contenders' typicality is computed, in the driver (K x 2 x
REFERENCE_MATES rows, as locally); where weights or quotas need every row's, it is a Ray task per
group of clusters.

Other procedures (cluster-margin, BADGE, pure ranking by weights) have no Ray path: they run
locally with a one-line note. Store reads and writes stay in the driver; tasks receive numpy
blocks through `ray.put`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.select.kcenter import KCenterResult, kcenter_select
from curate.select.kmeans import kmeans
from curate.select.typicality import (
    N_INIT,
    Clustering,
    cluster_mean_distance,
    cluster_pool,
)

RAY_PROCEDURES = ("diversity", "typicality")  # the procedures with a Ray path
REFINE_ITER = 3  # Lloyd passes over every row after the sample fit (as the local kmeans)


def partitions_of(rows: np.ndarray, parts: int) -> list[np.ndarray]:
    """`rows` split into `parts` strided partitions (empty ones dropped)."""
    return [p for p in (rows[i::parts] for i in range(max(1, parts))) if len(p)]


def _kcenter_task(block: np.ndarray, centers: np.ndarray, budget: int, weights: np.ndarray | None,
                  groups: np.ndarray | None, quotas: np.ndarray | None, min_distance: float | None
                  ) -> np.ndarray:
    """Greedy k-center on one partition (rows of `block`) with `centers` as existing centers;
    returns picked row indices into `block`."""
    import torch

    torch.set_num_threads(1)  # one worker CPU per task
    x = np.concatenate([centers, block]) if len(centers) else block
    nc = len(centers)

    def pad(a: np.ndarray | None, fill: int) -> np.ndarray | None:  # the centers' rows come first
        return None if a is None else np.concatenate([np.full(nc, fill, a.dtype), a])

    res = kcenter_select(x, min(budget, len(block)), np.arange(nc), weights=pad(weights, 0),
                         groups=pad(groups, -1), quotas=quotas, min_distance=min_distance, device="cpu")
    return res.indices - nc


class RayEngine:
    """The `engine` argument of `compose.select` for `--engine ray`: the same procedures, run as
    Ray tasks. `partitions` defaults to one per worker CPU of the connected cluster."""

    name = "ray"

    def __init__(self, ray: Any, partitions: int | None = None) -> None:
        self.ray = ray
        self.partitions = partitions or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def kcenter_select(
        self,
        X: np.ndarray,
        budget: int,
        initial: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        quotas: np.ndarray | None = None,
        min_distance: float | None = None,
        device: Any = None,
    ) -> KCenterResult:
        """Composable-coreset k-center (module doc); same arguments and result as `kcenter_select`."""
        n = len(X)
        init = np.asarray(initial, dtype=np.int64)
        cand = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool).copy()
        cand[init] = False
        if groups is not None:
            cand &= np.asarray(groups) >= 0
        rows = np.flatnonzero(cand)
        ray = self.ray
        task = ray.remote(num_cpus=1)(_kcenter_task)
        centers_ref = ray.put(np.ascontiguousarray(X[init], dtype=np.float32))
        quotas_np = None if quotas is None else np.asarray(quotas, np.int64)
        futures = []
        parts = partitions_of(rows, self.partitions)
        for part in parts:
            futures.append(task.remote(
                ray.put(np.ascontiguousarray(X[part], dtype=np.float32)), centers_ref, int(budget),
                None if weights is None else np.asarray(weights, np.float64)[part],
                None if groups is None else np.asarray(groups, np.int64)[part], quotas_np, min_distance))
        picked = [part[np.asarray(got, np.int64)] for part, got in zip(parts, ray.get(futures), strict=True)]
        union = np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)
        # the union step in the driver: union rows are the only candidates, labeled rows the centers
        keep = np.concatenate([init, union])
        local = kcenter_select(
            X[keep], budget, np.arange(len(init)),
            weights=None if weights is None else np.asarray(weights)[keep],
            groups=None if groups is None else np.concatenate([np.full(len(init), -1), np.asarray(groups)[union]]),
            quotas=quotas, min_distance=min_distance, device=device)
        return KCenterResult(keep[local.indices], local.distances, local.stopped)

    def cluster_pool(self, X: np.ndarray, n_clusters: int, *, k: int, seed: int, n_init: int = N_INIT,
                     device: Any = None) -> Clustering:
        """TypiClust clusters and typicality with the passes over all rows as Ray tasks (module doc)."""
        n = len(X)
        m = min(n, max(20 * n_clusters, 10_000))
        if m == n:  # the whole pool is the sample: nothing to split, same result as the local engine
            return cluster_pool(X, n_clusters, k=k, seed=seed, n_init=n_init, device=device)
        ray = self.ray
        sub = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
        cent, _ = kmeans(X[sub], n_clusters, seed=seed, n_init=n_init, device=device)
        parts = partitions_of(np.arange(n), self.partitions)
        blocks = [ray.put(np.ascontiguousarray(X[p], dtype=np.float32)) for p in parts]
        step = ray.remote(num_cpus=1)(_assign_task)
        for _ in range(REFINE_ITER):  # Lloyd over every row: sums and counts per partition, summed here
            outs = ray.get([step.remote(b, cent, True) for b in blocks])
            sums = sum(o[1] for o in outs)
            counts = sum(o[2] for o in outs)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], cent).astype(np.float32)
            shift, cent = float(np.linalg.norm(new - cent, axis=1).max()), new
            if shift <= 1e-4:
                break
        labels = np.empty(n, dtype=np.int64)
        d2 = np.empty(n, dtype=np.float32)  # each row's squared distance to its centroid (contenders)
        for p, o in zip(parts, ray.get([step.remote(b, cent, False) for b in blocks]), strict=True):
            labels[p], d2[p] = o[0], o[1]
        # X too: the procedure ranks the same contenders as locally (Clustering.ranking), computed in
        # the driver (K x 2 x REFERENCE_MATES rows); every row's typicality, when a weight or quota
        # needs it, as Ray tasks
        return Clustering(labels, X=X, k=k, seed=seed, device=device, centroids=cent, centroid_d2=d2,
                          full_distance=lambda: self._mean_distance(X, labels, n_clusters, k, seed))

    def _mean_distance(self, X: np.ndarray, labels: np.ndarray, n_clusters: int, k: int, seed: int) -> np.ndarray:
        """Every row's mean distance to its k nearest cluster-mates: clusters dealt to Ray tasks
        (largest first, to the lightest task); the driver turns them into typicality (one floor)."""
        ray, n = self.ray, len(X)
        sizes = np.bincount(labels, minlength=n_clusters)
        load = np.zeros(self.partitions, dtype=np.int64)
        owner = np.empty(n_clusters, dtype=np.int64)
        for c in np.argsort(-sizes, kind="stable"):
            owner[c] = int(np.argmin(load))
            load[owner[c]] += sizes[c]
        typ = ray.remote(num_cpus=1)(_distance_task)
        groups = [np.flatnonzero(owner[labels] == t) for t in range(self.partitions)]
        groups = [g for g in groups if len(g)]
        futures = [typ.remote(ray.put(np.ascontiguousarray(X[g], dtype=np.float32)), labels[g], k, seed)
                   for g in groups]
        mean_dist = np.empty(n, dtype=np.float32)
        for g, d in zip(groups, ray.get(futures), strict=True):
            mean_dist[g] = d
        return mean_dist


def _assign_task(block: np.ndarray, cent: np.ndarray, sums: bool) -> tuple[np.ndarray, Any, Any]:
    """Nearest centroid of each row (ties: lower id), and with `sums` the per-cluster sums and counts;
    without, each row's squared distance to that centroid."""
    c2 = (cent.astype(np.float32) ** 2).sum(1)
    labels = np.empty(len(block), dtype=np.int64)
    d2 = None if sums else np.empty(len(block), dtype=np.float32)  # the final pass only (contenders)
    for r0 in range(0, len(block), 8192):
        x = block[r0 : r0 + 8192]
        s = x @ cent.T
        s *= 2
        s -= c2[None, :]
        labels[r0 : r0 + 8192] = best = s.argmax(axis=1)
        if d2 is not None:
            d2[r0 : r0 + 8192] = np.maximum((x * x).sum(axis=1) - s[np.arange(len(x)), best], 0)
    if not sums:
        return labels, d2, None
    import torch

    torch.set_num_threads(1)
    total = torch.zeros(cent.shape, dtype=torch.float64)  # np.add.at is ~50x slower for this scatter-add
    total.index_add_(0, torch.from_numpy(labels), torch.from_numpy(block).double())
    return labels, total.numpy(), np.bincount(labels, minlength=len(cent)).astype(np.float64)


def _distance_task(block: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    import torch

    torch.set_num_threads(1)
    return cluster_mean_distance(block, labels, k, seed=seed, device="cpu")
