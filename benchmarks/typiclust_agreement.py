"""Does curate's TypiClust equal the paper's recipe written on sklearn (quality.py's `typiclust-ref`)?

    python benchmarks/typiclust_agreement.py [--draws 4] [--datasets textile,digits]

Two checks per dataset (quality.py's embeddings and splits), budgets 10 / 20 / 50, 5 splits x
`--draws` k-means seeds:
  inertia  curate's k-means (`curate.select.kmeans`, best of 10 k-means++ inits) against
           sklearn's KMeans(n_init=10) on the same rows: mean inertia ratio and how often ours
           is lower. Equal quality means the two differ only in which local optimum a seed finds.
  picks    given sklearn's cluster labels, curate's typicality (`cluster_typicality`) and picking
           (`typiclust_select`) against the reference's (`quality.typiclust_picks`): how many differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.quality import embeddings, load_dataset, typiclust_picks  # noqa: E402
from curate.select.kmeans import kmeans  # noqa: E402
from curate.select.typicality import cluster_typicality, typiclust_select  # noqa: E402

ENCODER = {"textile": "mobilenet", "digits": "pixels", "mnist": "pixels"}


def inertia(X: np.ndarray, labels: np.ndarray) -> float:
    return float(sum(((X[labels == c] - X[labels == c].mean(axis=0)) ** 2).sum() for c in np.unique(labels)))


def main() -> None:
    from sklearn.cluster import KMeans
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="textile,digits")
    ap.add_argument("--draws", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| dataset | budget | inertia ours / sklearn (mean) | ours lower | picks differing (sklearn's labels) |")
    print("|---|---|---|---|---|")
    with threadpool_limits(1):
        for ds in args.datasets.split(","):
            images, labels = load_dataset(ds)
            emb = embeddings(ds, ENCODER[ds], images)
            for budget in (10, 20, 50):
                ratios, lower, differ, total = [], 0, 0, 0
                for split in range(5):
                    tr, _ = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels,
                                             random_state=split)
                    X = emb[tr].astype(np.float32)
                    for draw in range(args.draws):
                        seed = split + 1000 * draw
                        sk = KMeans(budget, n_init=10, random_state=seed).fit(X).labels_
                        _, ours = kmeans(X, budget, seed=seed, n_init=10)
                        ratios.append(inertia(X, ours) / inertia(X, sk))
                        lower += ratios[-1] < 1 - 1e-9
                        typ = cluster_typicality(X, sk)
                        picks, _ = typiclust_select(sk, typ, budget, candidates=np.ones(len(X), bool),
                                                    centers=np.zeros(len(X), bool))
                        differ += len(set(typiclust_picks(X, sk, budget).tolist()) - set(picks.tolist()))
                        total += budget
                n = len(ratios)
                print(f"| {ds}/{ENCODER[ds]} | {budget} | {np.mean(ratios):.4f} | {lower} of {n} | "
                      f"{differ} of {total} |", flush=True)


if __name__ == "__main__":
    main()
