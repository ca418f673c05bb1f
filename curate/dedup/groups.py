"""Duplicate groups: connected components (exact sha256 copies; `--linkage single`), which member
to keep, and the order in which `star` / `complete` grouping visits images (curate.dedup.linkage).

Components are exact for byte-identical files (same bytes are the same image, transitively). For
near copies they chain (A ~ B ~ C), which is why they are only the opt-in `single` linkage. The
graph can be large (a pool of near-identical frames has O(N^2) pairs), so edges are folded into the
component labels in batches and never all held at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

KEEP_POLICIES = ("largest", "first", "central")


class Components:
    """Union-find over N nodes fed with edge batches; memory O(N + one buffer), never O(edges).

    Each node carries a representative label. An incoming edge whose ends already share a label is
    dropped at once; the others are buffered and, when the buffer fills, merged with one sparse
    connected-components pass over the representatives (exact, vectorized, no Python loop per edge).
    """

    def __init__(self, n: int, buffer: int | None = None) -> None:
        self.n = n
        self.labels = np.arange(n, dtype=np.int64)
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._pending = 0
        self._limit = buffer if buffer is not None else max(n, 1 << 20)
        self.edges_seen = 0

    def add(self, i: np.ndarray, j: np.ndarray) -> None:
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        self.edges_seen += len(i)
        a, b = self.labels[i], self.labels[j]
        new = a != b
        if not new.any():
            return
        self._a.append(a[new])
        self._b.append(b[new])
        self._pending += int(new.sum())
        if self._pending >= self._limit:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        a, b = np.concatenate(self._a), np.concatenate(self._b)
        self._a, self._b, self._pending = [], [], 0
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(self.n, self.n)).tocsr()
        _, comp = connected_components(graph, directed=False)
        self.labels = comp.astype(np.int64)[self.labels]

    def result(self) -> np.ndarray:
        """Component label per node (equal labels = same group)."""
        self._flush()
        return self.labels


def groups_of(labels: np.ndarray, min_size: int = 2) -> list[np.ndarray]:
    """Member indices of every component with at least `min_size` nodes, each sorted ascending,
    groups ordered by their smallest member (deterministic for a given input order). Only those
    components become arrays: at 10M points, one array per singleton was ~1 GiB and a minute."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if len(order) else order
    ends = np.r_[starts[1:], len(order)]
    big = np.flatnonzero(ends - starts >= min_size)
    parts = [np.sort(order[starts[k] : ends[k]]) for k in big]
    parts.sort(key=lambda p: int(p[0]))
    return parts


@dataclass
class PointInfo:
    """What the keep policies look at, one entry per point (aligned arrays)."""

    first_rank: np.ndarray  # rank in "first" order (relative path, then id): smallest first
    area: np.ndarray  # width * height in pixels (0 when unknown)
    nbytes: np.ndarray  # file size (0 when unknown)
    vec_row: np.ndarray  # row in the vector matrix, -1 for points without a vector


def choose_keeper(members: np.ndarray, policy: str, info: PointInfo, vectors: np.ndarray | None) -> int:
    """The member to keep. Ties always fall back to "first" so the choice is deterministic, and a
    member with a vector always wins over one without (that one failed to decode or embed).

    largest: most pixels, then most bytes (least compressed copy); first: first in pool order
    (smallest relative path); central: highest mean cosine to the other members (the medoid, the
    most typical copy), computed as (v . sum - 1) / (g - 1) so a 10k-member group costs O(g d).
    """
    if policy not in KEEP_POLICIES:
        raise ValueError(f"--keep {policy!r}: use one of {', '.join(KEEP_POLICIES)}")
    usable = members[info.vec_row[members] >= 0]
    if 0 < len(usable) < len(members):  # never keep an image that failed to embed over one that did
        members = usable
    by_first = np.argsort(info.first_rank[members], kind="stable").tolist()
    if policy == "first":
        return int(members[by_first[0]])
    if policy == "largest":
        best = max(by_first, key=lambda t: (info.area[members[t]], info.nbytes[members[t]]))
        return int(members[best])
    rows = info.vec_row[members]
    has = rows >= 0
    if vectors is None or has.sum() < 2:
        return int(members[by_first[0]])
    v = vectors[rows[has]].astype(np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    score = np.full(len(members), -np.inf)
    score[has] = (v @ v.sum(axis=0) - 1.0) / (len(v) - 1)
    # max() returns the first maximum in `by_first` order, i.e. ties go to the first member
    best = max(by_first, key=lambda t: score[t])
    return int(members[best])


def priority_order(info: PointInfo, keep: str, degree: np.ndarray | None = None) -> np.ndarray:
    """Point indices in the order star / complete grouping visits them: the first visited image of a
    group is its kept image, so this order *is* the --keep rule. Images with a vector come before
    those without; ties go to "first" (smallest relative path).

    largest: most pixels, then most bytes; first: relative path; central: most near copies
    (`degree`, neighbours at or above the cut) first, the centre of the star."""
    if keep not in KEEP_POLICIES:
        raise ValueError(f"--keep {keep!r}: use one of {', '.join(KEEP_POLICIES)}")
    first_rank = info.first_rank
    no_vec = (info.vec_row < 0).astype(np.int8)
    if keep == "largest":
        keys: tuple[np.ndarray, ...] = (first_rank, -info.nbytes, -info.area, no_vec)
    elif keep == "central" and degree is not None:
        keys = (first_rank, -np.asarray(degree), no_vec)
    else:
        keys = (first_rank, no_vec)
    return np.lexsort(keys)  # last key is the primary one
