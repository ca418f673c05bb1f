"""Grouping near duplicates without chaining.

Union-find over all pairs above the cut (`single` linkage) chains: A ~ B and B ~ C put A and C in one
group however far apart they are, and on a pool of look-alikes one group swallows thousands of
distinct images. The default here is `star` (greedy leader clustering): images are visited in a
priority order (the `--keep` rule); an image not yet in a group becomes a keeper and takes every
not-yet-grouped image at cosine >= cut *to itself*. So every member is within the cut of its kept
image, and each image joins the first keeper (in priority order) it is close to. `complete` adds a
member only if it is within the cut of every member already in the group (cliques).

Rows are visited in priority order (rank 0 first; `order` maps ranks to matrix rows). Memory: one
(tile x columns) block of similarities, never the pair list: keepers of a tile of rows are decided
inside the tile, then they absorb the later rows chunk by chunk (first keeper wins), so the result
equals the sequential greedy exactly. Each cluster subset's rows are gathered once (upcast to fp32
once on the CPU when the matrix is fp16). With an fp16 matrix, pairs within FP16_MARGIN of the cut
are re-scored from fp32 rows (`Judge`), so the groups are those of an fp32 run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from curate.device import pick_device, storage_dtype
from curate.kernels import _Tiles, as_unit_rows

LINKAGES = ("star", "complete", "single")
UNASSIGNED = -1
# fp16 rounds each unit-vector component by at most u = 2^-11 relative, so a cosine of two fp16 rows
# is within 2u |x||y| ~ 9.8e-4 of the fp32 one (plus ~1e-6 of fp32 GEMM rounding): twice that margin.
FP16_MARGIN = 2e-3
LOCAL_BYTES = 256 << 20  # a subset up to this much fp32 is gathered (and upcast) once, not per tile

Rescore = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ranks a, ranks b) -> fp32 cosines


def _prepare(vectors: np.ndarray, device: str | torch.device | None) -> tuple[torch.Tensor, torch.device]:
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return as_unit_rows(vectors, dev, storage_dtype(dev)), dev


class Judge:
    """"At or above the cut" for a tile of similarities between ranks `ra` (rows) and `rb` (columns).

    With fp16 rows (the out-of-core matrix, or the GPU's storage) a pair within FP16_MARGIN of the
    cut can fall on the wrong side; given `rescore` (fp32 cosines from fp32 rows), exactly those
    pairs are decided on fp32, so the greedy sees what an fp32 run sees. Only the tile's entries at
    or above cut - margin are looked at one by one (few: duplicates are rare among all pairs)."""

    def __init__(self, cut: float, rescore: Rescore | None, dtype: torch.dtype) -> None:
        self.cut = float(cut)
        self.rescore = rescore if dtype == torch.float16 else None
        self.rescored = 0  # pairs decided on fp32 rows

    def __call__(self, sims: torch.Tensor, ra: np.ndarray, rb: np.ndarray) -> torch.Tensor:
        if self.rescore is None:
            return sims >= self.cut
        hit = sims >= self.cut - FP16_MARGIN
        if not bool(hit.any()):
            return hit
        idx = torch.nonzero(hit)  # few: the tile's entries near or above the cut
        idx = idx[sims[idx[:, 0], idx[:, 1]] <= self.cut + FP16_MARGIN]
        if len(idx):
            i, j = idx[:, 0].cpu().numpy(), idx[:, 1].cpu().numpy()
            ok = np.asarray(self.rescore(ra[i], rb[j])) >= self.cut
            self.rescored += len(i)
            hit[idx[:, 0], idx[:, 1]] = torch.from_numpy(ok).to(hit.device)
        return hit


def _subset_source(x: torch.Tensor, rows: np.ndarray, order: np.ndarray | None) -> tuple[torch.Tensor, np.ndarray]:
    """(matrix, positions of `rows` in it). A subset that fits LOCAL_BYTES is gathered once (fp32
    on the CPU: fp16 tiles would be upcast again for every band); a larger one is read in place."""
    phys = rows if order is None else order[rows]
    if len(rows) * x.shape[1] * 4 > LOCAL_BYTES:
        return x, phys
    xs = x[torch.from_numpy(phys).to(x.device)]
    if xs.device.type == "cpu" and xs.dtype == torch.float16:
        xs = xs.float()
    return xs, np.arange(len(rows))


def _take(src: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    return src[torch.from_numpy(pos).to(src.device)]


def star_groups(
    vectors: np.ndarray,
    cut: float,
    *,
    subsets: list[np.ndarray] | None = None,
    order: np.ndarray | None = None,
    rescore: Rescore | None = None,
    device: str | torch.device | None = None,
    tile: int = 512,
    cols: int = 16384,
) -> np.ndarray:
    """Keeper rank of every rank (a keeper is its own keeper). Ranks are the priority order: rank r
    is row `order[r]` of `vectors` (default: row r), so the caller never reorders the matrix.

    `subsets` (clustered mode): compare ranks only inside each subset (sorted ranks), visited in
    turn with one shared assignment; a rank grouped in an earlier subset keeps its group, and a
    keeper from an earlier subset goes on absorbing ranks in later ones. Without subsets: one
    subset of all ranks, which is the exact greedy. `rescore`: see `Judge`."""
    x, dev = _prepare(vectors, device)
    n = x.shape[0] if order is None else len(order)
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    tiles = _Tiles(max(tile, 1), max(cols, tile), dev)
    judge = Judge(cut, rescore, x.dtype)
    with torch.inference_mode():
        for rows in subsets if subsets is not None else [np.arange(n)]:
            src, pos = _subset_source(x, rows, order)
            _star_subset(src, pos, rows, judge, leader, tiles, tile, cols)
    free = leader == UNASSIGNED  # ranks in no subset are groups of their own
    leader[free] = np.flatnonzero(free)
    return leader


def _star_subset(src: torch.Tensor, pos: np.ndarray, rows: np.ndarray, judge: Judge, leader: np.ndarray,
                 tiles: _Tiles, tile: int, cols: int) -> None:
    """The greedy over ranks `rows`, whose vectors are `src[pos]`."""
    for t0 in range(0, len(rows), tile):
        band, bpos = rows[t0 : t0 + tile], pos[t0 : t0 + tile]
        xb = _take(src, bpos)
        # inside the band: sequential, so a row absorbed by an earlier keeper of the band is skipped
        sims = judge(tiles(xb, xb), band, band).cpu().numpy()
        for a, r in enumerate(band):
            if leader[r] == UNASSIGNED:
                leader[r] = r
            elif leader[r] != r:
                continue
            later = band[a + 1 :]
            take = later[sims[a, a + 1 :] & (leader[later] == UNASSIGNED)]
            leader[take] = r
        is_keeper = leader[band] == band
        if not is_keeper.any():
            continue
        keepers = band[is_keeper]
        xk = _take(src, bpos[is_keeper])
        rest, rest_pos = rows[t0 + tile :], pos[t0 + tile :]
        for c0 in range(0, len(rest), cols):
            chunk = rest[c0 : c0 + cols]
            open_ = leader[chunk] == UNASSIGNED
            if not open_.any():
                continue
            free = chunk[open_]
            hit = judge(tiles(xk, _take(src, rest_pos[c0 : c0 + cols][open_])), keepers, free)
            got = hit.any(dim=0)
            if not bool(got.any()):
                continue
            first = hit.to(torch.int8).argmax(dim=0)  # first keeper in priority order wins
            got_np = got.cpu().numpy()
            leader[free[got_np]] = keepers[first.cpu().numpy()[got_np]]


def complete_groups(
    vectors: np.ndarray,
    cut: float,
    *,
    subsets: list[np.ndarray] | None = None,
    order: np.ndarray | None = None,
    rescore: Rescore | None = None,
    device: str | torch.device | None = None,
    tile: int = 256,
    cols: int = 16384,
) -> np.ndarray:
    """Like `star_groups`, but a candidate joins a keeper's group only if it is within the cut of
    every member already in it (candidates tried in priority order). A candidate left out stays
    free: a later keeper may take it, or it becomes a keeper itself."""
    x, dev = _prepare(vectors, device)
    n = x.shape[0] if order is None else len(order)
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    members: dict[int, list[int]] = {}
    tiles = _Tiles(max(tile, 1), max(cols, tile), dev)
    judge = Judge(cut, rescore, x.dtype)
    with torch.inference_mode():
        for rows in subsets if subsets is not None else [np.arange(n)]:
            for t0 in range(0, len(rows), tile):
                band = rows[t0 : t0 + tile]
                nbrs = _later_neighbours(x, order, band, rows[t0:], judge, tiles, cols)
                for a, r in enumerate(band):
                    if leader[r] == UNASSIGNED:
                        leader[r] = r
                        members[int(r)] = [int(r)]
                    elif leader[r] != r:
                        continue
                    cand = nbrs[a][leader[nbrs[a]] == UNASSIGNED]
                    if len(cand):
                        _grow_clique(x, int(r), cand, judge, leader, members, order)
    free = leader == UNASSIGNED
    leader[free] = np.flatnonzero(free)
    return leader


def _rows(order: np.ndarray | None, ranks: np.ndarray) -> np.ndarray:
    return ranks if order is None else order[ranks]


def _later_neighbours(x: torch.Tensor, order: np.ndarray | None, band: np.ndarray, rows: np.ndarray, judge: Judge,
                      tiles: _Tiles, cols: int) -> list[np.ndarray]:
    """For each rank of `band`, the ranks of `rows` after it (higher) at cosine >= cut, sorted."""
    xb = _take(x, _rows(order, band))
    found: list[list[np.ndarray]] = [[] for _ in band]
    for c0 in range(0, len(rows), cols):
        chunk = rows[c0 : c0 + cols]
        hit = judge(tiles(xb, _take(x, _rows(order, chunk))), band, chunk).cpu().numpy()
        hit &= chunk[None, :] > band[:, None]
        for a in np.flatnonzero(hit.any(axis=1)):
            found[a].append(chunk[hit[a]])
    return [np.sort(np.concatenate(f)) if f else np.empty(0, np.int64) for f in found]


def _grow_clique(x: torch.Tensor, keeper: int, cand: np.ndarray, judge: Judge, leader: np.ndarray,
                 members: dict[int, list[int]], order: np.ndarray | None = None) -> None:
    cur = np.asarray(members[keeper], dtype=np.int64)
    xc = _take(x, _rows(order, cand)).float()
    ok = judge(xc @ _take(x, _rows(order, cur)).float().T, cand, cur).all(dim=1).cpu().numpy()
    among = judge(xc @ xc.T, cand, cand).cpu().numpy()
    for k in range(len(cand)):
        if ok[k]:
            leader[cand[k]] = keeper
            members[keeper].append(int(cand[k]))
            ok &= among[k]


def edge_groups(n: int, i: np.ndarray, j: np.ndarray, linkage: str = "star") -> np.ndarray:
    """Keeper row of every row from a list of confirmed pairs (i, j) instead of a cut on vectors
    (verified dedup): the same greedy as `star_groups` / `complete_groups`, rows in priority order;
    a member is joined by a confirmed pair to its keeper (star) or to every member (complete)."""
    if linkage not in ("star", "complete"):
        raise ValueError(f"edge_groups: linkage {linkage!r} (single is union-find on the pairs)")
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(np.asarray(i).tolist(), np.asarray(j).tolist(), strict=True):
        if a != b:
            nbrs[a].add(b)
            nbrs[b].add(a)
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    for r in range(n):
        if leader[r] != UNASSIGNED:
            continue
        leader[r] = r
        group = [r]
        for c in sorted(nbrs[r]):
            if leader[c] == UNASSIGNED and (linkage == "star" or all(m in nbrs[c] for m in group)):
                leader[c] = r
                group.append(c)
    return leader


# ------------------------------------------------------------------------------------------------
def brute_force_groups(vectors: np.ndarray, cut: float, linkage: str = "star") -> np.ndarray:
    """The sequential greedy on a dense float64 similarity matrix: the reference for tests."""
    v = vectors.astype(np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return brute_force_on_matrix(v @ v.T >= cut, linkage)


def brute_force_on_matrix(s: np.ndarray, linkage: str = "star") -> np.ndarray:
    """The sequential greedy on a dense boolean "same" matrix (rows in priority order)."""
    n = len(s)
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    for i in range(n):
        if leader[i] != UNASSIGNED:
            continue
        leader[i] = i
        group = [i]
        for j in range(i + 1, n):
            if leader[j] == UNASSIGNED and s[i, j] and (linkage == "star" or all(s[j, m] for m in group)):
                leader[j] = i
                group.append(j)
    return leader
