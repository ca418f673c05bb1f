"""Selection speed: k-center greedy against the widely copied implementation, the per-pick floor,
the GPU bandwidth floor, and density/typicality at scale.

    python benchmarks/selection.py reference      # N=50k, d=512, budget 200 vs a pairwise-distance-per-pick loop
    python benchmarks/selection.py floor          # per-pick time vs one GEMV over the same matrix, N up to 1M
    python benchmarks/selection.py gpu            # N=1M, d=512, budget 5000 in fp16 vs the bandwidth floor (CUDA)
    python benchmarks/selection.py scale --n 200000   # density + typicality time and peak memory
    python benchmarks/selection.py auto           # auto and what it picks vs plain kcenter, N=50k/200k, budget 200/5000

Data: unit vectors drawn around 200 random directions (embeddings are clustered; pure noise would
make every distance alike). Each part prints one markdown table with the machine and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time

import numpy as np
import torch

from curate.device import cpu_name
from curate.select.kcenter import kcenter_select


def clustered(n: int, d: int, seed: int = 0, modes: int = 200, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around `modes` random directions, generated in chunks (float32 throughout)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((modes, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for r0 in range(0, n, step):
        m = min(step, n - r0)
        x = centers[rng.integers(0, modes, m)] + spread * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        out[r0 : r0 + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu_name()}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}; "
            f"{dt.date.today().isoformat()}; `python {' '.join(sys.argv)}`")


def reference_kcenter(X: np.ndarray, budget: int, first: int) -> list[int]:
    """The widely copied style: after each pick, call a pairwise-distance function between the whole
    pool and the new center, fold it into the running minimum, take the argmax."""
    from sklearn.metrics import pairwise_distances

    picks = [first]
    min_d = pairwise_distances(X, X[[first]], metric="euclidean")
    for _ in range(budget - 1):
        ind = int(np.argmax(min_d))
        picks.append(ind)
        min_d = np.minimum(min_d, pairwise_distances(X, X[[ind]], metric="euclidean"))
    return picks


def part_reference(args: argparse.Namespace) -> None:
    n, d, budget = args.n or 50_000, args.dim, args.budget or 200
    X = clustered(n, d)
    t = time.perf_counter()
    ours = kcenter_select(X, budget, device="cpu")  # CPU default: the lazy exact loop
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    stream = kcenter_select(X, budget, device="cpu", lazy=False)  # one fused pass per pick
    t_stream = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_kcenter(X, budget, int(ours.indices[0]))
    t_ref = time.perf_counter() - t

    def same(a: list[int]) -> str:
        diff = next((i for i, (p, q) in enumerate(zip(ref, a, strict=True)) if p != q), None)
        return "yes" if diff is None else f"no (first difference at pick {diff})"

    floor = gemv_ms(torch.from_numpy(X))
    print(f"\n**k-center vs the pairwise-distance-per-pick style** — {machine()}\n")
    print("| N | d | budget | reference: sklearn pairwise_distances per pick | curate, lazy (CPU default) | speed-up "
          "| curate, streaming | speed-up | identical picks (lazy / streaming) | GEMV floor x budget |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {n:,} | {d} | {budget} | {t_ref:.1f} s ({t_ref / budget * 1e3:.0f} ms/pick) | {t_ours:.2f} s "
          f"| **{t_ref / t_ours:.0f}x** | {t_stream:.2f} s | {t_ref / t_stream:.1f}x "
          f"| {same(ours.indices.tolist())} / {same(stream.indices.tolist())} | {floor * budget / 1e3:.2f} s |")


def gemv_ms(x: torch.Tensor, reps: int = 20) -> float:
    """Best-of-reps time of one matrix-vector product over the matrix: the per-pick floor (the
    minimum, not the median, because other jobs on a shared machine only ever add time)."""
    c = x[0].clone()
    times = []
    for _ in range(reps + 3):
        t = time.perf_counter()
        if x.dtype == torch.float32:
            torch.mv(x, c)
        else:
            torch.mm(x, c[:, None], out_dtype=torch.float32)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.min(times[3:]) * 1e3)


def best_time(X: np.ndarray, budget: int, lazy: bool, runs: int = 2) -> float:
    """Best of `runs` k-center runs on the CPU, in seconds (like the floor, a best case)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        kcenter_select(X, budget, device="cpu", lazy=lazy)
        times.append(time.perf_counter() - t)
    return min(times)


