"""The default near-copy cut, derived from the pool's own nearest-neighbour similarities.

Why not one constant per encoder: how close distinct images sit depends on the pool as much as on
the encoder (250-px textiles under ImageNet features have nearest neighbours at cosine ~0.98,
photos of different scenes at ~0.85), so a constant that finds copies in one pool flags every
look-alike in another. A copy is much closer to its original than distinct images are to each
other, so the cut is set relative to the pool's typical nearest-neighbour distance (cleanlab does
the same for near duplicates), and never below an absolute floor per encoder family (a pool of
very different images must not make loose matches count as copies).

    cut = max(floor(family), 1 - RELATIVE * median(1 - nearest-neighbour cosine))

The median is over a random sample of images (`nearest_neighbour_sample`); planted or natural
copies are a minority, so they do not move it much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A copy must be 1 / RELATIVE times closer than the median image is to its nearest neighbour.
# benchmarks/dedup.py --sweep: 0.5 found the most copies of 0.13 (cleanlab's factor), 0.25, 0.5,
# 0.75 and 1.0 with precision still 1.0 on both encoders; at 0.75 precision fell to 0.77-0.80.
RELATIVE = 0.5
# Absolute floors on raw cosine; `pixels` thumbnails of unrelated photos already sit near 0.97.
FLOORS = {"pixels": 0.99}
FLOOR = 0.90
CENTERED_FLOOR = 0.80  # after removing the pool's mean vector, unrelated images sit near 0
MAX_SHARE = 0.20  # dedup stops (without --force) when near copies would remove more of the pool


@dataclass
class CutChoice:
    """The cut and why: the numbers `--suggest` and a stopped run print."""

    cut: float
    median_nn: float  # median nearest-neighbour cosine of the sample
    relative_cut: float  # 1 - RELATIVE * (1 - median_nn)
    floor: float
    family: str
    n_sample: int
    share_above: float  # share of sampled images with a neighbour at >= cut
    relative: float = RELATIVE

    def reasoning(self) -> list[str]:
        which = "relative cut" if self.relative_cut >= self.floor else f"floor for {self.family}"
        return [
            f"median nearest-neighbour cosine of {self.n_sample} sampled images: {self.median_nn:.4f} "
            f"(distance {1 - self.median_nn:.4f})",
            f"relative cut: a copy is {1 / self.relative:g}x closer than that: 1 - {self.relative} x "
            f"{1 - self.median_nn:.4f} = {self.relative_cut:.4f}",
            f"absolute floor for {self.family}: {self.floor}",
            f"suggested threshold: {self.cut:.4f} (the {which}); {100 * self.share_above:.1f}% of sampled "
            f"images have a neighbour at or above it",
        ]


def floor_for(family: str | None, centered: bool = False) -> float:
    if centered:
        return CENTERED_FLOOR
    return FLOORS.get(str(family), FLOOR)


def derive_cut(nn_sims: np.ndarray, family: str | None, *, centered: bool = False,
               relative: float = RELATIVE) -> CutChoice:
    """The default cut from sampled nearest-neighbour cosines (see the module docstring);
    `relative` is there for benchmarks/dedup.py's sweep."""
    sims = np.asarray(nn_sims, dtype=np.float64)
    if not len(sims):
        raise ValueError("no nearest-neighbour similarities to derive a threshold from")
    med = float(np.median(sims))
    rel = 1.0 - relative * (1.0 - med)
    floor = floor_for(family, centered)
    cut = float(np.clip(max(rel, floor), -1.0, 1.0))
    cut = float(np.floor(cut * 1e4) / 1e4)  # printed and reused at 4 decimals: never above the value shown
    return CutChoice(cut=cut, median_nn=med, relative_cut=rel, floor=floor, family=str(family or "unknown"),
                     n_sample=len(sims), share_above=float((sims >= cut).mean()), relative=relative)


def nice_edges(values: np.ndarray, bins: int = 20, marks: tuple[float, ...] = ()) -> tuple[np.ndarray, int]:
    """Histogram edges that fit the data (1st percentile .. max, and any `marks` such as the cut)
    with a round bin width (1, 2 or 5 x 10^k), and the decimals needed to print them apart."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(np.percentile(v, 1)) if len(v) else 0.0
    hi = float(v.max()) if len(v) else 1.0
    for m in marks:
        lo, hi = min(lo, m), max(hi, m)
    hi = min(max(hi, lo + 1e-5), 1.0)
    raw = max((hi - lo) / bins, 1e-6)  # fp32 cosines carry ~7 digits
    mag = 10.0 ** np.floor(np.log10(raw))
    width = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)
    start = np.floor(lo / width) * width
    n = int(np.ceil((hi - start) / width - 1e-9))
    edges = start + width * np.arange(max(n, 1) + 1)
    edges[-1] = max(edges[-1], hi)
    decimals = max(2, int(-np.floor(np.log10(width) + 1e-9)))
    return np.clip(edges, -1.0, 1.0), decimals
