"""k-center greedy (farthest-first traversal): the diversity strategy.

Each pick is the candidate farthest from every existing center (labeled images, earlier picks).
Exactness: the result equals a brute-force reference that recomputes all distances per pick, with
ties broken by the lowest row index (`torch.argmax` returns the first maximum).

Speed: the widely copied implementation calls a pairwise-distance function against the new center
for every pick and re-reduces; here each pick costs exactly one pass over the matrix, a fused
matrix-vector product `|x|^2 - 2 x.c` (GEMV), followed by O(N) elementwise updates of the running
min-distance vector. The matrix is held in the storage dtype (fp16 on GPU) and products come back
in fp32. Memory is the matrix plus a few length-N vectors; distances to many initial centers are
computed in row tiles sized by `curate.device.rows_per_chunk`.

Extensions used by the composer, all inside the same loop:
  - weights: pick argmax of d^2 * w^2 (= argmax d * w), the "diversity x weights" product;
  - candidates: rows that may be picked (others still count as points but are never chosen);
  - groups/quotas: hard per-group quotas (balance); a full group's rows leave the candidates;
  - min_distance: a candidate closer than this to a center is never picked; stop when none remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.device import rows_per_chunk
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage

NEG_INF = float("-inf")
CPU_CHUNK = 16384  # rows per serial update chunk on CPU (below torch's 32768 parallel grain)


@dataclass
class KCenterResult:
    indices: np.ndarray  # int64 row indices in pick order
    distances: np.ndarray  # float32 distance of each pick to its nearest center when picked (inf: first)
    stopped: str | None  # None when the budget was filled, else why it stopped early


def _as_index(initial: np.ndarray | list[int] | None, n: int) -> np.ndarray:
    if initial is None:
        return np.empty(0, dtype=np.int64)
    a = np.asarray(initial)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"initial mask has shape {a.shape}, expected ({n},)")
        return np.flatnonzero(a).astype(np.int64)
    a = a.astype(np.int64).ravel()
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"initial centers must be row indices in [0, {n})")
    return np.unique(a)


def min_sq_dist_to(
    x: torch.Tensor, norms: torch.Tensor, centers: np.ndarray, device: torch.device
) -> torch.Tensor:
    """Squared distance from every row to its nearest row among `centers`, in row tiles so the
    temporary is (tile x n_centers), never N x N."""
    c = x[torch.as_tensor(centers, device=device)]
    nc = norms[torch.as_tensor(centers, device=device)]
    out = torch.empty(x.shape[0], dtype=torch.float32, device=device)
    rows = rows_per_chunk(len(centers), device, bytes_per_value=8, fraction=0.05)
    for r0 in range(0, x.shape[0], rows):
        r1 = min(r0 + rows, x.shape[0])
        d = mm_f32(x[r0:r1], c.T).mul_(-2).add_(norms[r0:r1, None]).add_(nc[None, :])
        out[r0:r1] = d.min(dim=1).values.clamp_min_(0)
    return out


def kcenter_select(
    X: np.ndarray | torch.Tensor,
    budget: int,
    initial: np.ndarray | list[int] | None = None,
    *,
    weights: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | list[int] | None = None,
    min_distance: float | None = None,
    device: str | torch.device | None = None,
) -> KCenterResult:
    """Greedy k-center with optional weights, candidate mask, group quotas and distance stop.

    X: (N, d) vectors (Euclidean distance on them as given). initial: indices or mask of existing
    centers (never picked). weights: (N,) >= 0, the pick maximizes distance * weight. groups: (N,)
    int codes (-1 = no group, never picked) with `quotas[g]` picks allowed per group. Returns
    fewer than `budget` picks only when candidates run out or `min_distance` stops it.
    """
    dev = resolve_device(device)
    n = int(X.shape[0])
    budget = int(budget)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    init = _as_index(initial, n)
    cand = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).copy()
    if cand.shape != (n,):
        raise ValueError(f"candidates mask has shape {cand.shape}, expected ({n},)")
    cand[init] = False
    if groups is not None:
        g_np = np.asarray(groups, dtype=np.int64)
        q_np = np.asarray(quotas, dtype=np.int64)
        if g_np.shape != (n,) or quotas is None:
            raise ValueError("groups needs shape (N,) and quotas one count per group")
        cand &= g_np >= 0
        cand[g_np >= 0] &= q_np[g_np[g_np >= 0]] > 0
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite, >= 0, one per row")

    if budget == 0 or n == 0 or not cand.any():
        stopped = None if budget == 0 else "no candidates"
        return KCenterResult(np.empty(0, np.int64), np.empty(0, np.float32), stopped)

    with torch.inference_mode():
        x = to_storage(X, dev)
        norms = sq_norms(x)
        bias = torch.zeros(n, dtype=torch.float32, device=dev)
        bias[torch.as_tensor(~cand, device=dev)] = NEG_INF
        w2 = g = quota = count = None
        if weights is not None:
            w2 = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=dev).square()
        if groups is not None:
            g = torch.as_tensor(np.maximum(g_np, 0), device=dev)
            quota = torch.as_tensor(q_np, device=dev)
            count = torch.zeros_like(quota)
        md2 = None if min_distance is None else float(min_distance) ** 2

        if len(init):
            d2 = min_sq_dist_to(x, norms, init, dev)
        else:
            d2 = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)

        picks = torch.empty(budget, dtype=torch.int64, device=dev)
        pick_score = torch.empty(budget, dtype=torch.float32, device=dev)
        pick_d2 = torch.empty(budget, dtype=torch.float32, device=dev)
        # CPU: row chunks below torch's parallel grain size keep the O(N) updates serial and in
        # cache (OpenMP fork/join per tiny op costs more than the op on a busy 2-core machine);
        # the GEMV itself stays multi-threaded. GPU: one chunk, and no host sync per pick.
        step = CPU_CHUNK if dev.type == "cpu" else n
        bounds = [(r0, min(n, r0 + step)) for r0 in range(0, n, step)]
        sync_every = 1 if dev.type == "cpu" else 256

        def best_of(center: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            """One pass: fold `center` into the min distances, then argmax of the pick score."""
            full = (count >= quota) if groups is not None else None
            vals, idxs = [], []
            for r0, r1 in bounds:
                dc = d2[r0:r1]
                if center is not None:
                    if x.dtype == torch.float32:
                        new = torch.addmv(norms[r0:r1], x[r0:r1], x[center], alpha=-2)
                    else:
                        new = mm_f32(x[r0:r1], x[center]).mul_(-2).add_(norms[r0:r1])
                    new.add_(norms[center]).clamp_min_(0)
                    torch.minimum(dc, new, out=dc)
                bc = bias[r0:r1]
                if full is not None:
                    bc.masked_fill_(full[g[r0:r1]], NEG_INF)
                sc = dc + bc if w2 is None else torch.addcmul(bc, dc, w2[r0:r1])
                if md2 is not None:
                    sc.masked_fill_(dc < md2, NEG_INF)
                m = torch.max(sc, dim=0)  # first maximum on ties
                vals.append(m.values)
                idxs.append(m.indices + r0)
            if len(bounds) == 1:
                return vals[0], idxs[0]
            j = torch.argmax(torch.stack(vals))  # first chunk holding the maximum
            return torch.stack(vals)[j], torch.stack(idxs)[j]

        if len(init):
            score, best = best_of(None)
        else:
            # No centers yet: the candidate closest to the mean of the candidates.
            mask = torch.as_tensor(cand, device=dev)
            total = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
            rows = rows_per_chunk(x.shape[1], dev, bytes_per_value=8, fraction=0.02)
            for r0 in range(0, n, rows):  # chunked: no full copy of the candidate rows
                total += x[r0 : r0 + rows][mask[r0 : r0 + rows]].double().sum(dim=0)
            mean = (total / int(cand.sum())).float()
            first = mm_f32(x, mean.to(x.dtype)).mul_(2).sub_(norms).add_(bias)
            best = torch.argmax(first)
            score = first[best]
        done = budget
        for t in range(budget):
            picks[t] = best
            pick_score[t] = score
            pick_d2[t] = d2[best]
            if (t + 1) % sync_every == 0 and score.item() == NEG_INF:
                done = t + 1
                break
            if t == budget - 1:
                break
            bias[best] = NEG_INF
            if groups is not None:
                count[g[best]] += 1
            score, best = best_of(best)

        scores = pick_score[:done].cpu().numpy()
        idx = picks[:done].cpu().numpy()
        dist = np.sqrt(pick_d2[:done].cpu().numpy())
    valid = scores > NEG_INF  # -inf marks "nothing left to pick"; it stays so for later steps
    k = int(np.argmin(valid)) if not valid.all() else len(valid)
    stopped = None
    if k < budget:
        stopped = "min_distance" if md2 is not None and _any_left_closer(cand, idx[:k]) else "no candidates"
    return KCenterResult(idx[:k].astype(np.int64), dist[:k].astype(np.float32), stopped)


def _any_left_closer(cand: np.ndarray, picked: np.ndarray) -> bool:
    """True when candidates remain (so the stop came from the distance threshold, not exhaustion)."""
    return int(cand.sum()) > len(picked)


def kcenter_greedy(
    X: np.ndarray | torch.Tensor,
    budget: int,
    initial: np.ndarray | list[int] | None = None,
    *,
    min_distance: float | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Indices of `budget` rows of X chosen farthest-first (Euclidean), in pick order.

    `initial` rows are existing centers (e.g. labeled images) and are never picked. With no
    initial centers the first pick is the row closest to the mean. Ties go to the lowest index.
    `min_distance` stops early once every remaining row is closer than that to a center.
    """
    n = int(X.shape[0])
    n_init = len(_as_index(initial, n))
    if budget > n - n_init:
        raise ValueError(f"budget {budget} is larger than the {n - n_init} rows that are not centers")
    return kcenter_select(X, budget, initial, min_distance=min_distance, device=device).indices
