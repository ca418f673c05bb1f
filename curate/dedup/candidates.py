"""First stage of verified dedup: candidate pairs from the encoder's nearest neighbours.

Each image proposes its K most similar images at cosine >= a loose floor; the pair list is the
union of those (each unordered pair once). So the work that follows (decoding, verifying) is
O(N K) whatever the pool looks like, never "all pairs above a loose cut", which on a pool of
look-alikes is most pairs. The neighbour search itself is the exact top-k kernel (cost N^2 d, memory
one tile), or top-k inside each k-means cluster in clustered mode.

With verification on, a second list of candidates comes from small thumbnails of the images (decoded
anyway for verification), and the two lists are merged: the encoder proposes semantic look-alikes,
the thumbnails propose what was resized, re-encoded, cropped or turned (see THUMB_FLOOR).
"""

from __future__ import annotations

import numpy as np
import torch

from curate.kernels import topk_similarity

# Copies under JPEG q40 / 50% resize / 85% crop / a 5-degree turn sit at cosine 0.75-0.95 to their
# original with pooled ImageNet features (benchmarks/dedup.py), far below any precise cut; verification
# decides, the floor only drops pairs that cannot be the same picture.
CANDIDATE_FLOOR = 0.5
CANDIDATES = 8
# The second source, when the images are verified: each image's top-k neighbours among 16 x 16
# grayscale thumbnails (centred, unit length; curate.dedup.verify.thumb_vector). Pooled CNN features
# put a 50% resize or 85% crop of a textile below its distinct look-alikes; the thumbnail keeps it
# near its original. A loose floor again: verification decides.
THUMB_FLOOR = 0.5


def knn_pairs(
    vectors: np.ndarray,
    k: int = CANDIDATES,
    floor: float = CANDIDATE_FLOOR,
    *,
    subsets: list[np.ndarray] | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) with i < j: every row's top-k neighbours at cosine >= floor, each pair once,
    sorted by (i, j). `subsets`: search only inside each (sorted row indices)."""
    if k < 1:
        raise ValueError(f"--candidates {k}: use 1 or more")
    ii, jj, ss = [], [], []
    for rows in subsets if subsets is not None else [np.arange(len(vectors))]:
        if len(rows) < 2:
            continue
        sims, idx = topk_similarity(vectors[rows], vectors[rows], min(k, len(rows) - 1), exclude_self=True,
                                    device=device)
        keep = sims >= floor
        a = np.repeat(rows, keep.sum(axis=1))
        b = rows[idx[keep]]
        ii.append(np.minimum(a, b))
        jj.append(np.maximum(a, b))
        ss.append(sims[keep])
    if not ii:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, s = np.concatenate(ii), np.concatenate(jj), np.concatenate(ss)
    key = i * len(vectors) + j
    _, first = np.unique(key, return_index=True)  # sorted by key = by (i, j)
    return i[first], j[first], s[first].astype(np.float32)
