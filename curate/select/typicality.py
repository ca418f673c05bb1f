"""Typicality in the TypiClust sense (Hacohen et al., ICML 2022): the strong choice at tiny budgets.

Idea: with very few labels, a model learns most from images that are *typical* (in dense regions)
and that come from *different* regions. So: cluster the pool with k-means into about
(labeled + budget) clusters, score each image by its typicality inside its cluster
(1 / mean distance to its k nearest cluster-mates), and repeatedly take the most typical
selectable image of the least-covered cluster (fewest labeled or already-picked images; ties go
to the larger cluster, then the lower cluster id). Clusters smaller than `min_cluster_size` are
skipped while larger ones still have candidates (they are outliers, not modes).

Typicality is computed once over every member of a cluster (labeled ones included: they are
part of the distribution); it is not recomputed after each pick. `cluster_pool` defers it to first
use (`Clustering`): auto's stratified branch ranks by a random score and computes it for the picks only.

The recipe follows the paper: k-means keeps the best inertia of `N_INIT` (10, as sklearn and the
paper's code) k-means++ initialisations, run to sklearn's convergence rule (one unlucky seeding
otherwise merges two modes and a tiny budget misses one), and typicality uses the `k` (default 20)
nearest cluster-mates, ranked on the raw distance (no percentile floor: the most typical row of a
cluster must not tie with the next ones). Tests compare the picks with a TypiClust written on
sklearn (KMeans, NearestNeighbors) and check that a budget equal to the number of well-separated
modes takes one image from each; given sklearn's clusters, the picks are the reference's.

Scale (what is approximated on large pools): k-means fits on a sample and labels every row in one
assignment pass (see `kmeans`); typicality is exact k-NN in clusters of up to `REFERENCE_MATES`
rows and, above, the mean distance to the k nearest of a seeded sample of REFERENCE_MATES
cluster-mates: the same formula at a coarser scale (about the k x size / REFERENCE_MATES nearest of
the cluster), with k values behind each mean, not one. (Scaling k down to k x REFERENCE_MATES /
size instead, to estimate the exact 20-NN distance, left one sampled mate per row in 20k-row
clusters, i.e. 1M rows at budget 50: a noise-driven ranking that put near-duplicate pairs on top and
cost up to 10 points of accuracy at budget 10; benchmarks/typicality_scale.py, BENCHMARKS.md.)
Each such cluster's distances are then scaled back to the exact k-NN scale by one factor,
((REFERENCE_MATES - 1) / (size - 1))^(1 / D), D the cluster's intrinsic dimension estimated on its
sampled mates (`_scale_to_exact`): the ranking inside the cluster (all TypiClust uses) is unchanged,
but values compare across clusters of any size, as `weights typicality` and the manifest's column
compare them (benchmarks/typicality_across_clusters.py).
Where typicality alone ranks a cluster (the TypiClust procedure without weights or quotas:
`Clustering.ranking`), only the contenders of a cluster above CONTENDER_FACTOR x REFERENCE_MATES
(1,024) rows are ranked: its REFERENCE_MATES candidates
nearest the k-means centroid (where a unimodal cluster's density peaks) plus its sampled mates (so
a cluster that merged two modes is not represented by the sparse gap nearest its centroid). That
costs one N x d pass plus K x 2 x REFERENCE_MATES^2 x d instead of N x REFERENCE_MATES x d, and in
the benchmark it ranked like every row ranked (the same accuracy within noise). Where a cluster's
picks outnumber its contenders (hundreds of picks per cluster), `select` ranks every member instead.
Mates are found with one product and a top-k per row tile (only the k distances are needed; small
products on one CPU thread), so memory is one tile.
No N x N matrix at any N.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
import torch

from curate.device import rows_per_chunk
from curate.select.density import DENSITY_K, reference_rows
from curate.select.kmeans import kmeans, one_thread
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
N_INIT = 10  # the paper's and sklearn's choice; on large pools the inits run on a sample (kmeans)
REFERENCE_MATES = 256  # exact typicality in clusters up to this size, a sample of mates above
CONTENDER_FACTOR = 4  # only clusters above this many times the sample rank contenders (at most half their rows)
DIMENSION_ROWS = 64  # sampled mates whose k-NN distances estimate a large cluster's intrinsic dimension
SEPARATION_ROWS = 4096  # cluster_separation scores a seeded sample of this many rows


def n_clusters_for(n_rows: int, n_centers: int, budget: int, max_clusters: int = MAX_CLUSTERS) -> int:
    """TypiClust's rule: one cluster per labeled-or-picked image, capped (k-means cost grows with K)."""
    return int(max(1, min(n_rows, n_centers + budget, max_clusters)))


