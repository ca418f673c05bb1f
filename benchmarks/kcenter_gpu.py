"""Where a GPU k-center pick's time goes: the per-pick matrix-vector product in several forms, the
rest of curate's streaming step, and a plain loop, on one fp16 matrix (N x d, unit rows).

    python -m benchmarks.kcenter_gpu                 # N = 1M, d = 512 (needs CUDA)
    python -m benchmarks.kcenter_gpu --n 200000

Each pick reads the whole matrix once (N x d x 2 bytes), so the floor of one pick is that over the
measured read bandwidth. Rows (median of 50 timed calls after warm-up, CUDA events):
  mm fp32 out      torch.mm(x, c[:, None], out_dtype=float32): what curate's streaming loop runs
  mv fp16 out      torch.mv(x, c) (cuBLAS GEMV, fp32 accumulation, fp16 result), then .float()
  mm 8 cols fp32   torch.mm against c and 7 zero columns, fp32 out (a GEMM shape instead of a GEMV)
  step (curate)    one whole pick of curate's `_stream` loop (timed over 200 picks / 200)
  step (plain)     the plain loop's pick: fp16 product, minimum, argmax
plus the largest deviation of the fp16-output product from an fp64 reference (what a fp16 result
does to near ties).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/...` too
from benchmarks.selection import clustered, machine  # noqa: E402
from curate.select.kcenter import kcenter_select  # noqa: E402


def timed(fn, reps: int = 50) -> float:  # noqa: ANN001
    """Median seconds of fn() over `reps` calls, CUDA events, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1000)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("kcenter_gpu: CUDA is not available on this machine")
        return
    dev = torch.device("cuda")
    X = clustered(args.n, args.dim)
    x = torch.from_numpy(X).to(dev, torch.float16)
    c = x[12345].clone()
    c8 = torch.zeros((args.dim, 8), dtype=torch.float16, device=dev)
    c8[:, 0] = c
    bw_bytes = x.numel() * 2
    t_read = timed(lambda: x.sum(dtype=torch.float32))
    mind = torch.full((args.n,), 4.0, device=dev)

    def plain_step() -> None:
        sim = torch.mv(x, c).float()
        torch.minimum(mind, 2 - 2 * sim, out=mind)
        torch.argmax(mind)

    rows = [
        ("read (sum, fp32 accumulate)", t_read),
        ("mm fp32 out", timed(lambda: torch.mm(x, c[:, None], out_dtype=torch.float32))),
        ("mv fp16 out", timed(lambda: torch.mv(x, c).float())),
        ("mm 8 cols fp32", timed(lambda: torch.mm(x, c8, out_dtype=torch.float32))),
        ("step (plain)", timed(plain_step)),
    ]
    kcenter_select(X[:10000], 10, device=dev)  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    kcenter_select(X, 201, device=dev, lazy=False)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    kcenter_select(X, 1, device=dev, lazy=False)  # the set-up alone (norms, first pick)
    torch.cuda.synchronize()
    rows.append(("step (curate)", ((t1 - t) - (time.perf_counter() - t1)) / 200))

    ref = (X.astype(np.float64) @ X[12345].astype(np.float64))
    got16 = torch.mv(x, c).float().cpu().numpy()
    got32 = torch.mm(x, c[:, None], out_dtype=torch.float32)[:, 0].cpu().numpy()
    print(f"\n**One k-center pick on the GPU, N = {args.n:,}, d = {args.dim}, fp16 matrix** — {machine()}\n")
    print("| what | time per call | read rate | x floor |")
    print("|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s * 1e3:.3f} ms | {bw_bytes / s / 1e12:.2f} TB/s | {s / t_read:.2f}x |")
    print(f"\nlargest |product - fp64 reference|: fp16 out {np.abs(got16 - ref).max():.2e}, "
          f"fp32 out {np.abs(got32 - ref).max():.2e}")


if __name__ == "__main__":
    main()
