"""k-center greedy (farthest-first traversal): the diversity strategy.

Each pick is the candidate farthest from every existing center (labeled images, earlier picks).
Exactness: the result equals a brute-force reference that recomputes all distances per pick, with
ties broken by the lowest row index (`torch.max`/`argmax` return the first maximum).

Speed. The widely copied implementation calls a pairwise-distance function against the new center
for every pick. Two loops here, both exact:
  - streaming (GPU default): per pick one fused pass over the matrix, `|x|^2 - 2 x.c` (GEMV) folded
    into the running min-distance vector, then the argmax; no host sync per pick;
  - lazy (CPU default): min-distances only ever shrink, so the scores of rows not touched since the
    last full pass are upper bounds. After a full pass we keep the K best-scoring rows (a small
    contiguous copy) and refresh only those against each new center; a pick among them is exact
    as soon as its refreshed score is strictly above the (K+1)-th score of the last full pass
    (which bounds every other row). Otherwise one full pass folds in all centers picked since the
    last one at once (a GEMM that reads the matrix once for several centers). On clustered and on
    unstructured 512-d data this needs a full pass every 10-40 picks instead of every pick.
The matrix is held in the storage dtype (fp16 on GPU); products come back in fp32. Memory is the
matrix plus a few length-N vectors; distances to many initial centers are computed in row tiles
sized by `curate.device.rows_per_chunk`.

Extensions used by the composer, inside the same loops:
  - weights: pick argmax of d^2 * w^2 (= argmax d * w), the "diversity x weights" product;
  - candidates: rows that may be picked (others still count as points but are never chosen);
  - groups/quotas: hard per-group quotas (balance); a full group's rows leave the candidates;
  - min_distance: a candidate closer than this to a center is never picked; stop when none remain.
All of them keep scores monotone (they only ever fall), which is what the lazy bound needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.device import rows_per_chunk
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage

NEG_INF = float("-inf")
LAZY_TOP: int | None = None  # tests set a small K to exercise the bound; None = sized from N
GRAPH_MIN_BUDGET = 32  # CUDA: above this many picks, one captured graph per pick (`_stream_graph`)
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


def _lazy_top(n: int) -> int:
    """How many best-scoring rows the lazy loop keeps between full passes."""
    return LAZY_TOP if LAZY_TOP is not None else max(256, min(4096, n // 32))


class _Loop:
    """State shared by the two loops: the matrix, min squared distances, score terms."""

    def __init__(self, x: torch.Tensor, norms: torch.Tensor, d2: torch.Tensor, bias: torch.Tensor,
                 w2: torch.Tensor | None, g: torch.Tensor | None, quota: torch.Tensor | None,
                 md2: float | None) -> None:
        self.x, self.norms, self.d2, self.bias, self.w2, self.md2 = x, norms, d2, bias, w2, md2
        self.g, self.quota = g, quota
        self.count = torch.zeros_like(quota) if quota is not None else None
        n = x.shape[0]
        # CPU: row chunks below torch's parallel grain size keep the O(N) updates serial and in
        # cache (an OpenMP fork/join per small op costs more than the op on a busy 2-core machine);
        # the GEMV/GEMM itself stays multi-threaded. GPU: one chunk.
        step = CPU_CHUNK if x.device.type == "cpu" else n
        self.bounds = [(r0, min(n, r0 + step)) for r0 in range(0, n, step)]

    def score(self, d2: torch.Tensor, bias: torch.Tensor, w2: torch.Tensor | None) -> torch.Tensor:
        s = d2 + bias if w2 is None else torch.addcmul(bias, d2, w2)
        if self.md2 is not None:
            s.masked_fill_(d2 < self.md2, NEG_INF)
        return s

    def distances_to(self, rows: torch.Tensor, row_norms: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Squared distances of `rows` to one center (a GEMV), clamped at 0."""
        if rows.dtype == torch.float32:
            new = torch.addmv(row_norms, rows, self.x[center], alpha=-2)
        else:
            new = mm_f32(rows, self.x[center]).mul_(-2).add_(row_norms)
        return new.add_(self.norms[center]).clamp_min_(0)

    def take(self, best: torch.Tensor) -> None:
        """Bookkeeping after a pick: it leaves the candidates, its group may fill up."""
        self.bias[best] = NEG_INF
        if self.count is not None:
            self.count[self.g[best]] += 1

    def group_full(self) -> torch.Tensor | None:
        return None if self.count is None else (self.count >= self.quota)


