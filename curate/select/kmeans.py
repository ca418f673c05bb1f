"""k-means in torch, for typicality clusters.

Why our own and not sklearn: the same code runs on the GPU (a 1M x 512 pool with 500 clusters
takes seconds there, minutes in sklearn on CPU), the pool stays in the storage dtype (fp16 on GPU)
instead of sklearn's float32/float64 copy, and the assignment step works in row tiles sized by
`curate.device`, so memory is O(N) plus one (tile x K) block. The algorithm is plain Lloyd with
k-means++ seeding on a seeded sample, which is what sklearn's KMeans does; tests check that, given
the same initial centroids, we reach the same labels as `sklearn.cluster.KMeans(algorithm="lloyd")`.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.device import rows_per_chunk
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage


def _assign(x: torch.Tensor, norms: torch.Tensor, cent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per row (ties: lower centroid id) and the squared distance, in row tiles."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    d2 = torch.empty(n, dtype=torch.float32, device=x.device)
    cn = (cent.float() ** 2).sum(1)
    ct = cent.to(x.dtype).T.contiguous()
    rows = rows_per_chunk(cent.shape[0], x.device, bytes_per_value=8, fraction=0.05)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        s = mm_f32(x[r0:r1], ct).mul_(2).sub_(cn[None, :])  # 2 x.c - |c|^2: larger = closer
        m = torch.max(s, dim=1)
        labels[r0:r1] = m.indices
        d2[r0:r1] = (norms[r0:r1] - m.values).clamp_min_(0)
    return labels, d2


def kmeans_plusplus(x: torch.Tensor, norms: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling). Sampling happens on the host with a numpy generator, so
    the seeds are the same on CPU and GPU up to float rounding."""
    n = x.shape[0]
    first = int(rng.integers(n))
    chosen = [first]
    d2 = (norms - 2 * mm_f32(x, x[first]) + norms[first]).clamp_min_(0)
    for _ in range(1, k):
        p = d2.double().cpu().numpy()
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        d2 = torch.minimum(d2, (norms - 2 * mm_f32(x, x[nxt]) + norms[nxt]).clamp_min_(0))
    return x[torch.as_tensor(chosen, device=x.device)].float()


def kmeans(
    X: np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 50,
    tol: float = 1e-4,
    init: np.ndarray | None = None,
    sample_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float32 [K, d], labels int64 [N]). Stops when no label changes or the largest
    centroid move is below `tol`. Empty clusters keep their previous centroid."""
    dev = resolve_device(device)
    n = int(X.shape[0])
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters={k} must be between 1 and the number of rows ({n})")
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        x = to_storage(X, dev)
        norms = sq_norms(x)
        if init is not None:
            cent = torch.as_tensor(np.asarray(init, np.float32), device=dev)
        else:
            m = min(n, sample_size or max(20 * k, 10_000))
            sub = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
            s_idx = torch.as_tensor(sub, device=dev)
            cent = kmeans_plusplus(x[s_idx], norms[s_idx], k, rng)
        labels = None
        for _ in range(max_iter):
            new_labels, _ = _assign(x, norms, cent)
            sums = torch.zeros((k, x.shape[1]), dtype=torch.float32, device=dev)
            rows = rows_per_chunk(x.shape[1], dev, fraction=0.02)
            for r0 in range(0, n, rows):
                sums.index_add_(0, new_labels[r0 : r0 + rows], x[r0 : r0 + rows].float())
            counts = torch.bincount(new_labels, minlength=k).to(torch.float32)
            new_cent = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], cent)
            shift = float((new_cent - cent).norm(dim=1).max())
            same = labels is not None and bool(torch.equal(new_labels, labels))
            cent, labels = new_cent, new_labels
            if same or shift <= tol:
                break
        labels, _ = _assign(x, norms, cent)
        return cent.cpu().numpy().astype(np.float32), labels.cpu().numpy()
