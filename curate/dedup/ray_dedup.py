"""`curate dedup --mode clustered --engine ray`: the pair search inside clusters as Ray tasks.

The clustering is the local one (`semdedup.cluster_subsets`, fitted in the driver on a sample);
the clusters are dealt to tasks in groups of about equal pair work (sum of n_c^2), and each task
returns, per cluster, the pairs at cosine >= cut (`kernels.iter_pairs_above`, the local kernel).
The driver then replays the grouping on those pairs: union-find for `single`; for `star` and
`complete` the same greedy as `linkage.star_groups` / `complete_groups` with the subsets visited in
the same order and one shared assignment, reading neighbours from the pair lists instead of
recomputing similarities. So the groups are those of the local clustered mode on the same
clustering (tests/test_dedup_ray.py); only a pair whose cosine lands on the cut within float
rounding of the two GEMM blockings could differ.

Cost: the tasks do all the O(sum n_c^2 d) work; the driver holds the pairs above the cut (few for
duplicates; a pool of near-identical frames has many, which is what `--linkage star` is for) and
visits only rows that have a neighbour. Store reads and writes stay in the driver.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from curate.dedup.linkage import UNASSIGNED, Judge, _grow_clique, _prepare
from curate.kernels import iter_pairs_above

Pairs = tuple[np.ndarray, np.ndarray]  # (i, j) row indices, i < j


def _pairs_task(block: np.ndarray, bounds: list[int], threshold: float) -> list[Pairs]:
    """Pairs above the cut inside each cluster; block rows [bounds[c], bounds[c+1]) are cluster c."""
    torch.set_num_threads(1)  # one worker CPU per task
    out = []
    for c in range(len(bounds) - 1):
        x = block[bounds[c] : bounds[c + 1]]
        got = [(i, j) for i, j, _ in iter_pairs_above(x, threshold, device="cpu")] if len(x) >= 2 else []
        out.append((np.concatenate([g[0] for g in got]).astype(np.int64) if got else np.empty(0, np.int64),
                    np.concatenate([g[1] for g in got]).astype(np.int64) if got else np.empty(0, np.int64)))
    return out


def subset_pairs(ray: Any, vectors: np.ndarray, subsets: list[np.ndarray], threshold: float,
                 tasks: int | None = None) -> list[Pairs]:
    """For every subset, its pairs at cosine >= threshold as global row indices (i < j), computed
    by Ray tasks (default: four per worker CPU, so one slow task does not hold up the rest)."""
    tasks = tasks or 4 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    work = np.array([len(s) ** 2 for s in subsets], dtype=np.float64)
    load = np.zeros(min(tasks, max(1, len(subsets))))
    owner = np.empty(len(subsets), dtype=np.int64)
    for c in np.argsort(-work, kind="stable"):  # largest first, to the least loaded task
        owner[c] = int(np.argmin(load))
        load[owner[c]] += work[c]
    fn = ray.remote(num_cpus=1)(_pairs_task)
    futures, members = [], []
    for t in range(len(load)):
        mine = np.flatnonzero(owner == t)
        if not len(mine):
            continue
        bounds = np.concatenate([[0], np.cumsum([len(subsets[c]) for c in mine])]).tolist()
        block = np.ascontiguousarray(vectors[np.concatenate([subsets[c] for c in mine])], dtype=np.float32)
        futures.append(fn.remote(ray.put(block), bounds, float(threshold)))
        members.append(mine)
    out: list[Pairs] = [(np.empty(0, np.int64), np.empty(0, np.int64))] * len(subsets)
    for mine, got in zip(members, ray.get(futures), strict=True):
        for c, (i, j) in zip(mine, got, strict=True):
            rows = subsets[c]  # sorted, so i < j stays i < j
            out[c] = (rows[i], rows[j])
    return out


def renumber(pairs: list[Pairs], new_of_old: np.ndarray) -> list[Pairs]:
    """Pairs in new indices (old rows mapped to -1 are dropped), each pair ordered low < high."""
    out = []
    for i, j in pairs:
        a, b = new_of_old[i], new_of_old[j]
        ok = (a >= 0) & (b >= 0)
        a, b = a[ok], b[ok]
        out.append((np.minimum(a, b), np.maximum(a, b)))
    return out


def degree_from_pairs(pairs: list[Pairs], n: int) -> np.ndarray:
    """Neighbours per row, counted once per shared subset (as `run._degree` does)."""
    deg = np.zeros(n, dtype=np.int64)
    for i, j in pairs:
        deg += np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    return deg


def _later_neighbours(i: np.ndarray, j: np.ndarray) -> dict[int, np.ndarray]:
    """Row -> its higher-index neighbours (sorted), for the rows that have any."""
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    cuts = np.flatnonzero(np.diff(i)) + 1
    return {int(a[0]): b for a, b in zip(np.split(i, cuts), np.split(j, cuts), strict=True)} if len(i) else {}


def groups_from_pairs(linkage: str, vectors: np.ndarray, cut: float, subsets: list[np.ndarray],
                      pairs: list[Pairs], device: Any = None, order: np.ndarray | None = None) -> np.ndarray:
    """Keeper rank of every rank, as `star_groups` / `complete_groups` with `subsets` give it, from
    each subset's pairs above the cut (pairs and subsets in ranks, the priority order; rank r is
    row `order[r]` of `vectors`, default row r; see module doc)."""
    n = len(vectors) if order is None else len(order)
    leader = np.full(n, UNASSIGNED, dtype=np.int64)
    members: dict[int, list[int]] = {}
    x = _prepare(vectors, device)[0] if linkage == "complete" else None
    judge = Judge(cut, None, torch.float32)
    with torch.inference_mode():
        for rows, (i, j) in zip(subsets, pairs, strict=True):
            later = _later_neighbours(i, j)
            # Rows without a later neighbour here take no one: visiting them in order only makes the
            # free ones keepers, which the end of the subset does at once.
            for r in sorted(later):
                if leader[r] == UNASSIGNED:
                    leader[r] = r
                    members[r] = [r]
                elif leader[r] != r:
                    continue
                nb = later[r]
                cand = nb[leader[nb] == UNASSIGNED]
                if not len(cand):
                    continue
                if x is None:
                    leader[cand] = r
                else:
                    members.setdefault(r, [r])
                    _grow_clique(x, r, cand, judge, leader, members, order)
            free = rows[leader[rows] == UNASSIGNED]
            leader[free] = free
            for r in free.tolist() if x is not None else ():
                members[r] = [r]
    free = leader == UNASSIGNED  # rows in no subset are groups of their own
    leader[free] = np.flatnonzero(free)
    return leader