def _stream(loop: _Loop, best: torch.Tensor, score: torch.Tensor, budget: int) -> tuple[list, list, list]:
    """One fused pass per pick; picks stay on the device (GPU: no host sync per pick)."""
    if loop.x.device.type == "cuda" and len(loop.bounds) == 1 and budget > GRAPH_MIN_BUDGET:
        saved = (loop.d2.clone(), loop.bias.clone(), None if loop.count is None else loop.count.clone())
        try:
            return _stream_graph(loop, best, score, budget, saved)
        except RuntimeError:  # a backend that cannot capture: the same steps, launched one by one
            _restore(loop, saved)
    x, d2, bias, dev = loop.x, loop.d2, loop.bias, loop.x.device
    picks = torch.empty(budget, dtype=torch.int64, device=dev)
    pick_score = torch.empty(budget, dtype=torch.float32, device=dev)
    pick_d2 = torch.empty(budget, dtype=torch.float32, device=dev)
    sync_every = 1 if dev.type == "cpu" else 256
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
        loop.take(best)
        full = loop.group_full()
        vals, idxs = [], []
        for r0, r1 in loop.bounds:
            dc = d2[r0:r1]
            torch.minimum(dc, loop.distances_to(x[r0:r1], loop.norms[r0:r1], best), out=dc)
            bc = bias[r0:r1]
            if full is not None:
                bc.masked_fill_(full[loop.g[r0:r1]], NEG_INF)
            m = torch.max(loop.score(dc, bc, None if loop.w2 is None else loop.w2[r0:r1]), dim=0)
            vals.append(m.values)
            idxs.append(m.indices + r0)
        if len(vals) == 1:
            score, best = vals[0], idxs[0]
        else:
            j = torch.argmax(torch.stack(vals))  # first chunk holding the maximum
            score, best = torch.stack(vals)[j], torch.stack(idxs)[j]
    return picks[:done].tolist(), pick_score[:done].tolist(), pick_d2[:done].tolist()


def _restore(loop: _Loop, saved: tuple) -> None:
    loop.d2.copy_(saved[0])
    loop.bias.copy_(saved[1])
    if loop.count is not None:
        loop.count.copy_(saved[2])


def _stream_graph(loop: _Loop, best: torch.Tensor, score: torch.Tensor, budget: int,
                  saved: tuple) -> tuple[list, list, list]:
    """`_stream` on CUDA with each pick's steps captured once in a CUDA graph and replayed: the same
    kernels on the same buffers (so the same picks), but one launch per pick instead of ~15 Python
    calls, which left the GPU waiting on the CPU (1.17 ms per pick at 1M x 512 against 0.42 ms of
    GPU work; benchmarks/kcenter_gpu.py). Every state the steps touch lives in fixed device buffers;
    the pick counter too, so nothing is baked into the graph but addresses. `saved`: the loop's state
    before any step (the warm-up step is undone from it)."""
    x, d2, bias, dev = loop.x, loop.d2, loop.bias, loop.x.device
    picks = torch.zeros(budget, dtype=torch.int64, device=dev)
    pick_score = torch.full((budget,), NEG_INF, dtype=torch.float32, device=dev)
    pick_d2 = torch.zeros(budget, dtype=torch.float32, device=dev)
    at = torch.zeros(1, dtype=torch.int64, device=dev)  # where the next pick is recorded
    cur = best.reshape(1).clone()  # the pick being recorded, then the next one
    cur_score = score.reshape(1).to(torch.float32).clone()
    w2 = loop.w2

    def record() -> None:
        picks.index_copy_(0, at, cur)
        pick_score.index_copy_(0, at, cur_score)
        pick_d2.index_copy_(0, at, d2.index_select(0, cur))
        at.add_(1)

    def step() -> None:  # record the current pick, take it, find the next (as `_stream`'s loop body)
        record()
        bias.index_fill_(0, cur, NEG_INF)
        if loop.count is not None:
            loop.count.index_add_(0, loop.g.index_select(0, cur), torch.ones_like(cur, dtype=loop.count.dtype))
            bias.masked_fill_((loop.count >= loop.quota).index_select(0, loop.g), NEG_INF)
        c = x.index_select(0, cur).reshape(-1)  # no x[tensor]: a 0-d index would read it on the host
        if x.dtype == torch.float32:  # as `distances_to`, so the numbers (and picks) are the eager loop's
            new = torch.addmv(loop.norms, x, c, alpha=-2)
        else:
            new = mm_f32(x, c).mul_(-2).add_(loop.norms)
        torch.minimum(d2, new.add_(loop.norms.index_select(0, cur)).clamp_min_(0), out=d2)
        m = torch.max(loop.score(d2, bias, w2), dim=0)
        cur.copy_(m.indices.reshape(1))
        cur_score.copy_(m.values.reshape(1))

    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm-up on the capture stream (cuBLAS workspaces, allocator)
        step()
        _restore(loop, saved)
        at.zero_()
        cur.copy_(best.reshape(1))
        cur_score.copy_(score.reshape(1))
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    done = budget - 1
    for t in range(budget - 1):
        graph.replay()
        if (t + 1) % 256 == 0 and float(cur_score[0]) == NEG_INF:  # nothing left: stop early
            done = t + 1
            break
    record()  # the last pick (its steps would only find a next one)
    n = min(budget, done + 1)
    return picks[:n].tolist(), pick_score[:n].tolist(), pick_d2[:n].tolist()


