"""The similarity kernels every analysis shares: chunked top-k and all pairs above a threshold.

Why here and not in each analysis: selection, dedup, slices and leak checks all reduce to "dot
products of L2-normalized rows", and at pool scale the only thing that matters is doing that in
tiles that fit in memory (never an N x N matrix) at the hardware's matmul rate. Device, storage
dtype and tile sizes come from `curate.device`, so the GPU path is the CPU path with fp16
storage: inputs are fp16 on GPU, products are accumulated *and returned* in fp32, so thresholds
and tie-breaks compare fp32 values on both devices.

Determinism: results are ordered by similarity descending, ties by lower key index, whatever the
tile sizes are.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from curate.device import pick_device, rows_per_chunk, storage_dtype

ArrayLike = np.ndarray | torch.Tensor
NO_COPY_BYTES = 256 << 20  # inputs above this are not copied when already unit rows (tests lower it)


# ---------------------------------------------------------------------------------------------
# preparation
# ---------------------------------------------------------------------------------------------
def as_unit_rows(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """2-D input -> L2-normalized rows on `device` in `dtype` (normalized in fp32 first, so fp16
    storage only rounds the final unit vectors). Zero rows stay zero (similarity 0 to anything).

    Out of core: a fp16 matrix on the CPU stays fp16 (tiles are upcast to fp32 one at a time), and
    an input over `NO_COPY_BYTES` whose rows are already unit length (store vectors are) is used
    as it is, so a pool-sized input never gets a second, normalized copy (renormalizing unit rows
    would only move them by ~1e-7, but smaller inputs keep it: results there stay bit-identical to
    before). Rows needing normalization are normalized in row blocks into one output."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D matrix of vectors, got shape {tuple(t.shape)}")
    if device.type == "cpu" and t.dtype == torch.float16:
        dtype = torch.float16  # half the memory; _Tiles computes each tile in fp32
    big = t.numel() * t.element_size() > NO_COPY_BYTES or t.dtype == torch.float16
    if big and t.device == device and t.dtype == dtype and t.is_contiguous() and _unit_already(t):
        return t
    out = torch.empty(t.shape, dtype=dtype, device=device)
    step = _block_rows(t.shape[1])
    for r0 in range(0, t.shape[0], step):
        c = t[r0 : r0 + step].to(device=device, dtype=torch.float32)
        c = c / torch.linalg.vector_norm(c, dim=1, keepdim=True).clamp_min(1e-12)
        out[r0 : r0 + step] = c
    return out


