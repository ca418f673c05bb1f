"""Typicality in large clusters (issue 8): how much the within-cluster estimator matters for quality.

    python benchmarks/typicality_scale.py                        # 4 pools, 5 splits, budgets 10/20/50
    python benchmarks/typicality_scale.py --pools digits/pixels --splits 2 --draws 1   # quick look
    python benchmarks/typicality_scale.py --synthetic   # 20k rows, one cluster, planted near-duplicates

At 1M rows and budget 50, TypiClust's clusters hold ~20k rows while typicality compares each row with
a sample of REFERENCE_MATES (256) mates: 80x fewer. The pools here (1,348-3,750 rows) emulate that by
shrinking the sample to `--refs` (16/32/64 rows), so clusters are 1-25x the sample, and compare
the within-cluster rankings (all on curate's k-means clusters and `typiclust_select`):

  exact      1 / mean distance to the 20 nearest cluster-mates (the paper's typicality)
  old        the estimator before this change: the round(20 x r / n_c) nearest of r sampled mates
  a20        the min(20, r - 1) nearest of the r sampled mates (a coarser, smoother density)
  aq         the round(20 x r / 256) nearest of the r sampled mates: the same quantile of the sample
             as 20 of 256 (what `a20` is at full scale, r = 256)
  near20     only the r rows nearest the cluster's centroid are candidates, ranked like a20
  nearq      ... ranked like aq
  sample20   only the r sampled mates are candidates, ranked like a20
  centroid   closeness to the cluster's centroid (no k-NN at all)

Scored as in benchmarks/quality.py (same splits, the same four downstream models); per cell the
mean accuracy over splits (each split: the mean over `--draws` sample seeds) and the split-paired
difference to `exact` with its 95% CI. Also reported per variant: the mean percentile, within its
cluster, of each pick's exact typicality (0 = the exact pick itself), which needs no model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/typicality_scale.py` too
from benchmarks.quality import MODELS, embeddings, load_dataset, paired_difference, raw_pixels, scores  # noqa: E402
from curate.device import cpu_name  # noqa: E402
from curate.select.kmeans import kmeans  # noqa: E402
from curate.select.typicality import (  # noqa: E402
    Clustering,
    cluster_mean_distance,
    n_clusters_for,
    typiclust_select,
)

K = 20
FULL_SAMPLE = 256  # curate's REFERENCE_MATES, which the `q` variants rescale
POOLS = ["digits/pixels", "digits/mobilenet", "mnist/pixels", "mnist/mobilenet"]  # dataset/encoder, as quality.py
VARIANTS = ["centroid", "old", "a20", "aq", "near20", "nearq", "sample20", "curate"]


def _knn_mean(D: np.ndarray, kk: int) -> np.ndarray:
    return np.sort(np.partition(D, kk - 1, axis=1)[:, :kk], axis=1).mean(axis=1)


def cluster_scores(X: np.ndarray, labels: np.ndarray, variant: str, r: int, seed: int) -> np.ndarray:
    """Typicality per row (-inf: not a candidate) under `variant`, with `r` sampled mates."""
    out = np.full(len(X), -np.inf)
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        n_c = len(m)
        if n_c < 2:
            out[m] = 0.0
            continue
        xm = X[m] / np.linalg.norm(X[m], axis=1, keepdims=True)
        if variant == "centroid":
            mu = xm.mean(axis=0)
            out[m] = 1.0 / np.maximum(np.linalg.norm(xm - mu, axis=1), 1e-12)
            continue
        D = np.sqrt(np.maximum(2 - 2 * (xm @ xm.T), 0))
        np.fill_diagonal(D, np.inf)
        if variant == "exact" or n_c <= r:  # every variant is exact in a cluster of at most r rows
            out[m] = 1.0 / np.maximum(_knn_mean(D, min(K, n_c - 1)), 1e-12)
            continue
        ref = np.sort(np.random.default_rng(seed).choice(n_c, size=r, replace=False))
        kk = {"old": round(K * r / n_c), "a20": K, "near20": K, "sample20": K}.get(variant, round(K * r / FULL_SAMPLE))
        kk = max(1, min(r - 1, kk))
        cand = np.arange(n_c)
        if variant.startswith("near"):
            cand = np.argsort(-(xm @ xm.mean(axis=0)), kind="stable")[:r]
        elif variant == "sample20":
            cand = ref
        out[m[cand]] = 1.0 / np.maximum(_knn_mean(D[np.ix_(cand, ref)], kk), 1e-12)
    return out


def exact_percentile(picks: np.ndarray, labels: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of its cluster-mates more typical (exactly) than each pick: 0 = the exact choice."""
    return float(np.mean([(exact[labels == labels[p]] > exact[p]).mean() for p in picks]))


def variant_scores(X: np.ndarray, cl: np.ndarray, variant: str, r: int, seed: int) -> np.ndarray:
    """`curate`: what `curate select` ranks by (Clustering.ranking) with `r` sampled mates; the rest
    written here (cluster_scores)."""
    if variant == "curate":
        return Clustering(cl, X=X, k=K, seed=seed, device="cpu", reference_size=r).ranking(np.ones(len(X), bool))
    return cluster_scores(X, cl, variant, r, seed)