def _lazy(loop: _Loop, first: int | None, first_score: float, budget: int) -> tuple[list, list, list]:
    """Exact farthest-first with a refreshed top-K and a bound (see module doc)."""
    x, norms, d2, bias, w2 = loop.x, loop.norms, loop.d2, loop.bias, loop.w2
    n = x.shape[0]
    k = min(n, _lazy_top(n))
    pending: list[int] = []  # centers picked since the last full pass
    picks: list[int] = []
    scores: list[float] = []
    d2s: list[float] = []
    s_full = torch.empty(n, dtype=torch.float32, device=x.device)
    top: dict[str, torch.Tensor] = {}
    bound = float("inf")  # no top-K yet: the first pick after this comes from a full pass

    def full_pass() -> tuple[int, float]:
        nonlocal bound
        c = torch.as_tensor(pending, device=x.device)
        full = loop.group_full()
        for r0, r1 in loop.bounds:
            dc = d2[r0:r1]
            if pending:
                t = mm_f32(x[r0:r1], x[c].T).mul_(-2).add_(norms[r0:r1, None]).add_(norms[c][None, :])
                torch.minimum(dc, t.min(dim=1).values.clamp_min_(0), out=dc)
            bc = bias[r0:r1]
            if full is not None:
                bc.masked_fill_(full[loop.g[r0:r1]], NEG_INF)
            s_full[r0:r1] = loop.score(dc, bc, None if w2 is None else w2[r0:r1])
        pending.clear()
        m = torch.max(s_full, dim=0)  # the exact pick: first maximum over every row
        vals, idx = torch.topk(s_full, min(k + 1, n))
        bound = float(vals[k]) if len(vals) > k else NEG_INF
        members = torch.sort(idx[:k]).values
        top.update(rows=members, x=x[members], norms=norms[members], d2=d2[members].clone(),
                   bias=bias[members].clone(), w2=None if w2 is None else w2[members],
                   g=None if loop.g is None else loop.g[members])
        return int(m.indices), float(m.values)

    best, score = (first, first_score) if first is not None else full_pass()
    while True:
        if score == NEG_INF:
            break
        picks.append(best)
        scores.append(score)
        member = top["rows"] if top else None
        j = int(torch.searchsorted(member, best)) if member is not None else -1
        in_top = member is not None and j < len(member) and int(member[j]) == best
        d2s.append(float(top["d2"][j]) if in_top else float(d2[best]))  # the exact value, either way
        if len(picks) == budget:
            break
        loop.take(torch.tensor(best, device=x.device))
        pending.append(best)
        if top:
            tb = top["bias"]
            if in_top:
                tb[j] = NEG_INF
            full = loop.group_full()
            if full is not None:
                tb.masked_fill_(full[top["g"]], NEG_INF)
            center = torch.tensor(best, device=x.device)
            torch.minimum(top["d2"], loop.distances_to(top["x"], top["norms"], center), out=top["d2"])
            st = loop.score(top["d2"], tb, top["w2"])
            m = torch.max(st, dim=0)
            if float(m.values) > bound:  # strictly above every row outside the top-K: exact
                best, score = int(top["rows"][int(m.indices)]), float(m.values)
                continue
        best, score = full_pass()
    return picks, scores, d2s


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
    lazy: bool | None = None,
) -> KCenterResult:
    """Greedy k-center with optional weights, candidate mask, group quotas and distance stop.

    X: (N, d) vectors (Euclidean distance on them as given). initial: indices or mask of existing
    centers (never picked). weights: (N,) >= 0, the pick maximizes distance * weight. groups: (N,)
    int codes (-1 = no group, never picked) with `quotas[g]` picks allowed per group. Returns
    fewer than `budget` picks only when candidates run out or `min_distance` stops it.
    `lazy` picks the loop (default: lazy on CPU, streaming on GPU); both give the same picks.
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
    g_np = q_np = None
    if groups is not None:
        g_np = np.asarray(groups, dtype=np.int64)
        if g_np.shape != (n,) or quotas is None:
            raise ValueError("groups needs shape (N,) and quotas one count per group")
        q_np = np.asarray(quotas, dtype=np.int64)
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
        w2 = None
        if weights is not None:
            w2 = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=dev).square()
        g = quota = None
        if g_np is not None and q_np is not None:
            g = torch.as_tensor(np.maximum(g_np, 0), device=dev)
            quota = torch.as_tensor(q_np, device=dev)
        md2 = None if min_distance is None else float(min_distance) ** 2
        if len(init):
            d2 = min_sq_dist_to(x, norms, init, dev)
        else:
            d2 = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)
        loop = _Loop(x, norms, d2, bias, w2, g, quota, md2)

        first = first_score = None
        if not len(init):
            # No centers yet: the candidate closest to the mean of the candidates.
            mask = torch.as_tensor(cand, device=dev).to(x.dtype)
            total = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
            for r0, r1 in loop.bounds:  # masked column sums as GEMVs: one read, no copy of the rows
                total += mm_f32(x[r0:r1].T, mask[r0:r1]).double()
            mean = (total / int(cand.sum())).float()
            s0 = torch.empty(n, dtype=torch.float32, device=dev)
            for r0, r1 in loop.bounds:  # row tiles: a fp16 matrix is never upcast whole
                s0[r0:r1] = mm_f32(x[r0:r1], mean.to(x.dtype)).mul_(2).sub_(norms[r0:r1]).add_(bias[r0:r1])
            first = torch.argmax(s0)
            first_score = s0[first]

        if lazy if lazy is not None else dev.type == "cpu":
            f = None if first is None else int(first)
            idx, scores, d2s = _lazy(loop, f, 0.0 if first_score is None else float(first_score), budget)
        else:
            if first is None:
                first_score, first = _stream_first(loop)
            idx, scores, d2s = _stream(loop, first, first_score, budget)
    scores_np = np.asarray(scores, dtype=np.float64)
    valid = scores_np > NEG_INF  # -inf marks "nothing left to pick"; it stays so for later steps
    k = int(np.argmin(valid)) if not valid.all() else len(valid)
    stopped = None
    if k < budget:
        stopped = "min_distance" if md2 is not None and _any_left_closer(cand, k) else "no candidates"
    dist = np.sqrt(np.asarray(d2s[:k], dtype=np.float64)).astype(np.float32)
    return KCenterResult(np.asarray(idx[:k], dtype=np.int64), dist, stopped)


def _stream_first(loop: _Loop) -> tuple[torch.Tensor, torch.Tensor]:
    """With initial centers: the first pick is the argmax of the score over every row."""
    vals, idxs = [], []
    full = loop.group_full()
    for r0, r1 in loop.bounds:
        bc = loop.bias[r0:r1]
        if full is not None:
            bc.masked_fill_(full[loop.g[r0:r1]], NEG_INF)
        m = torch.max(loop.score(loop.d2[r0:r1], bc, None if loop.w2 is None else loop.w2[r0:r1]), dim=0)
        vals.append(m.values)
        idxs.append(m.indices + r0)
    j = torch.argmax(torch.stack(vals))
    return torch.stack(vals)[j], torch.stack(idxs)[j]


def _any_left_closer(cand: np.ndarray, n_picked: int) -> bool:
    """True when candidates remain (so the stop came from the distance threshold, not exhaustion)."""
    return int(cand.sum()) > n_picked


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
