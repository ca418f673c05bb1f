"""Near duplicates by exact all-pairs search, and the nearest-neighbour statistics behind --suggest.

Exact means every pair with cosine >= threshold is found (up to fp32 rounding at the threshold
itself): the pool is swept in tiles by `curate.kernels.iter_pairs_above`, only the upper triangle,
and each tile's pairs are folded into the union-find at once, so memory is O(N) whatever the
number of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.dedup.cut import nice_edges
from curate.dedup.groups import Components
from curate.kernels import iter_pairs_above, topk_similarity

# Fixed cut for "near copy" where no pool statistics are computed (leaks, --exclude-near): 0.95 is
# the usual cut for CLIP-style embeddings; `pixels` thumbnails of distinct photos sit near 0.97, so
# 0.99. `curate dedup` derives its default from the pool instead (curate.dedup.cut).
DEFAULT_THRESHOLD = 0.95
FAMILY_THRESHOLDS = {"pixels": 0.99}


def default_threshold(spec: dict | None) -> float:
    """The near-copy cut for an encoder, from its stored spec (family)."""
    return FAMILY_THRESHOLDS.get(str((spec or {}).get("family")), DEFAULT_THRESHOLD)


def add_near_edges(
    vectors: np.ndarray,
    threshold: float,
    comps: Components,
    node_of_row: np.ndarray,
    *,
    device: str | torch.device | None = None,
    chunk: int | None = None,
) -> int:
    """Fold every pair of rows with cosine >= threshold into `comps`; returns the pair count.

    `node_of_row[r]` is the union-find node of vector row r (vectors cover a subset of points)."""
    n_pairs = 0
    for i, j, _ in iter_pairs_above(vectors, threshold, device=device, chunk=chunk):
        n_pairs += len(i)
        comps.add(node_of_row[i], node_of_row[j])
    return n_pairs


@dataclass
class NeighbourSample:
    """Nearest neighbour (other than itself) of a random sample of rows."""

    rows: np.ndarray  # sampled query rows
    neighbours: np.ndarray  # row of each one's nearest neighbour
    sims: np.ndarray  # float32 cosine to it
    n_total: int  # rows in the pool

    def histogram(self, bins: int = 20, marks: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray, int]:
        """(counts, edges, decimals): round-width bins over the data's own range (1st percentile to
        the max, widened to include `marks` such as the cut), and the decimals that print them apart.
        Values below the first edge are counted in the first bin."""
        edges, decimals = nice_edges(self.sims, bins, marks)
        counts, _ = np.histogram(np.clip(self.sims, edges[0], edges[-1]), bins=edges)
        return counts, edges, decimals

    def near_cut(self, threshold: float, n: int = 10, width: float = 0.02) -> np.ndarray:
        """Indices into the sample whose neighbour similarity is within `width` of the cut, the
        closest to it first: the pairs a user should look at to place the threshold."""
        close = np.flatnonzero(np.abs(self.sims - threshold) <= width)
        close = close[np.argsort(np.abs(self.sims[close] - threshold), kind="stable")]
        seen: set[tuple[int, int]] = set()
        out = []
        for k in close:  # a mutual pair (A's neighbour is B and B's is A) is shown once
            key = (min(self.rows[k], self.neighbours[k]), max(self.rows[k], self.neighbours[k]))
            if key not in seen:
                seen.add(key)
                out.append(k)
            if len(out) == n:
                break
        return np.asarray(out, dtype=np.int64)


def nearest_neighbour_sample(
    vectors: np.ndarray,
    sample: int = 20_000,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> NeighbourSample:
    """Each sampled row's nearest other row over the whole pool (exact; cost sample x N x d).

    A sample, not all rows, because a histogram to choose a threshold does not need N^2 work."""
    n = len(vectors)
    if n < 2:
        raise ValueError("need at least 2 vectors to look for duplicates")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    sims, idx = topk_similarity(vectors[rows], vectors, 2, device=device)
    # the point itself is one of the two (an exact copy can tie with it and come first)
    first_is_self = idx[:, 0] == rows
    pick = np.where(first_is_self, 1, 0)
    nb = idx[np.arange(len(rows)), pick]
    s = sims[np.arange(len(rows)), pick]
    return NeighbourSample(rows=rows, neighbours=nb, sims=s.astype(np.float32), n_total=n)