def _block_rows(dim: int) -> int:
    return max(1, (1 << 24) // max(1, dim))  # 64 MiB of fp32 per block


def unit_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a stored unit row's norm may be: fp16 rounding of each component moves it
    by up to ~2^-11 relative; fp32 by ~1e-7 per component."""
    return 2e-3 if dtype == torch.float16 else 1e-6


def _unit_already(t: torch.Tensor) -> bool:
    """True when every non-zero row has norm 1 within the dtype's rounding (checked in blocks)."""
    tol = unit_tolerance(t.dtype)
    step = _block_rows(t.shape[1])
    for r0 in range(0, t.shape[0], step):
        n = torch.linalg.vector_norm(t[r0 : r0 + step].float(), dim=1)
        if bool(((n - 1).abs() > tol).logical_and(n > 0).any()):
            return False
    return True


class _Tiles:
    """fp32 similarity tiles `a @ b.T`, written into one reused buffer on CPU.

    CPU: the GEMM goes through numpy's BLAS (OpenBLAS in the numpy wheels), measured ~1.7x faster
    than torch's MKL sgemm on the AMD CPUs we run on, and the buffer is reused so each tile does
    not pay for fresh pages. CUDA with fp16 storage: a tensor-core GEMM with fp32 accumulation
    *and fp32 output*, so no similarity is rounded to fp16 before it is compared."""

    def __init__(self, rows: int, cols: int, device: torch.device) -> None:
        self.device = device
        self.buf = np.empty(rows * cols, np.float32) if device.type == "cpu" else None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.buf is not None:  # fp16 storage on CPU (out of core): upcast this tile only
            m, n = a.shape[0], b.shape[0]
            out = self.buf[: m * n].reshape(m, n)
            np.matmul(_f32(a), _f32(b).T, out=out)
            return torch.from_numpy(out)
        if a.dtype == torch.float32:
            return a @ b.T
        try:
            return torch.mm(a, b.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # torch without mm.dtype: upcast (same values up to rounding)
            return a.float() @ b.float().T


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.numpy() if t.dtype == torch.float32 else t.float().numpy()


def _chunks(n_rows: int, n_cols: int, device: torch.device, chunk: int | None) -> tuple[int, int]:
    """(query rows, key columns) per tile: wide tiles (few Python steps, efficient GEMMs), sized so
    the fp32 tile plus its mask stay within ~10% of free memory."""
    if chunk is not None:
        return max(1, min(chunk, n_rows)), max(1, min(chunk, n_cols))
    cuda = device.type == "cuda"
    col = max(1, min(n_cols, 65536 if cuda else 16384))
    row = rows_per_chunk(col, device, bytes_per_value=4 + 1 + 4)  # tile + mask + row copies
    # ~2048 x 16384 tiles on CPU, 16384 x 65536 on GPU; narrow key sets (k-means centroids, a few
    # query texts) get taller tiles instead, since each tile's top-k call has a fixed cost
    row = min(row, max(16384, (1 << 30) // col) if cuda else max(2048, (1 << 25) // col))
    return max(1, min(row, n_rows)), col


# ---------------------------------------------------------------------------------------------
# top-k
# ---------------------------------------------------------------------------------------------
def _tile_topk(tile: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per row of one tile, ordered by (value desc, column asc), ties at the k-th value
    resolved to the lowest columns (torch.topk picks an arbitrary subset of tied values)."""
    if tile.shape[1] <= k:  # everything is selected: only the order matters
        vals, cols = torch.topk(tile, tile.shape[1], dim=1, largest=True, sorted=True)
        return _order(vals, cols)
    # One extra candidate tells whether an unselected value ties the k-th (a full compare pass
    # over the tile to count ties would cost more than the top-k itself).
    vals, cols = torch.topk(tile, k + 1, dim=1, largest=True, sorted=True)
    bad = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
    vals, cols = vals[:, :k].contiguous(), cols[:, :k].contiguous()
    kth = vals[:, -1:]
    if bad.numel():  # rare: more tied values than slots; pick the lowest columns among them
        sub = tile[bad]
        t = kth[bad]
        need = k - (sub > t).sum(dim=1, keepdim=True)
        eq = sub == t
        chosen = (sub > t) | (eq & (torch.cumsum(eq.to(torch.int32), dim=1) <= need))
        c = torch.nonzero(chosen)[:, 1].view(len(bad), k)
        cols[bad] = c
        vals[bad] = torch.gather(sub, 1, c)
    return _order(vals, cols)


def _order(vals: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (value desc, index asc): index sort, then a stable value sort."""
    o = torch.argsort(cols, dim=1)
    vals, cols = torch.gather(vals, 1, o), torch.gather(cols, 1, o)
    o = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return torch.gather(vals, 1, o), torch.gather(cols, 1, o)


def topk_similarity(
    queries: ArrayLike,
    keys: ArrayLike,
    k: int,
    *,
    exclude_self: bool = False,
    device: str | torch.device | None = None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar keys for every query row: cosine (dot of L2-normalized rows).

    Returns (sims float32 [n_q, k] descending, idx int64 [n_q, k]); ties go to the lower key index.
    `exclude_self=True` means queries and keys are the same rows: the diagonal is skipped, so a
    point is never its own neighbour (needs k <= n - 1). Memory is one (chunk x chunk) tile plus the
    running [chunk, k] result; `chunk` overrides the tile size (tests use it to force many tiles).
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = storage_dtype(dev)
    q = as_unit_rows(queries, dev, dtype)
    kk = as_unit_rows(keys, dev, dtype)
    if q.shape[1] != kk.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]} but keys have dim {kk.shape[1]}")
    n_q, n_k = q.shape[0], kk.shape[0]
    if exclude_self and n_q != n_k:
        raise ValueError("exclude_self=True needs queries and keys to be the same rows")
    avail = n_k - (1 if exclude_self else 0)
    if k < 1 or k > avail:
        raise ValueError(f"k={k} must be between 1 and {avail} (the number of candidate keys)")
    out_s = np.empty((n_q, k), dtype=np.float32)
    out_i = np.empty((n_q, k), dtype=np.int64)
    rows, cols = _chunks(n_q, n_k, dev, chunk)
    tiles = _Tiles(rows, cols, dev)
    with torch.inference_mode():
        for r0 in range(0, n_q, rows):
            qa = q[r0 : r0 + rows]
            best_v: torch.Tensor | None = None
            best_i: torch.Tensor | None = None
            for c0 in range(0, n_k, cols):
                tile = tiles(qa, kk[c0 : c0 + cols])
                if exclude_self and c0 < r0 + qa.shape[0] and r0 < c0 + tile.shape[1]:
                    r = torch.arange(qa.shape[0], device=dev) + r0
                    ok = (r >= c0) & (r < c0 + tile.shape[1])
                    tile[ok.nonzero().flatten(), (r[ok] - c0)] = -torch.inf
                kt = min(k, tile.shape[1])
                v, i = _tile_topk(tile, kt)
                i = i + c0
                if best_v is None:
                    best_v, best_i = v, i
                else:  # running result has lower indices than this tile: stable merge keeps ties right
                    v = torch.cat([best_v, v], dim=1)
                    i = torch.cat([best_i, i], dim=1)
                    o = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
                    best_v, best_i = torch.gather(v, 1, o), torch.gather(i, 1, o)
            assert best_v is not None and best_i is not None
            out_s[r0 : r0 + qa.shape[0]] = best_v.float().cpu().numpy()
            out_i[r0 : r0 + qa.shape[0]] = best_i.cpu().numpy()
    return out_s, out_i


# ---------------------------------------------------------------------------------------------
# all pairs above a threshold
# ---------------------------------------------------------------------------------------------
def check_threshold(threshold: float) -> None:
    if not (-1.0 <= float(threshold) <= 1.0) or np.isnan(threshold):
        raise ValueError(f"threshold {threshold} is outside [-1, 1]; cosine similarity lives there")


def iter_pairs_above(
    x: ArrayLike,
    threshold: float,
    y: ArrayLike | None = None,
    *,
    device: str | torch.device | None = None,
    chunk: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (i, j, sim) batches of every pair with cosine >= threshold, one batch per tile.

    Without `y`: pairs inside `x` with i < j only (upper triangle: half the products of a full
    search, and no self pairs). With `y`: every (i in x, j in y) pair. Products are fp32 on CPU and
    fp16-in / fp32-out on GPU; the comparison is always on fp32 values. Memory: one tile plus the
    pairs it holds, so a consumer that folds batches (union-find) stays O(N).
    """
    check_threshold(threshold)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = storage_dtype(dev)
    a = as_unit_rows(x, dev, dtype)
    b = a if y is None else as_unit_rows(y, dev, dtype)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sets have dims {a.shape[1]} and {b.shape[1]}; use one encoder for both")
    square = y is None
    n_a, n_b = a.shape[0], b.shape[0]
    rows, cols = _chunks(n_a, n_b, dev, chunk)
    if square:
        cols = max(cols, rows)  # the first block of a row band is its rows x rows diagonal tile
    tiles = _Tiles(rows, cols, dev)
    thr = float(threshold)
    with torch.inference_mode():
        for r0 in range(0, n_a, rows):
            qa = a[r0 : r0 + rows]
            m = qa.shape[0]
            blocks = [(r0, m)] + [(c, cols) for c in range(r0 + m, n_b, cols)] if square else [
                (c, cols) for c in range(0, n_b, cols)
            ]
            for c0, width in blocks:
                tile = tiles(qa, b[c0 : c0 + width])
                diagonal = square and c0 == r0
                if diagonal:  # self pairs out; pairs below the diagonal are dropped after the compare
                    tile.diagonal().fill_(-torch.inf)
                # Most rows of a pool have no pair above a dedup threshold: a row max (one cheap
                # pass) finds the few rows worth a full compare + nonzero.
                rows_hit = torch.nonzero(tile.amax(dim=1) >= thr).flatten()
                if rows_hit.numel() == 0:
                    continue
                sub = tile[rows_hit] if rows_hit.numel() < m else tile
                hit = torch.nonzero(sub >= thr)
                r = rows_hit[hit[:, 0]] if rows_hit.numel() < m else hit[:, 0]
                c = hit[:, 1]
                s = sub[hit[:, 0], c]
                if diagonal:
                    upper = c > r
                    r, c, s = r[upper], c[upper], s[upper]
                    if r.numel() == 0:
                        continue
                yield (
                    (r + r0).cpu().numpy().astype(np.int64),
                    (c + c0).cpu().numpy().astype(np.int64),
                    s.float().cpu().numpy(),
                )


def pairs_above(
    x: ArrayLike,
    threshold: float,
    y: ArrayLike | None = None,
    *,
    device: str | torch.device | None = None,
    chunk: int | None = None,
    max_pairs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs with cosine >= threshold as (i, j, sim) arrays sorted by (i, j).

    `max_pairs` guards memory: a threshold so low that most pairs qualify would otherwise build an
    O(N^2) list; it raises a clear error instead."""
    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    total = 0
    for i, j, s in iter_pairs_above(x, threshold, y, device=device, chunk=chunk):
        total += len(i)
        if max_pairs is not None and total > max_pairs:
            raise ValueError(
                f"more than {max_pairs} pairs have similarity >= {threshold}; raise the threshold"
            )
        ii.append(i)
        jj.append(j)
        ss.append(s)
    if not ii:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, s = np.concatenate(ii), np.concatenate(jj), np.concatenate(ss)
    o = np.lexsort((j, i))
    return i[o], j[o], s[o]
