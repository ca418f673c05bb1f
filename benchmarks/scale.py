"""Out-of-core scaling on one machine: synthetic clustered vectors (no images) at N x 512.

    python benchmarks/scale.py --n 250000 1000000 [--dim 512] [--budget 5000] [--dir .bench/scale] \
        [--dtype float16] [--steps ingest,load,select_auto,...,map]

For each N: ingest into the embedded store, then `select --budget B` (auto and kcenter),
`dedup --mode clustered` and `slice --example` (and `load`: only the vector read they all start
with), each step in its own subprocess so its wall time and
peak RSS (ru_maxrss from wait4) are its own. Prints one table row per (N, step) and a growth ratio
between the smallest and the largest N. The store for each N is kept under --dir (about 4.5 GB per
1M x 512) unless --clean. `--dtype` sets CURATE_RESIDENT_DTYPE for the steps (float16: the path a
10M pool takes on a 24 GiB machine; default: the size rule in curate/store/resident.py). `map`
(`curate map --refit`: UMAP on a 25k sample, the rest placed by k-NN interpolation above 50k
points) is not in the default steps: its fixed fit alone takes minutes; its summary line (seconds
per phase) is printed under its row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def ingest(store_dir: str, n: int, dim: int, centers: int, chunk: int = 50_000) -> None:
    """Clustered unit vectors: `centers` Gaussian blobs; a few exact copies so dedup finds groups."""
    from curate.store.edge import EdgeStore

    rng = np.random.default_rng(0)
    mu = rng.standard_normal((centers, dim)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    store = EdgeStore(store_dir)
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "syn", {"family": "imported", "model": "syn", "pretrained": None, "dim": dim})
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = mu[rng.integers(0, centers, m)] + 0.08 * rng.standard_normal((m, dim)).astype(np.float32)
        x[1::100] = x[0::100][: len(x[1::100])]  # 1% near-exact copies of a neighbour
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(m)]
        pay = [{"path": f"/pool/img_{i:09d}.jpg", "relpath": f"img_{i:09d}.jpg", "sha256": f"{i:064x}",
                "width": 640, "height": 480, "bytes": 50_000} for i in range(lo, lo + m)]
        store.upsert_points("pool", ids, pay)
        store.upsert_vectors("pool", "syn", ids, x)
    store.close()


def load(store_dir: str, dtype: str = "float32") -> None:
    """Only the read every analysis starts with: store.load_vectors (sorted N x d, ids as a list of str),
    then load_id_column (the same, ids as one bytes column: select, slice, map). Run directly as
    `PYTHONPATH=CODE python benchmarks/scale.py --_load STORE [float16]` to compare two versions."""
    import gc
    import tracemalloc  # numpy reports its buffers to it: the arrays' peak, without the shard's mapped pages

    from curate.store.edge import EdgeStore

    os.environ["CURATE_RESIDENT_DTYPE"] = dtype
    store = EdgeStore(store_dir)
    store.count_vectors("pool", "syn")
    reads = [("load_vectors", lambda: store.load_vectors("pool", "syn", dtype=np.dtype(dtype)))]
    try:
        from curate.store.columnar import load_id_column

        reads.append(("load_id_column", lambda: load_id_column(store, "pool", "syn")))
    except ImportError:  # a version before the id column
        pass
    for name, read in reads:
        tracemalloc.start()
        ids, x = read()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{len(ids)} x {x.shape[1]} {x.dtype}: heap peak during {name} {peak / 2**30:.3f} GiB "
              f"= {peak / x.nbytes:.2f}x the matrix; held beside the matrix after: "
              f"{(held - x.nbytes) / 2**20:.1f} MiB (the ids)")
        del ids, x
        gc.collect()
    store.close()


def run_step(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s (user+sys), peak RSS GiB, return code, last output line) of one child, from GNU time."""
    stats = log.with_suffix(".time")
    with log.open("w") as f:
        rc = subprocess.call(["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(stats), *argv], env=env,
                             stdout=f, stderr=subprocess.STDOUT)
    wall, user, system, kib = stats.read_text().split()[-4:]
    lines = log.read_text().strip().splitlines()
    return float(wall), float(user) + float(system), int(kib) / 2**20, rc, (lines or [""])[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--centers", type=int, default=2000)
    ap.add_argument("--dir", default=str(ROOT / ".bench" / "scale"))
    ap.add_argument("--steps", default="ingest,load,select_auto,select_kcenter,dedup_clustered,slice_example")
    ap.add_argument("--clean", action="store_true", help="Remove each store after its N is measured.")
    ap.add_argument("--dtype", choices=["float16", "float32"], default=None,
                    help="Resident matrix dtype for the analyses (CURATE_RESIDENT_DTYPE); default: by size.")
    args = ap.parse_args()
    steps = args.steps.split(",")
    from curate.device import cpu_name

    print(f"# scale benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, {cpu_name()}, load {os.getloadavg()[0]:.1f}, dim={args.dim}")
    print("| N | step | wall s | CPU s | peak RSS GiB | matrix GiB (N x d fp32) | rc |")
    print("|---|---|---|---|---|---|---|")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if args.dtype:
        env["CURATE_RESIDENT_DTYPE"] = args.dtype
    print(f"# resident dtype: {args.dtype or 'by size (curate/store/resident.py)'}")
    results: dict[int, dict[str, tuple[float, float]]] = {}
    for n in args.n:
        store = Path(args.dir) / f"n{n}"
        out = Path(args.dir) / f"out{n}"
        common = ["--store", str(store), "-c", "pool", "--encoder", "syn"]
        cli = [sys.executable, "-m", "curate"]
        argvs = {
            "ingest": [sys.executable, __file__, "--_ingest", str(store), str(n), str(args.dim), str(args.centers)],
            "load": [sys.executable, __file__, "--_load", str(store), args.dtype or "float32"],
            "select_auto": cli + ["select", "--budget", str(args.budget), "--name", "auto", "--dry-run",
                                  "-o", str(out)] + common,
            "select_kcenter": cli + ["select", "--budget", str(args.budget), "-s", "kcenter", "--name", "kc",
                                     "--dry-run", "-o", str(out)] + common,
            "dedup_clustered": cli + ["dedup", "--mode", "clustered", "--threshold", "0.98", "--force",
                                      "--no-tags", "--out", str(out / "dedup")] + common,
            "slice_example": cli + ["slice", "ex", "--example", "/pool/img_000000123.jpg", "--top-k", "1000",
                                    "--dry-run", "-o", str(out)] + common,
            "map": cli + ["map", "--refit", "--quiet"] + common,
        }
        if "ingest" in steps:
            shutil.rmtree(store, ignore_errors=True)
        results[n] = {}
        for step in steps:
            wall, cpu, rss, rc, tail = run_step(argvs[step], env, Path(args.dir) / f"{n}_{step}.log")
            results[n][step] = (wall, cpu, rss)
            gib = n * args.dim * 4 / 2**30
            print(f"| {n:,} | {step} | {wall:.1f} | {cpu:.1f} | {rss:.2f} | {gib:.2f} | {rc} |", flush=True)
            if rc != 0:
                print(f"    {step} failed: {tail}", flush=True)
            elif step == "map":
                print(f"    {tail}", flush=True)
        if args.clean:
            shutil.rmtree(store, ignore_errors=True)
    lo, hi = min(args.n), max(args.n)
    if lo != hi:
        print(f"\ngrowth {lo:,} -> {hi:,} (N x{hi / lo:.1f}): wall, CPU and peak RSS ratios")
        for step in steps:
            (w0, c0, r0), (w1, c1, r1) = results[lo][step], results[hi][step]
            print(f"  {step}: wall x{w1 / w0:.1f}, CPU x{c1 / c0:.1f}, RSS x{r1 / r0:.1f}")
    (Path(args.dir) / "scale.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_ingest":
        ingest(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--_load":
        load(*sys.argv[2:4])
    else:
        main()
