"""Choose a strategy with evidence: simulate labeling rounds on a labeled sample of the pool.

Given images whose labels are known (a manifest with an id or path column and a label column),
for each seed:
  1. split the labeled images at random into a selection pool and a held-out test set
     (`test_fraction`, at least one test image);
  2. for each strategy, run labeling rounds at the cumulative budgets (e.g. 10, 20, 50): each round
     selects `budget - already labeled` more images from the selection pool with curate's own
     selection (`compose.select`, the earlier picks as centers, as `curate select` does in a
     later round), "labels" them, trains a linear probe (multinomial logistic regression on the
     stored embeddings, `Probe`) on every image picked so far and scores accuracy on the test set.
Strategies that need a task model (uncertainty, uncertainty-kcenter, cluster-margin, and badge
weighted by uncertainty) use the probe of the previous round as the task model (margin
uncertainty of its predicted probabilities); their first round has no model yet and uses `auto`.

The recommendation is the strategy with the highest accuracy averaged over budgets and seeds
(the area under the learning curve); the report says how far it is from random and whether the
gap exceeds the spread over seeds. The labeled sample stands in for the pool: give a random
sample of it, a few hundred images or more, for the numbers to mean something.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.select.compose import Pool, select
from curate.select.config import SHORTHANDS, SelectionConfig, shorthand
from curate.select.tensors import unit_rows
from curate.select.uncertainty import uncertainty_from_probs

TASK_MODEL = ("uncertainty", "uncertainty-kcenter", "cluster-margin")  # need predictions in every round
NOT_EVALUATED = ("similarity",)  # needs queries: not a labeling strategy on its own
PROBE_C = 10.0  # inverse L2 strength of the probe (sklearn's C): weak, since budgets are tiny


class EvaluateError(ValueError):
    pass


@dataclass
class EvalResult:
    runs: Any  # polars DataFrame: strategy, seed, budget, n_labeled, accuracy, resolved
    summary: Any  # polars DataFrame: strategy, budget, mean, std, seeds
    recommended: str
    verdict: str  # one line: why, and how sure
    n_pool: int
    n_test: int
    classes: int


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EvaluateError(f"--{what}: give a comma-separated list")
    return items


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(t) for t in parse_list(text, "budgets")]
    except ValueError as e:
        raise EvaluateError(f"--budgets {text!r}: give whole numbers, e.g. 10,20,50") from e
    if any(b < 1 for b in budgets):
        raise EvaluateError("--budgets must be >= 1")
    return sorted(set(budgets))


def check_strategies(names: list[str]) -> list[str]:
    for s in names:
        if s not in SHORTHANDS or s in NOT_EVALUATED:
            ok = [x for x in SHORTHANDS if x not in NOT_EVALUATED]
            raise EvaluateError(f"--strategies: unknown or not evaluable {s!r}; use some of {', '.join(ok)}")
    return list(dict.fromkeys(names))


def read_labels(file: str | os.PathLike, label_column: str) -> tuple[str, list[str], list[Any]]:
    """(key column, keys, labels) from a CSV/Parquet manifest; rows with an empty label are dropped."""
    import polars as pl

    p = Path(file)
    if not p.is_file():
        raise EvaluateError(f"labels file {p} not found")
    try:
        df = pl.read_parquet(p) if p.suffix.lower() == ".parquet" else pl.read_csv(p, infer_schema_length=10_000)
    except Exception as e:  # polars raises several types for a malformed file
        raise EvaluateError(f"cannot read {p}: {e}") from e
    key = "id" if "id" in df.columns else "path" if "path" in df.columns else None
    if key is None:
        raise EvaluateError(f"{p}: needs an 'id' or 'path' column naming the images")
    if label_column not in df.columns:
        raise EvaluateError(f"{p}: no column {label_column!r}; columns: {', '.join(df.columns)}")
    df = df.filter(pl.col(label_column).is_not_null() & pl.col(key).is_not_null())
    return key, [str(k) for k in df[key].to_list()], df[label_column].to_list()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def lbfgs(f, x0: np.ndarray, max_iter: int = 500, m: int = 10, gtol: float = 1e-6) -> np.ndarray:  # noqa: ANN001
    """Minimize a smooth convex f (returning value, gradient) with L-BFGS and a backtracking
    (Armijo) line search. Small and dependency-free: the probe is refitted hundreds of times on
    tiny sets, where importing and dispatching a general optimizer costs more than the fit."""
    x = x0.copy()
    fx, g = f(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        if np.abs(g).max() < gtol:
            break
        q = g.copy()
        alphas = []
        for s_, y_ in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = s_ @ q / (y_ @ s_)
            alphas.append(a)
            q -= a * y_
        if y_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for (s_, y_), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += s_ * (a - y_ @ q / (y_ @ s_))
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction (numerical trouble): restart from the gradient
            s_hist.clear()
            y_hist.clear()
            d, slope = -g, -(g @ g)
        t = 1.0
        while True:
            fn, gn = f(x + t * d)
            if fn <= fx + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        step, dg = t * d, gn - g
        x, fx_old, fx, g = x + step, fx, fn, gn
        if step @ dg > 1e-12:
            s_hist.append(step)
            y_hist.append(dg)
            if len(s_hist) > m:
                s_hist.pop(0)
                y_hist.pop(0)
        if abs(fx_old - fx) <= 1e-12 * max(1.0, abs(fx)):
            break
    return x


class Probe:
    """Multinomial logistic regression (a linear probe) on the embeddings, in float64 numpy.

    The objective is sklearn's LogisticRegression(C=PROBE_C) divided by n: mean cross-entropy +
    |W|^2 / (2 C n), bias not penalized (a test checks the two agree). A budget that saw a single
    class needs no special case: unseen classes simply get low scores."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        x = np.asarray(X, np.float64)
        n, d = x.shape
        onehot = np.eye(n_classes)[np.asarray(y, np.int64)]
        l2 = 1.0 / (2 * PROBE_C * n)

        def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]
            z = x @ w + b
            zmax = z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)) + zmax
            loss = float((lse - (z * onehot).sum(axis=1, keepdims=True)).mean() + l2 * (w**2).sum())
            r = (_softmax(z) - onehot) / n
            return loss, np.concatenate([(x.T @ r + 2 * l2 * w).ravel(), r.sum(axis=0)])

        theta = lbfgs(f, np.zeros(d * n_classes + n_classes))
        self.w, self.b = theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]

    def proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(X, np.float64) @ self.w + self.b)

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float((self.proba(X).argmax(axis=1) == y).mean())


