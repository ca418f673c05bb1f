"""Grouping near duplicates without chaining.

Union-find over all pairs above the cut (`single` linkage) chains: A ~ B and B ~ C put A and C in one
group however far apart they are, and on a pool of look-alikes one group swallows thousands of
distinct images. The default here is `star` (greedy leader clustering): images are visited in a
priority order (the `--keep` rule); an image not yet in a group becomes a keeper and takes every
not-yet-grouped image at cosine >= cut *to itself*. So every member is within the cut of its kept
image, and each image joins the first keeper (in priority order) it is close to. `complete` adds a
member only if it is within the cut of every member already in the group (cliques).

Rows are given in priority order (row 0 first). Memory: one (tile x columns) block of similarities,
never the pair list: keepers of a tile of rows are decided inside the tile, then they absorb the
later rows chunk by chunk (first keeper wins), so the result equals the sequential greedy exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.device import pick_device, storage_dtype
from curate.kernels import _Tiles, as_unit_rows

LINKAGES = ("star", "complete", "single")
UNASSIGNED = -1


def _prepare(vectors: np.ndarray, device: str | torch.device | None) -> tuple[torch.Tensor, torch.device]:
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return as_unit_rows(vectors, dev, storage_dtype(dev)), dev


def star_groups(
    vectors: np.ndarray,
    cut: float,
    *,
    subsets: list[np.ndarray] | None = None,
    device: str | torch.device | None = None,
    tile: int = 512,
    cols: int = 16384,
) -> np.ndarray:
    """Keeper row of every row (a keeper is its own keeper). `vectors` are in priority order.

    `subsets` (clustered mode): compare rows only inside each subset (sorted row indices), visited
    in turn with one shared assignment; a row grouped in an earlier subset keeps its group, and a
    keeper from an earlier subset goes on absorbing rows in later ones. Without subsets: one subset
    of all rows, which is the exact greedy."""
    x, dev = _prepare(vectors, device)
    n = x.shape[0]
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    tiles = _Tiles(max(tile, 1), max(cols, tile), dev)
    with torch.inference_mode():
        for rows in subsets if subsets is not None else [np.arange(n)]:
            _star_subset(x, rows, cut, leader, tiles, tile, cols)
    free = leader == UNASSIGNED  # rows in no subset are groups of their own
    leader[free] = np.flatnonzero(free)
    return leader


def _star_subset(x: torch.Tensor, rows: np.ndarray, cut: float, leader: np.ndarray, tiles: _Tiles,
                 tile: int, cols: int) -> None:
    for t0 in range(0, len(rows), tile):
        band = rows[t0 : t0 + tile]
        xb = x[torch.from_numpy(band).to(x.device)]
        # inside the band: sequential, so a row absorbed by an earlier keeper of the band is skipped
        sims = tiles(xb, xb).cpu().numpy() >= cut
        for a, r in enumerate(band):
            if leader[r] == UNASSIGNED:
                leader[r] = r
            elif leader[r] != r:
                continue
            later = band[a + 1 :]
            take = later[sims[a, a + 1 :] & (leader[later] == UNASSIGNED)]
            leader[take] = r
        keepers = band[leader[band] == band]
        if not len(keepers):
            continue
        xk = x[torch.from_numpy(keepers).to(x.device)]
        rest = rows[t0 + tile :]
        for c0 in range(0, len(rest), cols):
            chunk = rest[c0 : c0 + cols]
            free = chunk[leader[chunk] == UNASSIGNED]
            if not len(free):
                continue
            hit = tiles(xk, x[torch.from_numpy(free).to(x.device)]) >= cut
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
    device: str | torch.device | None = None,
    tile: int = 256,
    cols: int = 16384,
) -> np.ndarray:
    """Like `star_groups`, but a candidate joins a keeper's group only if it is within the cut of
    every member already in it (candidates tried in priority order). A candidate left out stays
    free: a later keeper may take it, or it becomes a keeper itself."""
    x, dev = _prepare(vectors, device)
    n = x.shape[0]
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    members: dict[int, list[int]] = {}
    tiles = _Tiles(max(tile, 1), max(cols, tile), dev)
    with torch.inference_mode():
        for rows in subsets if subsets is not None else [np.arange(n)]:
            for t0 in range(0, len(rows), tile):
                band = rows[t0 : t0 + tile]
                nbrs = _later_neighbours(x, band, rows[t0:], cut, tiles, cols)
                for a, r in enumerate(band):
                    if leader[r] == UNASSIGNED:
                        leader[r] = r
                        members[int(r)] = [int(r)]
                    elif leader[r] != r:
                        continue
                    cand = nbrs[a][leader[nbrs[a]] == UNASSIGNED]
                    if len(cand):
                        _grow_clique(x, int(r), cand, cut, leader, members)
    free = leader == UNASSIGNED
    leader[free] = np.flatnonzero(free)
    return leader


def _later_neighbours(x: torch.Tensor, band: np.ndarray, rows: np.ndarray, cut: float, tiles: _Tiles,
                      cols: int) -> list[np.ndarray]:
    """For each row of `band`, the rows of `rows` after it (higher index) at cosine >= cut, sorted."""
    xb = x[torch.from_numpy(band).to(x.device)]
    found: list[list[np.ndarray]] = [[] for _ in band]
    for c0 in range(0, len(rows), cols):
        chunk = rows[c0 : c0 + cols]
        hit = (tiles(xb, x[torch.from_numpy(chunk).to(x.device)]) >= cut).cpu().numpy()
        hit &= chunk[None, :] > band[:, None]
        for a in np.flatnonzero(hit.any(axis=1)):
            found[a].append(chunk[hit[a]])
    return [np.sort(np.concatenate(f)) if f else np.empty(0, np.int64) for f in found]


def _grow_clique(x: torch.Tensor, keeper: int, cand: np.ndarray, cut: float, leader: np.ndarray,
                 members: dict[int, list[int]]) -> None:
    cur = np.asarray(members[keeper], dtype=np.int64)
    xc = x[torch.from_numpy(cand).to(x.device)].float()
    ok = ((xc @ x[torch.from_numpy(cur).to(x.device)].float().T) >= cut).all(dim=1).cpu().numpy()
    among = ((xc @ xc.T) >= cut).cpu().numpy()
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
