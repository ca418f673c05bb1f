"""k-means in torch, for typicality clusters.

Why our own and not sklearn: the same code runs on the GPU (a 1M x 512 pool with 500 clusters
takes seconds there, minutes in sklearn on CPU), the pool stays in the storage dtype (fp16 on GPU)
instead of sklearn's float32/float64 copy, and the assignment step works in row tiles sized by
`curate.device`, so memory is O(N) plus one (tile x K) block. The algorithm is Lloyd with greedy
k-means++ seeding, best inertia of `n_init` initialisations, and sklearn's stopping rule (sum of
squared centroid moves <= tol x the mean feature variance); tests check that, given the same
initial centroids, we reach the same labels as `sklearn.cluster.KMeans(algorithm="lloyd")`, and
that best-of-n beats a single init's inertia.

Large pools (what is approximated): above `SAMPLE_MIN` rows the initialisations run on a seeded
sample (`fit_sample_size`: 8 to 40 rows per cluster, sized so one init costs about one pass over
the pool), at most `SAMPLED_ITERS` Lloyd iterations each and as many inits (1 to `SAMPLED_INITS`)
as fit in about one more pass; then ONE assignment pass labels every row with the sample's
centroids (not re-averaged over the pool: with 8-40 rows per cluster they sit within sampling noise
of the full-pool ones). Total: about three N x K x d products, i.e. about three k-center runs of
budget K, instead of one per iteration of every init. Up to `SAMPLE_MIN` rows (and whenever the
sample would be the whole pool) this is plain best-of-`n_init` k-means, tested against sklearn.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from curate.device import rows_per_chunk
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage

SAMPLE_MIN = 2048  # pools up to this size: the full recipe on every row
MIN_PER_CLUSTER, MAX_PER_CLUSTER = 8, 40  # fitting-sample rows per cluster on larger pools
SAMPLED_INITS = 3  # on a sample: at most this many initialisations
SAMPLED_ITERS = 20  # ... of at most this many Lloyd iterations each


@contextmanager
def one_thread(dev: torch.device) -> Iterator[None]:
    """Run many small products on one CPU thread: on a busy machine, torch's pool and numpy's BLAS
    pool make every tiny product wait for a second core (100 ms for a 7 x 512 x 2,048 product; a
    1,024 x 64 x 50 numpy product took 6.6 ms on 2 BLAS threads under load, 0.55 ms on one)."""
    if dev.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(n)


@functools.cache
def _blas() -> ThreadpoolController:
    """numpy's BLAS pool (found once: listing the loaded libraries costs milliseconds)."""
    return ThreadpoolController()


def _passes(n_clusters: int) -> int:
    """Row x centroid products per sample row in one init: Lloyd iterations + k-means++ trials."""
    return SAMPLED_ITERS + 2 + int(np.log(n_clusters))


def fit_sample_size(n_rows: int, n_clusters: int) -> int:
    """Rows k-means fits on (module doc): the whole pool when it is small; else as many as keep one
    init's work near one assignment pass (N x K products), within MIN/MAX_PER_CLUSTER x K."""
    per_pass = n_rows // _passes(n_clusters)
    m = min(max(per_pass, MIN_PER_CLUSTER * n_clusters), MAX_PER_CLUSTER * n_clusters)
    return int(min(n_rows, max(m, SAMPLE_MIN)))