def simulate(
    X: np.ndarray,
    y: np.ndarray,
    strategy: str,
    budgets: list[int],
    seed: int,
    test: np.ndarray,
    *,
    device: torch.device,
) -> list[tuple[int, int, float, str]]:
    """Labeling rounds for one strategy and seed: (budget, n_labeled, accuracy, resolved strategy)."""
    n = len(X)
    n_classes = int(y.max()) + 1
    pool_rows = ~test
    labeled = np.zeros(n, bool)
    probe: Probe | None = None
    out = []
    for b in budgets:
        need = b - int(labeled.sum())
        if need > 0:
            needs_model = strategy in TASK_MODEL
            name = strategy if (probe is not None or not needs_model) else "auto"
            unc = None
            if probe is not None and (needs_model or strategy == "badge"):
                unc = uncertainty_from_probs(probe.proba(X), "margin")
            preds = "probe" if unc is not None and name != "auto" else None
            steps, label = shorthand(name, predictions=preds)
            cfg = SelectionConfig(steps=steps, strategy=label, seed=seed, predictions=preds).validate()
            # rows outside the selection pool are not part of it at all (the test set is unseen)
            keep = np.flatnonzero(pool_rows)
            pool = Pool(X[keep], ~labeled[keep], labeled[keep], [{} for _ in keep],
                        None if unc is None else unc[keep])
            sel = select(pool, cfg, min(need, int((~labeled[keep]).sum())), device=device)
            labeled[keep[sel.indices]] = True
            resolved = sel.strategy
        else:
            resolved = out[-1][3] if out else strategy
        probe = Probe(X[labeled], y[labeled], n_classes)
        out.append((b, int(labeled.sum()), probe.accuracy(X[test], y[test]), resolved))
    return out