def run(pools: list[str], splits: int, draws: int, refs: list[int], budgets: list[int], variants: list[str],
        save: Path) -> dict:
    """Results per pool, variant, budget: per model the accuracy per split, and `pct` per split.
    Rows of an earlier result file at `save` are kept unless recomputed (variants can be added)."""
    from sklearn.model_selection import train_test_split

    res: dict = json.loads(save.read_text()) if save.is_file() else {}
    for key in pools:
        dataset, encoder = key.split("/")
        images, labels = load_dataset(dataset)
        raw = raw_pixels(images)
        emb = embeddings(dataset, encoder, images)  # quality.py's, cached under .bench/select/
        fresh: dict = {}
        t0 = time.perf_counter()
        for split in range(splits):
            tr, te = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=split)
            X = emb[tr]
            n = len(X)
            for b in budgets:
                _, cl = kmeans(X, n_clusters_for(n, 0, b), seed=split, device="cpu")
                exact = cluster_scores(X, cl, "exact", n, 0)
                memo: dict = {}  # picks -> accuracies: variants often pick the same rows

                def evaluate(score: np.ndarray, cl=cl, b=b, memo=memo, tr=tr, te=te, exact=exact, split=split,
                             emb=emb, raw=raw, labels=labels) -> tuple[dict, float]:
                    picks, _ = typiclust_select(cl, score, b, candidates=np.ones(len(cl), bool),
                                                centers=np.zeros(len(cl), bool))
                    sig = tuple(sorted(picks.tolist()))
                    if sig not in memo:
                        memo[sig] = scores(tr[picks], te, emb, raw, labels, split)
                    return memo[sig], exact_percentile(picks, cl, exact)

                cells = {"exact": [evaluate(exact)]}
                if "centroid" in variants:
                    cells["centroid"] = [evaluate(cluster_scores(X, cl, "centroid", n, 0))]
                for r in refs:
                    for v in variants:
                        if v not in ("exact", "centroid"):
                            cells[f"{v}@{r}"] = [evaluate(variant_scores(X, cl, v, r, split + 1000 * d))
                                                 for d in range(draws)]
                for name, runs in cells.items():
                    row = fresh.setdefault(name, {}).setdefault(str(b), {m: [] for m in MODELS})
                    for m in MODELS:
                        row[m].append(float(np.mean([s[m] for s, _ in runs])))
                    row.setdefault("pct", []).append(float(np.mean([p for _, p in runs])))
            print(f"{key}: split {split} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            res.setdefault(key, {}).update(fresh)
            save.write_text(json.dumps(res))
    return res


def synthetic(n: int = 20_000, d: int = 64, seed: int = 0) -> None:
    """The issue's check: one cluster of `n` off-origin Gaussian rows, 1% of them planted near-duplicate
    pairs, the production sample of 256 mates. Where do the top picks sit, by closeness to the
    cluster's centre and by exact 20-NN typicality, and how many of the top 10 are planted copies?"""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32) + 3.0
    src = rng.choice(n, n // 100, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), n // 100, replace=False)
    X[dst] = X[src] + 1e-3 * rng.standard_normal((len(src), d)).astype(np.float32)
    dup = np.zeros(n, bool)
    dup[src] = dup[dst] = True
    labels = np.zeros(n, dtype=np.int64)
    xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    centre = np.argsort(np.argsort(np.linalg.norm(xn - xn.mean(axis=0), axis=1))) / n  # 0 = nearest the centre
    exact = 1.0 / cluster_mean_distance(X, labels, K, reference_size=n, device="cpu")
    exact_rank = np.argsort(np.argsort(-exact)) / n
    ref = np.sort(np.random.default_rng(seed).choice(n, size=FULL_SAMPLE, replace=False))
    old_kk = max(1, round(K * FULL_SAMPLE / n))
    dist = np.sqrt(np.maximum(0, 2 - 2 * xn @ xn[ref].T))
    dist[ref, np.arange(FULL_SAMPLE)] = np.inf
    old = 1.0 / np.maximum(np.sort(np.partition(dist, old_kk - 1, axis=1)[:, :old_kk], axis=1).mean(axis=1), 1e-12)
    t = time.perf_counter()
    ranked = Clustering(labels, X=X, k=K, seed=seed, device="cpu").ranking(np.ones(n, bool))
    new_s = time.perf_counter() - t
    print(f"\n{n:,} x {d} off-origin Gaussian rows, one cluster, {len(src)} planted near-duplicate pairs, "
          f"sample of {FULL_SAMPLE} mates (new ranking: {new_s:.2f} s, {int((ranked > 0).sum())} rows ranked)\n")
    print("| typicality | top pick: closeness-to-centre pct | its exact 20-NN pct | top 10: mean closeness pct "
          "| copies in top 10 |")
    print("|---|---|---|---|---|")
    for name, sc in (("exact 20-NN", exact), (f"before: {old_kk} nearest of 256 sampled", old),
                     ("now: 20 nearest of 256 sampled, contenders", ranked)):
        top = np.argsort(-sc, kind="stable")[:10]
        print(f"| {name} | {centre[top[0]] * 100:.1f} | {exact_rank[top[0]] * 100:.1f} | "
              f"{centre[top].mean() * 100:.1f} | {int(dup[top].sum())} |")


def print_tables(res: dict) -> None:
    for key, rows in res.items():
        budgets = list(rows["exact"])
        print(f"\n**{key}**: accuracy in % averaged over the 4 models (difference to exact, split-paired 95% CI); "
              "pct = mean share of cluster-mates more typical than the pick (exact)\n")
        print("| variant | " + " | ".join(f"{b}: acc (vs exact) | {b}: pct" for b in budgets) + " |")
        print("|---|" + "---|---|" * len(budgets))
        for name, row in rows.items():
            cells = []
            for b in budgets:
                acc = np.mean([row[b][m] for m in MODELS], axis=0)
                ref = np.mean([rows["exact"][b][m] for m in MODELS], axis=0)
                delta, half = paired_difference(acc.tolist(), ref.tolist())
                cells.append(f"{acc.mean() * 100:.1f} ({delta:+.1f} ± {half:.1f}) | {np.mean(row[b]['pct']) * 100:.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
    compare(res)
    overview(res)


def overview(res: dict, wanted: tuple[str, ...] = ("10", "20")) -> None:
    """Every variant against exact at the smallest and largest sample, budgets 10 and 20 (those of them
    the run has), one line each."""
    names = list(next(iter(res.values())))
    budgets = [b for b in wanted if all(b in rows["exact"] for rows in res.values())]
    refs = sorted({int(n.split("@")[1]) for n in names if "@" in n})
    for r in (refs[0], refs[-1]) if refs else ():
        print(f"\n**Against exact, {r} sampled mates**: points, mean of the 4 models (split-paired 95% CI)\n")
        print("| ranking | " + " | ".join(f"{k} @{b}" for k in res for b in budgets) + " |")
        print("|---|" + "---|" * len(res) * len(budgets))
        for v in dict.fromkeys(n.split("@")[0] for n in names if n != "exact"):
            name = v if f"{v}@{r}" not in names else f"{v}@{r}"
            cells = []
            for rows in res.values():
                for b in budgets:
                    a, e = (np.mean([rows[x][b][m] for m in MODELS], axis=0).tolist() for x in (name, "exact"))
                    delta, half = paired_difference(a, e)
                    cells.append(f"{delta:+.1f} ± {half:.1f}")
            print(f"| {v} | " + " | ".join(cells) + " |")


def compare(res: dict, new: str = "curate", old: str = "old") -> None:
    """`new` - `old` (mean of the 4 models, split-paired 95% CI) per pool and sample size, and how many
    per-model cells each is significantly below `exact` (the CI of the difference excludes 0)."""
    refs = sorted({int(name.split("@")[1]) for rows in res.values() for name in rows if name.startswith(f"{new}@")})
    if not refs:
        return
    budgets = list(next(iter(res.values()))["exact"])
    print(f"\n**{new} - {old}**, accuracy points, mean of the 4 models (split-paired 95% CI)\n")
    print("| pool | sampled mates | " + " | ".join(f"budget {b}" for b in budgets) + " |")
    print("|---|---|" + "---|" * len(budgets))
    below = {new: 0, old: 0}
    cells = 0
    for key, rows in res.items():
        for r in refs:
            out = []
            for b in budgets:
                a, o = (np.mean([rows[f"{v}@{r}"][b][m] for m in MODELS], axis=0).tolist() for v in (new, old))
                delta, half = paired_difference(a, o)
                out.append(f"{delta:+.1f} ± {half:.1f}")
                for m in MODELS:
                    cells += 1
                    for v in below:
                        d, h = paired_difference(rows[f"{v}@{r}"][b][m], rows["exact"][b][m])
                        below[v] += d + h < 0
            print(f"| {key} | {r} | " + " | ".join(out) + " |")
    print(f"\nSignificantly below exact (of {cells} pool x sample x budget x model cells): "
          + ", ".join(f"{v} {n}" for v, n in below.items()))


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", default=",".join(POOLS))
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--refs", default="16,32,64")
    ap.add_argument("--budgets", default="10,20,50")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=".bench/select/typicality_scale.json")
    ap.add_argument("--tables", help="print the tables of a saved result file and exit")
    ap.add_argument("--synthetic", action="store_true", help="only the issue's 20k-row planted-copies check")
    args = ap.parse_args()
    if args.tables:
        print_tables(json.loads(Path(args.tables).read_text()))
        return
    if args.synthetic:
        torch.set_num_threads(1)
        synthetic()
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        run(args.pools.split(","), args.splits, args.draws, [int(r) for r in args.refs.split(",")],
            [int(b) for b in args.budgets.split(",")], args.variants.split(","), out)
    print(f"Machine: 2-core x86_64 CPU VM, 24 GiB, {cpu_name()}, 1 thread; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} "
          f"UTC; `python {' '.join(sys.argv)}`; {time.perf_counter() - t:.0f} s")
    print_tables(json.loads(out.read_text()))


if __name__ == "__main__":
    main()