def cluster_typicality(
    X: np.ndarray, labels: np.ndarray, k: int = DENSITY_K, *, seed: int = 0, reference_size: int = REFERENCE_MATES,
    device: str | torch.device | None = None
) -> np.ndarray:
    """Typicality of each row within its cluster (0 for a cluster of one).

    Exact (k nearest cluster-mates) in clusters of up to `reference_size` rows; in larger ones each
    row is compared with a seeded sample of `reference_size` mates and the k nearest of those are
    averaged (a density at the scale of the k x size / sample nearest mates, module doc) at a cost
    of reference_size x d per row, whatever the cluster size."""
    return typicality_from_distance(
        cluster_mean_distance(X, labels, k, seed=seed, reference_size=reference_size, device=device)
    )


def cluster_mean_distance(
    X: np.ndarray, labels: np.ndarray, k: int = DENSITY_K, *, seed: int = 0, reference_size: int = REFERENCE_MATES,
    device: str | torch.device | None = None, rows: np.ndarray | None = None
) -> np.ndarray:
    """Mean distance of each row to its k nearest cluster-mates (NaN for a cluster of one). Each
    cluster's values depend on its members only, so clusters can be computed apart (--engine ray).
    With `rows`: only those rows' values (the same mates and sample), in that order."""
    mean_dist = np.full(len(labels), np.nan, dtype=np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    wanted = None
    if rows is not None:
        wanted = np.zeros(len(labels), dtype=bool)
        wanted[rows] = True
    dev = resolve_device(device)
    with torch.inference_mode(), one_thread(dev):  # one small product per cluster
        for members in np.split(order, bounds):
            n_c = len(members)
            if n_c < 2 or (wanted is not None and not wanted[members].any()):
                continue
            ref = reference_rows(n_c, reference_size, seed)  # the mates every member is compared with
            kk = max(1, min(len(ref) - 1, k))  # k of the sample, not k x sample / size: module doc
            # back to the exact k-NN scale, so that values compare across clusters (1 where exact)
            scale = 1.0 if len(ref) == n_c else _scale_to_exact(X[members[ref]], n_c, kk, dev)
            if wanted is None:
                mean_dist[members] = _mates_distance(X[members], ref, kk, dev) * scale
            else:  # only the wanted members against the same sampled mates
                at = np.flatnonzero(wanted[members])
                mean_dist[members[at]] = _mates_distance(X[members[at]], ref, kk, dev, at=at,
                                                         mates=X[members[ref]]) * scale
    return mean_dist if rows is None else mean_dist[rows]


def contenders(X: np.ndarray, labels: np.ndarray, candidates: np.ndarray, *, centroids: np.ndarray | None = None,
               seed: int = 0, reference_size: int = REFERENCE_MATES, centroid_d2: np.ndarray | None = None,
               device: str | torch.device | None = None) -> np.ndarray:
    """Sorted rows worth ranking by typicality: every candidate of a cluster of up to CONTENDER_FACTOR x
    `reference_size` members (below, contenders would be most of it and save nothing); in a larger
    one its `reference_size` candidates nearest the centroid (where the density peaks in a unimodal
    cluster) and its candidates among the sampled mates (which cover every mode of a cluster in
    proportion to its mass). `centroids`: k-means' (K x d); None: the members' means. `centroid_d2`:
    each row's squared distance to its centroid where k-means' last assignment pass already has it
    (then no distance is computed here)."""
    labels = np.asarray(labels, dtype=np.int64)
    cand = np.asarray(candidates, bool)
    size = np.bincount(labels)
    big = size > CONTENDER_FACTOR * reference_size
    keep = cand & ~big[labels]
    if not big.any():
        return np.flatnonzero(keep)
    dev = resolve_device(device)
    order = np.argsort(labels, kind="stable")  # members in row order, as cluster_mean_distance sees them
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        c = int(labels[members[0]])
        if not big[c]:
            continue
        own = members[cand[members]]
        d2 = (centroid_d2[own].astype(np.float64) if centroid_d2 is not None
              else _centroid_distance(X, own, None if centroids is None else centroids[c], members, dev))
        keep[own[np.lexsort((own, d2))[:reference_size]]] = True  # nearest the centroid, ties to the lower row
        mates = members[reference_rows(len(members), reference_size, seed)]
        keep[mates] |= cand[mates]
    return np.flatnonzero(keep)


def _centroid_distance(X: np.ndarray, rows: np.ndarray, centroid: np.ndarray | None, members: np.ndarray,
                       dev: torch.device) -> np.ndarray:
    """Squared distance of `rows` to a cluster's centroid (None: the mean of `members`), in row tiles:
    rows x d work, so all clusters together cost one pass over the pool."""
    step = rows_per_chunk(X.shape[1], dev, fraction=0.05)
    with torch.inference_mode(), one_thread(dev):  # small products: a second busy core only adds waiting
        if centroid is None:
            cent = torch.zeros(X.shape[1], dtype=torch.float64, device=dev)
            for r0 in range(0, len(members), step):
                cent += to_storage(X[members[r0 : r0 + step]], dev).double().sum(dim=0)
            cent /= len(members)
        else:
            cent = torch.as_tensor(np.asarray(centroid), device=dev).double()
        out = np.empty(len(rows), dtype=np.float64)
        for r0 in range(0, len(rows), step):
            x = to_storage(X[rows[r0 : r0 + step]], dev)
            dot = mm_f32(x, cent.to(x.dtype)[:, None])[:, 0].double()
            out[r0 : r0 + step] = (sq_norms(x).double() - 2 * dot + (cent**2).sum()).cpu().numpy()
    return out


def typicality_from_distance(mean_dist: np.ndarray) -> np.ndarray:
    """1 / mean distance over the whole pool at once; 0 for rows of one-member clusters (NaN)."""
    out = np.zeros(len(mean_dist), dtype=np.float32)
    ok = ~np.isnan(mean_dist)
    if ok.any():
        d = mean_dist[ok]
        # floor only exact duplicates (distance 0): the most typical row of a cluster must win on
        # its own distance, not tie with every row under a percentile floor
        pos = d[d > 0]
        out[ok] = 1.0 / np.maximum(d, pos.min() if pos.size else 1.0)
    return out


def _mates_distance(xm: np.ndarray, ref: np.ndarray, k: int, dev: torch.device, *, at: np.ndarray | None = None,
                    mates: np.ndarray | None = None) -> np.ndarray:
    """Mean distance from each row of a cluster to its k nearest rows among `ref` (itself excluded).
    Only the k values are needed, not which rows, so a plain top-k per row tile suffices. With
    `at`: `xm` holds only the members at those positions and `mates` the members at `ref`."""
    x = torch.nn.functional.normalize(to_storage(xm, dev).float(), dim=1)
    if mates is None:
        r = x[torch.as_tensor(ref, device=dev)].T.contiguous()
    else:
        r = torch.nn.functional.normalize(to_storage(mates, dev).float(), dim=1).T.contiguous()
    pos = np.full(len(xm) if at is None else int(max(at.max(), ref.max())) + 1, -1, dtype=np.int64)
    pos[ref] = np.arange(len(ref))
    if at is not None:
        pos = pos[at]  # the reference column of each row given, -1 if none
    out = np.empty(len(xm), dtype=np.float32)
    step = rows_per_chunk(len(ref), dev, fraction=0.05)
    for r0 in range(0, len(xm), step):
        own = pos[r0 : r0 + step]
        mine = np.flatnonzero(own >= 0)
        s = mm_f32(x[r0 : r0 + step], r)
        s[torch.as_tensor(mine, device=dev), torch.as_tensor(own[mine], device=dev)] = -torch.inf  # not its own mate
        if dev.type == "cpu":  # a partition is 5-8x cheaper than torch.topk on CPU (same k values)
            top = torch.from_numpy(np.partition(s.numpy(), s.shape[1] - k, axis=1)[:, -k:].astype(np.float64))
        else:
            top = torch.topk(s, k, dim=1, sorted=False).values.double()
        top = top.sort(dim=1).values  # summed in one order, whichever way they were found
        out[r0 : r0 + step] = top.mul_(-2).add_(2).clamp_min_(0).sqrt_().mean(dim=1).cpu().numpy()
    return out


def _scale_to_exact(mates: np.ndarray, n_c: int, k: int, dev: torch.device) -> float:
    """Factor from the k nearest of m sampled mates to the k nearest of all n_c members. The j-th
    nearest sampled mate stands in for about the (j x (n_c - 1) / (m - 1))-th nearest member, and the
    distance to the r-th nearest grows as r^(1 / D), D the cluster's intrinsic dimension; so the
    factor is ((m - 1) / (n_c - 1))^(1 / D). 1 / D is the Levina-Bickel estimate averaged over the
    sampled mates (MacKay and Ghahramani's pooling: mean over rows of mean_j log(t_k / t_j), t their
    distances to their k nearest other mates), clipped to [0, 1]; the first DIMENSION_ROWS sampled
    mates against all of them are enough for that one mean (DIMENSION_ROWS x m x d per cluster)."""
    m = len(mates)
    if m < 3 or k < 2:
        return 1.0
    x = torch.nn.functional.normalize(to_storage(mates, dev).float(), dim=1)
    q = min(m, DIMENSION_ROWS)  # the mates are a random sample already: its first rows are one too
    s = mm_f32(x[:q], x.T.contiguous())
    s[torch.arange(q, device=dev), torch.arange(q, device=dev)] = -torch.inf  # not its own mate
    if dev.type == "cpu":  # a partition is several times cheaper than torch.topk on CPU
        top = torch.from_numpy(np.partition(s.numpy(), s.shape[1] - k, axis=1)[:, -k:].astype(np.float64))
    else:
        top = torch.topk(s, k, dim=1, sorted=False).values.double()
    t = top.sort(dim=1, descending=True).values.mul_(-2).add_(2).clamp_min_(0).sqrt_()  # ascending distance
    ok = t[:, -1] > 0  # a row whose k nearest are all duplicates says nothing about the dimension
    if not bool(ok.any()):
        return 1.0
    t = t[ok]
    floor = t[t > 0].min()
    inv_dim = torch.log(t[:, -1:] / t[:, :-1].clamp_min(floor)).mean(dim=1).mean()
    inv_dim = float(inv_dim.clamp(0.0, 1.0))
    return float(((m - 1) / (n_c - 1)) ** inv_dim)


def cluster_separation(
    X: np.ndarray, labels: np.ndarray, *, sample: int = SEPARATION_ROWS, seed: int = 0,
    device: str | torch.device | None = None
) -> float:
    """How well the clusters separate: the mean simplified silhouette (b - a) / max(a, b), where a
    is a row's distance to its own cluster's centroid and b to the nearest other centroid (0 for a
    cluster of one; NaN with fewer than 2 clusters). Near 1: tight, distant clusters; near 0: the
    partition cuts a continuum. Centroids are the members' means over every row (one pass); the
    score is averaged over a seeded sample of `sample` rows, so the cost is N x d + sample x K x d."""
    labels = np.asarray(labels, dtype=np.int64)
    n_cl = int(labels.max()) + 1 if len(labels) else 0
    if n_cl < 2:
        return float("nan")
    dev = resolve_device(device)
    lab = torch.as_tensor(labels, device=dev)
    cent = torch.zeros((n_cl, X.shape[1]), dtype=torch.float32, device=dev)  # fp32 sums: 10x cheaper than fp64
    step = rows_per_chunk(X.shape[1], dev, fraction=0.05)
    with torch.inference_mode(), one_thread(dev):  # small ops: a second busy core only adds waiting
        for r0 in range(0, len(X), step):
            cent.index_add_(0, lab[r0 : r0 + step], to_storage(X[r0 : r0 + step], dev).float())
        size = torch.bincount(lab, minlength=n_cl)
        cent = cent.double() / size.clamp_min(1)[:, None]
        rows = np.arange(len(X))
        if len(X) > sample:
            rows = np.sort(np.random.default_rng(seed).choice(len(X), size=sample, replace=False))
        r = torch.as_tensor(rows, device=dev)
        d = torch.cdist(to_storage(X[rows], dev).double(), cent)
        own = lab[r]
        a = d[torch.arange(len(rows), device=dev), own].clone()
        d[torch.arange(len(rows), device=dev), own] = torch.inf
        b = d.min(dim=1).values
        s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
        s[size[own] < 2] = 0.0
        return float(s.mean())


class Clustering:
    """k-means labels and in-cluster typicality. Built by `cluster_pool`, typicality is computed on
    first use: auto's stratified branch never ranks by it and needs it only for the picked rows'
    manifest column (`typicality_at`), which skips the N x REFERENCE_MATES x d pass, and `ranking`
    needs only the contenders'. `full_distance`: what computes every row's mean distance when the
    full pass is needed (--engine ray: Ray tasks), instead of `cluster_mean_distance` here."""

    def __init__(self, labels: np.ndarray, typicality: np.ndarray | None = None, *, X: np.ndarray | None = None,
                 k: int = DENSITY_K, seed: int = 0, device: str | torch.device | None = None,
                 reference_size: int = REFERENCE_MATES, centroids: np.ndarray | None = None,
                 centroid_d2: np.ndarray | None = None,
                 full_distance: Callable[[], np.ndarray] | None = None) -> None:
        if typicality is None and X is None:
            raise ValueError("Clustering needs the typicality or the vectors to compute it from")
        self.labels = labels  # int64 cluster id per row
        self._typicality = typicality  # float32 per row
        self._X, self._k, self._seed, self._device = X, k, seed, device
        self._reference_size, self._centroids, self._centroid_d2 = reference_size, centroids, centroid_d2
        self._full_distance = full_distance
        self._known: np.ndarray | None = None  # typicality of the rows `ranking` computed, NaN elsewhere

    @property
    def typicality(self) -> np.ndarray:
        if self._typicality is None:
            mean_dist = (self._full_distance() if self._full_distance is not None else
                         cluster_mean_distance(self._X, self.labels, self._k, seed=self._seed, device=self._device,
                                               reference_size=self._reference_size))
            self._typicality = typicality_from_distance(mean_dist)
        return self._typicality

    def ranking(self, candidates: np.ndarray) -> np.ndarray:
        """What the TypiClust procedure ranks by when typicality alone decides: typicality at each
        cluster's `contenders`, 0 elsewhere (so the pick is the most typical contender). Only the
        contenders' values are computed (unless the full pass already ran): K x 2 x REFERENCE_MATES
        rows instead of N."""
        if self._X is None:  # built with its typicality only: every row is ranked
            return self.typicality
        rows = contenders(self._X, self.labels, candidates, centroids=self._centroids, seed=self._seed,
                          device=self._device, reference_size=self._reference_size,
                          centroid_d2=self._centroid_d2)
        out = np.zeros(len(self.labels), dtype=np.float32)
        out[rows] = self.typicality_at(rows)
        self._known = np.full(len(self.labels), np.nan, dtype=np.float32)  # the picks' manifest values
        self._known[rows] = out[rows]
        return out

    def typicality_at(self, rows: np.ndarray) -> np.ndarray:
        """Typicality of `rows` only (the same values as `typicality[rows]`, except that the floor for
        exact duplicates, distance 0, comes from these rows rather than the whole pool)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        if self._typicality is not None:
            return self._typicality[rows]
        if self._known is not None and not np.isnan(self._known[rows]).any():  # ranked already
            return self._known[rows]
        return typicality_from_distance(cluster_mean_distance(self._X, self.labels, self._k, seed=self._seed,
                                                              device=self._device, rows=rows,
                                                              reference_size=self._reference_size))


def cluster_pool(
    X: np.ndarray,
    n_clusters: int,
    *,
    k: int = DENSITY_K,
    seed: int = 0,
    n_init: int = N_INIT,
    device: str | torch.device | None = None,
) -> Clustering:
    """k-means labels now; typicality when first asked for (`Clustering`)."""
    cent, labels, d2 = kmeans(X, n_clusters, seed=seed, n_init=n_init, device=device, return_distance=True)
    return Clustering(labels, X=X, k=k, seed=seed, device=device, centroids=cent, centroid_d2=d2)


def typiclust_select(
    labels: np.ndarray,
    score: np.ndarray,
    budget: int,
    *,
    candidates: np.ndarray,
    centers: np.ndarray,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """(picked row indices in order, cluster of each pick).

    `score` is typicality (times any weights); within a cluster the highest score wins, ties to
    the lowest row index. `groups`/`quotas` are hard balance quotas (-1: never picked).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    n_cl = int(labels.max()) + 1 if n else 0
    size = np.bincount(labels, minlength=n_cl)
    covered = np.bincount(labels[np.asarray(centers, bool)], minlength=n_cl)
    cand = np.asarray(candidates, bool).copy()
    if groups is not None:
        assert quotas is not None
        groups = np.asarray(groups, np.int64)
        count = np.zeros(len(quotas), dtype=np.int64)
        cand &= groups >= 0
        cand[groups >= 0] &= np.asarray(quotas)[groups[groups >= 0]] > 0
    # Per cluster: candidates sorted by (score desc, index asc), consumed with a cursor.
    rows = np.flatnonzero(cand)
    order = rows[np.lexsort((rows, -score[rows].astype(np.float64), labels[rows]))]
    starts = np.searchsorted(labels[order], np.arange(n_cl + 1))
    cursor = starts[:-1].copy()
    big = size >= min_cluster_size
    use_big = bool(np.any(big & (starts[1:] > starts[:-1])))

    def allowed(c: int) -> bool:
        return (not use_big) or bool(big[c])

    heap = [(int(covered[c]), -int(size[c]), c) for c in range(n_cl) if starts[c + 1] > starts[c] and allowed(c)]
    heapq.heapify(heap)
    picks: list[int] = []
    clusters: list[int] = []
    taken = np.zeros(n, dtype=bool)
    while len(picks) < budget:
        if not heap:
            if use_big:  # large clusters exhausted: fall back to the small ones rather than stop
                use_big = False
                heap = [(int(covered[c]), -int(size[c]), c) for c in range(n_cl)
                        if cursor[c] < starts[c + 1] and not big[c]]
                heapq.heapify(heap)
                continue
            break
        cov, neg_size, c = heapq.heappop(heap)
        # advance the cursor past rows that became ineligible (their balance group filled up)
        while cursor[c] < starts[c + 1]:
            r = order[cursor[c]]
            if not taken[r] and (groups is None or count[groups[r]] < quotas[groups[r]]):
                break
            cursor[c] += 1
        if cursor[c] >= starts[c + 1]:
            continue  # nothing selectable left in this cluster
        r = int(order[cursor[c]])
        cursor[c] += 1
        taken[r] = True
        picks.append(r)
        clusters.append(c)
        covered[c] += 1
        if groups is not None:
            count[groups[r]] += 1
        heapq.heappush(heap, (int(covered[c]), neg_size, c))
    return np.asarray(picks, dtype=np.int64), np.asarray(clusters, dtype=np.int64)