def read_ms(x: torch.Tensor, reps: int = 10) -> float:
    """Best time to read the matrix once (a sum): the memory-bandwidth floor of any one-pass pick."""
    times = []
    for _ in range(reps + 2):
        t = time.perf_counter()
        x.sum(dtype=torch.float32)
        times.append(time.perf_counter() - t)
    return float(np.min(times[2:]) * 1e3)


def part_floor(args: argparse.Namespace) -> None:
    sizes = [args.n] if args.n else [50_000, 200_000, 1_000_000]
    print(f"\n**k-center per-pick time vs one pass over the same matrix (CPU, fp32)** — {machine()}\n")
    print("| N | d | picks timed | GEMV (torch.mv) ms | one read of the matrix ms | streaming ms/pick "
          "| streaming / GEMV | lazy ms/pick | lazy / GEMV |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        X = clustered(n, args.dim, seed=1)
        picks = args.budget or max(100, int(2e7 // n))  # >= 100 so lazy full passes amortize
        kcenter_select(X, 2, device="cpu")  # warm-up
        per = {}
        for lazy in (False, True):  # setup (norms, first pick) cancels out in the difference
            per[lazy] = (best_time(X, picks + 1, lazy) - best_time(X, 1, lazy)) / picks * 1e3
        floor = gemv_ms(torch.from_numpy(X))
        read = read_ms(torch.from_numpy(X))
        print(f"| {n:,} | {args.dim} | {picks} | {floor:.1f} | {read:.1f} | {per[False]:.1f} "
              f"| {per[False] / floor:.2f}x | {per[True]:.1f} | {per[True] / floor:.2f}x |")
        del X


def part_gpu(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        print("gpu: CUDA is not available on this machine; run this part on a GPU host")
        return
    n, d, budget = args.n or 1_000_000, args.dim, args.budget or 5000
    X = clustered(n, d)
    dev = torch.device("cuda")
    x = torch.from_numpy(X).to(dev, torch.float16)
    # achievable read bandwidth: a fp32-accumulated reduction that reads the fp16 matrix once
    for _ in range(3):
        x.sum(dtype=torch.float32)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        x.sum(dtype=torch.float32)
    torch.cuda.synchronize()
    bw = 20 * x.numel() * 2 / (time.perf_counter() - t)
    floor = budget * x.numel() * 2 / bw

    def plain_loop() -> list[int]:
        """What one writes first: fp16 matmul, fp32 min-distance vector, argmax each pick."""
        mind = torch.full((n,), float("inf"), device=dev)
        idx = torch.tensor(0, device=dev)
        out = []
        for _ in range(budget):
            out.append(idx)
            sim = (x @ x[idx]).float()
            mind = torch.minimum(mind, 2 - 2 * sim)
            idx = torch.argmax(mind)
        return [int(i) for i in torch.stack(out).cpu()]

    kcenter_select(X[:10000], 10, device=dev)  # warm-up (cuBLAS handles, allocator)
    torch.cuda.synchronize()
    t = time.perf_counter()
    ours = kcenter_select(X, budget, device=dev)
    torch.cuda.synchronize()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    lazy = kcenter_select(X, budget, device=dev, lazy=True)  # the CPU default's loop, on the GPU
    torch.cuda.synchronize()
    t_lazy = time.perf_counter() - t
    same_lazy = bool(np.array_equal(lazy.indices, ours.indices))
    t = time.perf_counter()
    plain_loop()
    torch.cuda.synchronize()
    t_plain = time.perf_counter() - t
    cpu_check = kcenter_select(X[:50_000], 100, device="cpu").indices
    gpu_check = kcenter_select(X[:50_000], 100, device=dev).indices
    agree = int((cpu_check == gpu_check).cumprod().sum())
    print(f"\n**k-center on the GPU, fp16 storage, fp32 accumulation** — {machine()}\n")
    print("| N | d | budget | measured read bandwidth | bandwidth floor | curate (streaming) | curate / floor "
          "| lazy loop | lazy picks = streaming | plain torch loop | CPU/GPU agreement (50k, 100 picks) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {n:,} | {d} | {budget} | {bw / 1e12:.2f} TB/s | {floor:.2f} s | {t_ours:.2f} s "
          f"| {t_ours / floor:.2f}x | {t_lazy:.2f} s | {same_lazy} | {t_plain:.2f} s "
          f"| first {agree} of 100 picks identical |")
    del ours, lazy


def part_scale(args: argparse.Namespace) -> None:
    from curate.select.density import knn_density
    from curate.select.typicality import cluster_pool, n_clusters_for

    n, d = args.n or 200_000, args.dim
    budget = args.budget or 1000
    dev = args.device
    X = clustered(n, d, seed=2)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    knn_density(X, 20, device=dev)
    t_dens = time.perf_counter() - t
    rss_d = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    k = n_clusters_for(n, 0, budget)
    t = time.perf_counter()
    cluster_pool(X, k, device=dev)
    t_typ = time.perf_counter() - t
    rss_t = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    nn = n * n * 4 / 2**30
    print(f"\n**Density and typicality at scale** — {machine()}\n")
    print("| N | d | step | time | peak RSS (process) | an N x N fp32 matrix would be |")
    print("|---|---|---|---|---|---|")
    print(f"| {n:,} | {d} | pool matrix alone | - | {base:.1f} GiB | {nn:,.0f} GiB |")
    print(f"| {n:,} | {d} | kNN density (k=20, soft top-k on 512 references) | {t_dens:.1f} s | {rss_d:.1f} GiB | |")
    print(f"| {n:,} | {d} | k-means (K={k}) + in-cluster typicality | {t_typ:.1f} s | {rss_t:.1f} GiB | |")


def part_auto(args: argparse.Namespace) -> None:
    """`auto` (and every strategy it can resolve to) against plain k-center, through
    `compose.select` (the code behind `curate select`), same data, same process, alternating;
    with --repeats R the four run R times in turn and each cell is the median (a shared CPU's
    load swings between runs). The auto column names the branch that ran (`sel.strategy`)."""
    from curate.select.compose import Pool, select
    from curate.select.config import SelectionConfig, shorthand

    sizes = [args.n] if args.n else [50_000, 200_000]
    budgets = [args.budget] if args.budget else [200, 5000]
    dev = torch.device(args.device)
    print(f"\n**auto vs plain k-center (CPU unless stated)** — {machine()}\n")
    print("| N | d | budget | kcenter | auto (ran) | auto / kcenter | density-kcenter / kcenter "
          "| typicality, typicality / kcenter |")
    print("|---|---|---|---|---|---|---|---|")
    names = args.names.split(",")
    assert names[:2] == ["kcenter", "auto"], "--names starts with kcenter,auto (the ratio's two terms)"
    for n in sizes:
        X = clustered(n, args.dim, seed=3)
        pool = Pool(X, np.ones(n, bool), np.zeros(n, bool), [{}] * n, ids=[f"{i:09d}" for i in range(n)])
        for b in budgets:
            runs: dict[str, list[float]] = {name: [] for name in names}
            ran = ""
            for _ in range(args.repeats):
                for name in names:
                    steps, label = shorthand(name)
                    cfg = SelectionConfig(steps=steps, strategy=label, seed=0).validate()
                    t0 = time.perf_counter()
                    sel = select(pool, cfg, b, device=dev)
                    runs[name].append(time.perf_counter() - t0)
                    assert len(sel.indices) == b
                    if name == "auto":
                        ran = sel.strategy.removeprefix("auto->")  # e.g. "stratified", not what resolve_auto says
            t = {name: float(np.median(v)) for name, v in runs.items()}
            typ = f"{t['typicality']:.1f} s, {t['typicality'] / t['kcenter']:.2f}x" if "typicality" in t else "-"
            dk = f"{t['density-kcenter'] / t['kcenter']:.2f}x" if "density-kcenter" in t else "-"
            print(f"| {n:,} | {args.dim} | {b} | {t['kcenter']:.1f} s | {t['auto']:.1f} s ({ran}) "
                  f"| **{t['auto'] / t['kcenter']:.2f}x** | {dk} | {typ} |",
                  flush=True)
        del X, pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["reference", "floor", "gpu", "scale", "auto"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="auto: run the strategies this many times, report medians")
    ap.add_argument("--names", default="kcenter,auto,density-kcenter,typicality",
                    help="auto: the strategies timed (kcenter,auto first); fewer for a quick before/after")
    args = ap.parse_args()
    parts = {"reference": part_reference, "floor": part_floor, "gpu": part_gpu, "scale": part_scale,
             "auto": part_auto}
    parts[args.part](args)


if __name__ == "__main__":
    main()