def sampled_inits(n_rows: int, n_clusters: int, sample: int, n_init: int) -> int:
    """Inits on a sample: as many as fit in about one assignment pass of work, 1 to SAMPLED_INITS."""
    return int(max(1, min(n_init, SAMPLED_INITS, n_rows // (sample * _passes(n_clusters)))))


def _assign(x: torch.Tensor, norms: torch.Tensor, cent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per row (ties: lower centroid id) and the squared distance, in row tiles."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    d2 = torch.empty(n, dtype=torch.float32, device=x.device)
    cn = (cent.float() ** 2).sum(1)
    ct = cent.to(x.dtype).T.contiguous()
    rows = rows_per_chunk(cent.shape[0], x.device, bytes_per_value=8, fraction=0.05)
    host = x.device.type == "cpu" and x.dtype == torch.float32
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        if host:  # numpy: small tiles run on one thread instead of waiting for torch's pool on a busy CPU
            s_np = x[r0:r1].numpy() @ ct.numpy()
            s_np *= 2
            s_np -= cn.numpy()[None, :]  # 2 x.c - |c|^2: larger = closer
            best = s_np.argmax(axis=1)  # first maximum: ties go to the lower centroid id
            labels[r0:r1] = torch.from_numpy(best)
            d2[r0:r1] = (norms[r0:r1] - torch.from_numpy(s_np[np.arange(r1 - r0), best])).clamp_min_(0)
            continue
        s = mm_f32(x[r0:r1], ct).mul_(2).sub_(cn[None, :])
        m = torch.max(s, dim=1)
        labels[r0:r1] = m.indices
        d2[r0:r1] = (norms[r0:r1] - m.values).clamp_min_(0)
    return labels, d2


def kmeans_plusplus(x: torch.Tensor, norms: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (as in sklearn): each step draws 2 + ln(k) candidates by D^2
    sampling and keeps the one that lowers the potential most; plain k-means++ (one draw) often
    drops a seed into a mode that already has one, merging two small modes. Sampling happens on
    the host with a numpy generator, so the seeds are the same on CPU and GPU up to float rounding."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))

    def dist_to(rows: list[int]) -> torch.Tensor:  # (len(rows), n) squared distances
        r = torch.as_tensor(rows, device=x.device)
        prod = mm_f32(x[r], x.T)  # a few rows: the caller runs this on one thread (`one_thread`)
        return (norms[None, :] - 2 * prod + norms[r][:, None]).clamp_min_(0)

    first = int(rng.integers(n))
    chosen = [first]
    d2 = dist_to([first])[0]
    for _ in range(1, k):
        p = d2.double().cpu().numpy()
        total = p.sum()
        if total > 0:
            cand = np.searchsorted(np.cumsum(p), rng.random(trials) * total).clip(max=n - 1).tolist()
        else:
            cand = rng.integers(n, size=trials).tolist()
        new = torch.minimum(d2[None, :], dist_to(cand))
        best = int(torch.argmin(new.double().sum(dim=1)))
        chosen.append(int(cand[best]))
        d2 = new[best]
    return x[torch.as_tensor(chosen, device=x.device)].float()


def _lloyd(x: torch.Tensor, norms: torch.Tensor, cent: torch.Tensor, max_iter: int, tol: float
           ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Lloyd iterations from `cent`: (centroids, labels, inertia = sum of squared distances, each
    row's squared distance to its centroid).
    Stops when no label changes or the squared centroid moves sum to <= tol x mean feature
    variance (sklearn's rule, so `tol` means the same in both)."""
    n, k, dev = x.shape[0], cent.shape[0], x.device
    thresh = tol * float(x.float().var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    labels = None
    for _ in range(max_iter):
        new_labels, _ = _assign(x, norms, cent)
        sums = torch.zeros((k, x.shape[1]), dtype=torch.float32, device=dev)
        rows = rows_per_chunk(x.shape[1], dev, fraction=0.02)
        with one_thread(dev):  # memory-bound: a second busy core made each call wait ~50 ms, 10x its work
            for r0 in range(0, n, rows):
                sums.index_add_(0, new_labels[r0 : r0 + rows], x[r0 : r0 + rows].float())
        counts = torch.bincount(new_labels, minlength=k).to(torch.float32)
        new_cent = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], cent)
        shift = float(((new_cent - cent) ** 2).sum())
        same = labels is not None and bool(torch.equal(new_labels, labels))
        cent, labels = new_cent, new_labels
        if same or shift <= thresh:
            break
    labels, d2 = _assign(x, norms, cent)
    return cent, labels, float(d2.double().sum()), d2


def kmeans(
    X: np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: np.ndarray | None = None,
    n_init: int = 1,
    sample_size: int | None = None,
    device: str | torch.device | None = None,
    return_distance: bool = False,
) -> tuple[np.ndarray, ...]:
    """(centroids float32 [K, d], labels int64 [N]), and with `return_distance` each row's squared
    distance to its centroid (float32 [N], from the last assignment pass: no extra work). Empty
    clusters keep their previous centroid.

    With `init`: Lloyd on every row from those centroids. Without: `n_init` runs of k-means++
    seeding + Lloyd on a seeded sample of `sample_size` rows (default `fit_sample_size`; all rows
    when N is smaller, which makes this plain best-of-n_init k-means), the run with the lowest
    inertia wins (sklearn's rule), then one assignment pass over every row; on a sample, inits
    and iterations are bounded by `sampled_inits` and `SAMPLED_ITERS` (module doc)."""
    dev = resolve_device(device)
    n = int(X.shape[0])
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters={k} must be between 1 and the number of rows ({n})")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        x = to_storage(X, dev)
        norms = sq_norms(x)
        if init is not None:
            cent = torch.as_tensor(np.asarray(init, np.float32), device=dev)
            cent, labels, _, d2 = _lloyd(x, norms, cent, max_iter, tol)
        else:
            m = min(n, max(k, sample_size or fit_sample_size(n, k)))
            sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
            s_idx = torch.as_tensor(sub, device=dev)
            xs, ns = (x, norms) if m == n else (x[s_idx], norms[s_idx])
            best: tuple[torch.Tensor, torch.Tensor, float, torch.Tensor] | None = None
            if m < n:  # bounded fitting work on large pools (module doc)
                n_init, max_iter = sampled_inits(n, k, m, n_init), min(max_iter, SAMPLED_ITERS)
            for _ in range(n_init):
                with one_thread(dev):
                    seeds = kmeans_plusplus(xs, ns, k, rng)
                run = _lloyd(xs, ns, seeds, max_iter, tol)
                if best is None or run[2] < best[2]:
                    best = run
            assert best is not None
            cent, labels, d2 = best[0], best[1], best[3]
            if m < n:
                labels, d2 = _assign(x, norms, cent)
        out = cent.cpu().numpy().astype(np.float32), labels.cpu().numpy()
        return (*out, d2.cpu().numpy()) if return_distance else out
