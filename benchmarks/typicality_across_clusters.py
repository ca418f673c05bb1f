"""Typicality values across clusters of different sizes: do sampled clusters sit at the exact scale?

    python benchmarks/typicality_across_clusters.py                      # 5 pools, K = 10 and 20
    python benchmarks/typicality_across_clusters.py --pools digits/pixels --refs 32   # quick look
    python benchmarks/typicality_across_clusters.py --synthetic   # clusters of 1k-32k rows, 256 mates

TypiClust ranks inside one cluster, where any per-cluster scale is irrelevant; `weights typicality`
(and the manifest's typicality column) compare values across clusters. Above REFERENCE_MATES members
a cluster's typicality comes from the k nearest of a sample of mates, i.e. the k x size / sample
nearest members: a coarser scale the larger the cluster. curate scales each such cluster back by
((sample - 1) / (size - 1))^(1 / D), D its intrinsic dimension estimated on the sampled mates
(`typicality._scale_to_exact`). The pools here (quality.py's cached embeddings) emulate large
clusters by shrinking the sample to `--refs` rows. Per pool, K and sample size:

  ratio min / max   the per-cluster median of estimated / exact mean 20-NN distance, over clusters
  spread            max / min of those medians (1 = every cluster at the same relative scale)
  rho               Spearman correlation over the whole pool of estimated and exact typicality
                    (the cross-cluster order `weights typicality` uses)

each without the scale factor ("plain") and with it ("scaled"). Exact = the 20 nearest of every
member, brute force. The small pools need a small sample to have large clusters, so there the 20
nearest are up to 62% of the sample (32 mates), against 8% at full scale (20 of 256); `--synthetic`
runs the full scale: four 8-dimensional Gaussian clouds in 64 dimensions, 1,000 to 32,000 rows
(4-125x the sample), curate's 256 sampled mates, given as the clusters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/...` too
from benchmarks.quality import embeddings, load_dataset  # noqa: E402
from curate.device import cpu_name  # noqa: E402
from curate.select import typicality  # noqa: E402
from curate.select.kmeans import kmeans  # noqa: E402

POOLS = ["digits/pixels", "digits/mobilenet", "mnist/pixels", "mnist/mobilenet", "textile/mobilenet"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(X: np.ndarray, labels: np.ndarray, ref: int, seed: int, scaled: bool) -> tuple[float, float, float]:
    """(min, max of the per-cluster median ratio, Spearman rho) for one sample size."""
    exact = typicality.cluster_mean_distance(X, labels, 20, reference_size=len(X), device="cpu")
    original = typicality._scale_to_exact
    if not scaled:
        typicality._scale_to_exact = lambda *a: 1.0  # the plain estimate, for comparison
    try:
        got = typicality.cluster_mean_distance(X, labels, 20, reference_size=ref, seed=seed, device="cpu")
    finally:
        typicality._scale_to_exact = original
    ratio = [float(np.median(got[labels == c] / exact[labels == c])) for c in np.unique(labels)]
    ok = ~np.isnan(exact)
    return min(ratio), max(ratio), _spearman(-got[ok], -exact[ok])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", default=",".join(POOLS))
    ap.add_argument("--ks", default="10,20", help="k-means cluster counts")
    ap.add_argument("--refs", default="32,64,128", help="sampled mates per cluster (emulating large clusters)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="full scale: 1k-32k-row clusters, 256 mates")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"Machine: {cpu_name()}, 1 thread; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
          f"`python {' '.join(sys.argv)}`\n")
    print("| pool | K | cluster sizes | sample | plain ratio min-max (spread) | scaled ratio min-max (spread) "
          "| rho plain | rho scaled |")
    print("|---|---|---|---|---|---|---|---|")
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        sizes = [1000, 4000, 16000, 32000]
        basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
        X = np.concatenate([rng.standard_normal((n, 8)) @ basis + 5 * rng.standard_normal(64) for n in sizes])
        X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
        labels = np.repeat(np.arange(len(sizes)), sizes)
        _row("synthetic 8-d in 64-d", X, labels, [typicality.REFERENCE_MATES], args.seed)
    for pool in ([] if args.synthetic else args.pools.split(",")):
        dataset, encoder = pool.split("/")
        images, _ = load_dataset(dataset)
        X = embeddings(dataset, encoder, images).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        for k in map(int, args.ks.split(",")):
            _, labels = kmeans(X, k, seed=args.seed)
            _row(pool, X, labels, [int(r) for r in args.refs.split(",")], args.seed)
    print(f"\n{time.perf_counter() - t0:.0f} s")


def _row(pool: str, X: np.ndarray, labels: np.ndarray, refs: list[int], seed: int) -> None:
    sizes = np.bincount(labels)
    for ref in refs:
        p_lo, p_hi, p_rho = measure(X, labels, ref, seed, scaled=False)
        s_lo, s_hi, s_rho = measure(X, labels, ref, seed, scaled=True)
        print(f"| {pool} | {len(sizes)} | {sizes.min()}-{sizes.max()} | {ref} | {p_lo:.2f}-{p_hi:.2f} "
              f"({p_hi / p_lo:.2f}) | {s_lo:.2f}-{s_hi:.2f} ({s_hi / s_lo:.2f}) | {p_rho:.3f} | {s_rho:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
