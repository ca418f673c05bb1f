"""BADGE (Ash et al., ICLR 2020): k-means++ seeding as a batch selection.

BADGE embeds each unlabeled image by the gradient of the loss (at the predicted label) with
respect to the last layer, then picks the batch by k-means++ seeding on those vectors: each pick
is drawn with probability proportional to its squared distance to the nearest point picked so far
(D^2 sampling), which favours points that are both far from the batch and, in gradient space,
uncertain (large gradients). Import gradient embeddings with `curate import-vectors --encoder
NAME` and select with `--strategy badge --encoder NAME`; on any other encoder it is k-means++
seeding on image embeddings.

Stored vectors are L2-normalized, which drops the gradient norm (the uncertainty part of BADGE);
weights bring it back: with `--predictions` (or any weights step) a row is drawn with probability
proportional to D^2 * w^2. Labeled and earlier-picked images are the initial centers; without
them the first pick is drawn with probability proportional to w^2 (uniform without weights).

Deterministic for a seed: the draws come from one numpy generator (inverse-CDF over the eligible
rows in row order, in float64), so CPU and GPU runs agree up to float rounding of distances.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.select.kcenter import min_sq_dist_to
from curate.select.tensors import mm_f32, resolve_device, sq_norms, to_storage


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn with probability p / p.sum() (inverse CDF: one uniform per draw)."""
    c = np.cumsum(p, dtype=np.float64)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(p) - 1))


def badge_select(
    X: np.ndarray,
    budget: int,
    *,
    candidates: np.ndarray,
    centers: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
    quotas: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(picked rows in pick order, each pick's distance to its nearest center when drawn; inf for
    a first pick without centers). Rows with zero probability (weight 0, or a duplicate of a
    center) are drawn only once every row left has zero probability, then uniformly."""
    dev = resolve_device(device)
    n = len(X)
    elig = np.asarray(candidates, bool).copy()
    cen = np.zeros(n, bool) if centers is None else np.asarray(centers, bool)
    elig &= ~cen
    w2 = np.ones(n) if weights is None else np.asarray(weights, np.float64) ** 2
    count = None
    if groups is not None and quotas is not None:
        count = np.zeros(len(quotas), np.int64)
        elig &= groups >= 0
        elig[groups >= 0] &= np.asarray(quotas)[groups[groups >= 0]] > 0
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    dists: list[float] = []
    with torch.inference_mode():
        x = to_storage(X, dev)
        norms = sq_norms(x)
        if cen.any():
            d2 = min_sq_dist_to(x, norms, np.flatnonzero(cen), dev).double().cpu().numpy()
        else:
            d2 = np.full(n, np.inf)
        while len(picks) < budget and elig.any():
            rows = np.flatnonzero(elig)
            p = w2[rows] * (1.0 if np.isinf(d2[rows]).all() else d2[rows])
            if not (p.sum() > 0) or not np.isfinite(p.sum()):
                p = np.ones(len(rows))
            r = int(rows[draw(p, rng)])
            picks.append(r)
            dists.append(float(np.sqrt(d2[r])))
            elig[r] = False
            if count is not None:
                count[groups[r]] += 1
                if count[groups[r]] >= quotas[groups[r]]:
                    elig &= groups != groups[r]
            new = (norms - 2 * mm_f32(x, x[r]) + norms[r]).clamp_min_(0).double().cpu().numpy()
            d2 = np.minimum(d2, new)
    return np.asarray(picks, np.int64), np.asarray(dists, np.float32)
