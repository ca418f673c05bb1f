"""--engine ray for the analyses: k-center select and clustered dedup with 1 vs 2 Ray workers
against the local engine on the same synthetic clustered vectors (no store: the analysis step only).

    python benchmarks/ray_scaling.py select --n 200000 --budget 5000   # time + covering-radius ratio
    python benchmarks/ray_scaling.py dedup --n 200000                  # time; groups must equal local
    python benchmarks/ray_scaling.py typicality --n 200000 --budget 50 # `select --strategy typicality`

Each Ray run starts a private local cluster with `--workers` CPUs (1, then 2) and one partition
(select) or four tasks (dedup) per worker CPU. Tasks run torch on one thread each; the local
reference runs with torch's default threads. Covering radius = the largest distance from any row
to its nearest pick (exact, tiled GEMM). `typicality` times the whole `compose.select` (the code
behind `curate select --strategy typicality [--engine ray]`); Ray's clusters come from its own k-means
refinement, so its picks are not the local ones. Vectors are cached under .bench/ray-analyses/
(or $CURATE_BENCH_CACHE).
Prints one markdown table per part with the machine, date, load and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from curate.device import cpu_name

CACHE = Path(os.environ.get("CURATE_BENCH_CACHE", ".bench/ray-analyses"))


def clustered(n: int, d: int = 512, modes: int = 200, spread: float = 0.6, seed: int = 0) -> np.ndarray:
    """Unit vectors around `modes` random directions, 1% near-exact copies of a neighbour (cached)."""
    f = CACHE / f"clustered_{n}x{d}_{modes}_{spread}_{seed}.npy"
    if f.exists():
        return np.load(f)
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((modes, d)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    for r0 in range(0, n, 100_000):
        m = min(100_000, n - r0)
        x = mu[rng.integers(0, modes, m)] + spread * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        x[1::100] = x[0::100][: len(x[1::100])] + 1e-3 * rng.standard_normal((len(x[1::100]), d), dtype=np.float32)
        out[r0 : r0 + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(f, out)
    return out


def covering_radius(X: np.ndarray, picks: np.ndarray) -> float:
    from curate.select.kcenter import min_sq_dist_to

    with torch.inference_mode():
        x = torch.from_numpy(X)
        d2 = min_sq_dist_to(x, (x * x).sum(1), np.asarray(picks), torch.device("cpu"))
    return float(d2.max().sqrt())


def header(what: str) -> None:
    load = os.getloadavg()
    print(f"\n{what}: {cpu_name()}, 2-core x86_64 CPU VM, 24 GiB; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; load average "
          f"{load[0]:.1f} at start; `python {' '.join(sys.argv)}`\n")


def _warm() -> int:
    """Import what the tasks import: a long-lived cluster keeps its workers, so the timings leave
    the one-off worker start and torch import out (a cold CLI run pays ~5-10 s more here)."""
    import curate.dedup.ray_dedup  # noqa: F401
    import curate.select.ray_select  # noqa: F401

    return 0


def with_ray(workers: int, fn):  # noqa: ANN001, ANN201
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.get([ray.remote(num_cpus=1)(_warm).remote() for _ in range(workers)])  # workers up and warm
        return fn(ray)
    finally:
        ray.shutdown()


def timed(fn):  # noqa: ANN001, ANN201
    """(fn(), seconds)."""
    t = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t


def ray_runs(workers: list[int], fn):  # noqa: ANN001, ANN201
    """(workers, fn(ray), seconds of fn alone) on a fresh warm cluster of each size."""
    for w in workers:
        res, t = with_ray(w, lambda ray: timed(lambda: fn(ray)))
        yield w, res, t


def bench_select(args: argparse.Namespace) -> None:
    from curate.select.kcenter import kcenter_select
    from curate.select.ray_select import RayEngine

    X = clustered(args.n)
    header(f"select k-center, N={args.n:,} x {X.shape[1]}, budget {args.budget}")
    none = np.empty(0, np.int64)
    local, t_local = timed(lambda: kcenter_select(X, args.budget, none, device="cpu"))
    r_local = covering_radius(X, local.indices)
    print("| engine | workers | partitions | time (s) | time / local | covering radius | radius / local |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| local (greedy) | - | - | {t_local:.1f} | 1.00x | {r_local:.4f} | 1.000 |", flush=True)
    for w, res, t in ray_runs(args.workers, lambda ray: RayEngine(ray).kcenter_select(X, args.budget, none,
                                                                                     device="cpu")):
        assert len(np.unique(res.indices)) == args.budget
        r = covering_radius(X, res.indices)
        print(f"| ray | {w} | {w} | {t:.1f} | {t / t_local:.2f}x | {r:.4f} | {r / r_local:.3f} |", flush=True)


def bench_typicality(args: argparse.Namespace) -> None:
    from curate.select.compose import Pool, select
    from curate.select.config import SelectionConfig, shorthand
    from curate.select.ray_select import RayEngine

    X = clustered(args.n)
    header(f"select --strategy typicality, N={args.n:,} x {X.shape[1]}, budget {args.budget}")
    pool = Pool(X, np.ones(len(X), bool), np.zeros(len(X), bool), [{}] * len(X))
    steps, label = shorthand("typicality")
    cfg = SelectionConfig(steps=steps, strategy=label, seed=0).validate()
    local, t_local = timed(lambda: select(pool, cfg, args.budget, device=torch.device("cpu")))
    print("| engine | workers | time (s) | time / local | picks |")
    print("|---|---:|---:|---:|---:|")
    print(f"| local | - | {t_local:.1f} | 1.00x | {len(local.indices)} |", flush=True)
    for w, res, t in ray_runs(args.workers, lambda ray: select(pool, cfg, args.budget, device=torch.device("cpu"),
                                                               engine=RayEngine(ray))):
        assert len(np.unique(res.indices)) == args.budget
        print(f"| ray | {w} | {t:.1f} | {t / t_local:.2f}x | {len(res.indices)} |", flush=True)


def bench_dedup(args: argparse.Namespace) -> None:
    from curate.dedup import Pool, find_groups

    X = clustered(args.n)
    header(f"dedup --mode clustered, N={args.n:,} x {X.shape[1]}, threshold {args.threshold}, star, keep largest")
    pool = Pool.from_arrays([f"{k:09d}" for k in range(len(X))], vectors=X)
    kw = {"threshold": args.threshold, "mode": "clustered", "device": "cpu"}
    local, t_local = timed(lambda: find_groups(pool, **kw))
    print("| engine | workers | time (s) | time / local | groups | removed | groups equal local |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| local | - | {t_local:.1f} | 1.00x | {local.n_groups} | {local.n_removed} | - |", flush=True)
    for w, res, t in ray_runs(args.workers, lambda ray: find_groups(pool, engine=ray, **kw)):
        same = res.table.equals(local.table)
        print(f"| ray | {w} | {t:.1f} | {t / t_local:.2f}x | {res.n_groups} | {res.n_removed} | {same} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["select", "dedup", "typicality"])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--threshold", type=float, default=0.98)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    {"select": bench_select, "dedup": bench_dedup, "typicality": bench_typicality}[args.part](args)


if __name__ == "__main__":
    main()