def evaluate_pool(
    X: np.ndarray,
    labels: list[Any],
    budgets: list[int],
    strategies: list[str],
    seeds: int,
    *,
    test_fraction: float = 0.3,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """The simulation on arrays: X (N, d) embeddings of the labeled images, one label each."""
    import polars as pl

    say = log or (lambda _m: None)
    dev = device if isinstance(device, torch.device) else torch.device(device)
    if not 0 < test_fraction < 1:
        raise EvaluateError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if seeds < 1:
        raise EvaluateError("--seeds must be >= 1")
    classes = sorted(set(labels), key=str)
    if len(classes) < 2:
        raise EvaluateError("the labels hold a single class; a probe needs at least two")
    y = np.array([classes.index(v) for v in labels], dtype=np.int64)
    X = unit_rows(X)
    n = len(X)
    n_test = max(1, math.floor(test_fraction * n + 0.5))
    n_pool = n - n_test
    if budgets[-1] > n_pool:
        raise EvaluateError(f"largest budget {budgets[-1]} exceeds the {n_pool} labeled images left for selection "
                            f"({n} labeled, {n_test} held out for testing); lower --budgets or label more")
    rows = []
    for seed in range(seeds):
        test = np.zeros(n, bool)
        test[np.random.default_rng(seed).permutation(n)[:n_test]] = True
        for s in strategies:
            for b, k, acc, resolved in simulate(X, y, s, budgets, seed, test, device=dev):
                rows.append({"strategy": s, "seed": seed, "budget": b, "n_labeled": k, "accuracy": acc,
                             "resolved": resolved})
            say(f"seed {seed}: {s} done")
    runs = pl.DataFrame(rows)
    summary = (runs.group_by(["strategy", "budget"], maintain_order=True)
               .agg(pl.col("accuracy").mean().alias("mean"), pl.col("accuracy").std(ddof=1).alias("std"),
                    pl.len().alias("seeds"))
               .with_columns(pl.col("std").fill_null(0.0)))
    recommended, verdict = recommend(runs)
    return EvalResult(runs, summary, recommended, verdict, n_pool, n_test, len(classes))


def recommend(runs) -> tuple[str, str]:  # noqa: ANN001 - a polars DataFrame
    """Highest mean accuracy over budgets and seeds; compared with random when it was run."""
    import polars as pl

    per_seed = runs.group_by(["strategy", "seed"], maintain_order=True).agg(pl.col("accuracy").mean())
    area = per_seed.group_by("strategy", maintain_order=True).agg(
        pl.col("accuracy").mean().alias("mean"), pl.col("accuracy").std(ddof=1).fill_null(0.0).alias("std"))
    best = area.sort(["mean", "strategy"], descending=[True, False]).row(0, named=True)
    line = (f"{best['strategy']}: mean accuracy over the budgets {best['mean']:.3f} "
            f"(+/- {best['std']:.3f} over seeds)")
    rnd = area.filter(pl.col("strategy") == "random")
    if rnd.height and best["strategy"] != "random":
        r = rnd.row(0, named=True)
        gap = best["mean"] - r["mean"]
        sure = "more than" if gap > max(best["std"], r["std"]) else "within"
        line += f", {gap:+.3f} over random ({sure} the spread over seeds)"
    return best["strategy"], line


def evaluate_store(
    store,  # noqa: ANN001 - curate.store.Store
    collection: str,
    labels_file: str | os.PathLike,
    label_column: str,
    budgets: list[int],
    strategies: list[str],
    seeds: int,
    *,
    encoder: str | None = None,
    test_fraction: float = 0.3,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Read the labeled images' stored vectors, then `evaluate_pool`."""
    import polars as pl

    from curate.select.run import resolve_references

    say = log or (lambda _m: None)
    enc = store.require_encoder(collection, encoder)
    key, keys, labels = read_labels(labels_file, label_column)
    if not keys:
        raise EvaluateError(f"{labels_file}: no rows with a {label_column!r} label")
    payloads = store.payloads(collection, fields=["path", "relpath", "failed"])
    ids = resolve_references(key, keys, payloads, str(labels_file))
    if len(ids) != len(keys):
        raise EvaluateError(f"{labels_file}: some images appear more than once; keep one label per image")
    have = store.existing_ids(collection, ids, encoder=enc)
    keep = [i for i, pid in enumerate(ids) if pid in have]
    if len(keep) < len(ids):
        say(f"{len(ids) - len(keep)} labeled images have no {enc} vector (failed to embed?) and are left out")
    kept_ids = [ids[i] for i in keep]
    X = store.get_vectors(collection, enc, kept_ids)
    res = evaluate_pool(X, [labels[i] for i in keep], budgets, strategies, seeds, test_fraction=test_fraction,
                         device=device, log=log)
    res.runs = res.runs.with_columns(pl.lit(collection).alias("collection"))  # the report shows its own only
    return res


def plot_curves(result: EvalResult, path: str | os.PathLike, title: str = "") -> Path:
    """Learning curves (mean +/- std over seeds) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.files import write_atomic

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    s = result.summary
    for name in dict.fromkeys(s["strategy"].to_list()):
        part = s.filter(s["strategy"] == name).sort("budget")
        b, m, sd = part["budget"].to_numpy(), part["mean"].to_numpy(), part["std"].to_numpy()
        style = "--" if name == "random" else "-"
        lw = 2.4 if name == result.recommended else 1.4
        ax.plot(b, m, style, marker="o", lw=lw, label=name + (" (recommended)" if name == result.recommended else ""))
        ax.fill_between(b, m - sd, m + sd, alpha=0.15)
    ax.set_xscale("log")
    budgets = sorted(set(s["budget"].to_list()))
    ax.set_xticks(budgets, [str(v) for v in budgets])
    ax.set_xlabel("labeled images (budget)")
    ax.set_ylabel("test accuracy of a linear probe")
    ax.set_title(title or f"{result.classes} classes, {result.n_test} test images, mean +/- std over seeds",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out
