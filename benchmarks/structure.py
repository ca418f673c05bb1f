"""`auto`'s structure check (curate/select/structure.py) on real and synthetic pools, and its cost.

    python benchmarks/structure.py            # every pool below, then the cost at 50k x 512
    python benchmarks/structure.py --no-cost  # the verdicts only

Pools: the pools of benchmarks/quality.py (the 75% pool side of its 5 stratified splits) for
textile/MobileNetV2, digits and MNIST 5k with pixels and MobileNetV2 (embeddings cached by that
script under .bench/select/), the 200-mode synthetic pool of benchmarks/selection.py, and noise
(Gaussian, an off-origin Gaussian with power-law variances, uniform in a cube; unit rows). For each:
the structure score of every split and what `auto` runs (through `compose.select`, the code behind
`curate select`) at budgets 10-100 on split 0 and at 10 on the others. The cost: CPU time (one
thread, so the shared machine's load matters less) of the check, of `auto` and of plain k-center at
N = 50,000, d = 512, and of the check it replaced (the silhouette of auto's own budget clusters).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import numpy as np
import torch

from benchmarks.quality import embeddings, load_dataset
from benchmarks.selection import clustered
from curate.device import cpu_name
from curate.select.compose import Pool, select
from curate.select.config import AUTO_STRUCTURE_MIN, SelectionConfig, shorthand
from curate.select.structure import cluster_structure
from curate.select.typicality import cluster_pool, cluster_separation

BUDGETS = (10, 20, 50, 100)
CPU = torch.device("cpu")


def _cfg(strategy: str) -> SelectionConfig:
    steps, label = shorthand(strategy)
    return SelectionConfig(steps=steps, strategy=label).validate()


def _pool(X: np.ndarray) -> Pool:
    n = len(X)
    return Pool(X, np.ones(n, bool), np.zeros(n, bool), [{}] * n)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pools():  # noqa: ANN201 - yields (name, list of pools)
    from sklearn.model_selection import train_test_split

    for ds, enc in [("textile", "mobilenet"), ("digits", "pixels"), ("digits", "mobilenet"), ("mnist", "pixels"),
                    ("mnist", "mobilenet")]:
        images, labels = load_dataset(ds)
        emb = embeddings(ds, enc, images)
        splits = [train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=s)[0]
                  for s in range(5)]
        yield f"{ds}/{enc} (5 splits)", [emb[tr] for tr in splits]
    yield "synthetic, 200 modes, 50,000 x 512", [clustered(50_000, 512)]
    rng = np.random.default_rng(5)
    for d in (8, 64, 512):
        yield f"Gaussian, d = {d}", [_unit(rng.standard_normal((20_000, d)))]
        yield f"off-origin Gaussian, power-law variances, d = {d}", [
            _unit(1 + rng.standard_normal((20_000, d)) * np.arange(1, d + 1) ** -0.7)]
        yield f"uniform in a cube, d = {d}", [_unit(rng.random((20_000, d)))]


def verdicts() -> None:
    print(f"| pool | structure | auto at {', '.join(map(str, BUDGETS))} labels |\n|---|---|---|")
    auto = _cfg("auto")
    for name, splits in pools():
        scores = [cluster_structure(X) for X in splits]
        ran = {b: select(_pool(splits[0]), auto, b, device=CPU).strategy for b in BUDGETS}
        ran_10 = {select(_pool(X), auto, 10, device=CPU).strategy for X in splits[1:]}
        same = all(r == ran[10] for r in ran.values()) and ran_10 <= {ran[10]}
        what = ran[10].replace("auto->", "") + (" at every budget and split" if same else f" (varies: {ran}, {ran_10})")
        lo, hi = min(scores), max(scores)
        print(f"| {name} | {lo:.3f}" + (f" to {hi:.3f}" if len(scores) > 1 else "") + f" | {what} |", flush=True)


def cost() -> None:
    torch.set_num_threads(1)
    X = clustered(50_000, 512)
    pool = _pool(X)

    def cpu(f, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        t = time.process_time()
        out = f(*args, **kw)
        return out, time.process_time() - t

    print("\n| budget | auto (runs) | kcenter | structure check | share of auto "
          "| old check (silhouette of the budget's clusters) |\n|---|---|---|---|---|---|")
    for b in BUDGETS:
        sel, t_auto = cpu(select, pool, _cfg("auto"), b, device=CPU)
        _, t_kc = cpu(select, pool, _cfg("kcenter"), b, device=CPU)
        score, t_s = cpu(cluster_structure, X)
        old, t_old = cpu(cluster_separation, X, cluster_pool(X, b, device=CPU).labels, device=CPU)
        print(f"| {b} | {t_auto:.2f} s ({sel.strategy}) | {t_kc:.2f} s | {t_s:.3f} s ({score:.3f}) | "
              f"{t_s / t_auto:.0%} | {t_old:.3f} s ({old:.3f}) |", flush=True)


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cost", action="store_true", help="skip the timing at 50k x 512")
    args = ap.parse_args()
    print(f"{cpu_name()}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; `python {' '.join(sys.argv)}`; "
          f"threshold AUTO_STRUCTURE_MIN = {AUTO_STRUCTURE_MIN}\n")
    torch.set_num_threads(1)
    with threadpool_limits(1):
        verdicts()
        if not args.no_cost:
            cost()


if __name__ == "__main__":
    main()
