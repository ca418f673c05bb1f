"""Ingest and read-back rate of the embedded store (Qdrant Edge) at N x d, next to raw Edge calls.

    python benchmarks/ingest.py --n 100000 --dim 512

The reference is the least Python we can put in front of Edge: one upsert of vector-only points per
batch. Our store writes payload and vectors to separate shards, so the ratio shows what that costs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from datetime import date

import numpy as np
import qdrant_edge as qe

from curate.device import cpu_name
from curate.store.base import Store
from curate.store.edge import EdgeStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    n, d = args.n, args.dim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    payloads = [{"path": f"/pool/img_{i:08d}.jpg", "relpath": f"img_{i:08d}.jpg", "sha256": "0" * 64,
                 "width": 500, "height": 375, "bytes": 60_000, "format": "JPEG", "label": i % 10} for i in range(n)]
    tmp = tempfile.mkdtemp()
    try:
        # reference: raw Edge, vectors only, one shard
        shard = qe.EdgeShard.create(f"{tmp}/raw", qe.EdgeConfig(
            vectors={"v": qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine)}))
        t = time.perf_counter()
        for lo in range(0, n, 2000):
            rows = x[lo:lo + 2000].tolist()
            shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(i, {"v": r}) for i, r in zip(ids[lo:lo + 2000], rows, strict=True)]))
        shard.flush()
        raw = time.perf_counter() - t
        shard.close()

        store = EdgeStore(f"{tmp}/store")
        store.ensure_collection("bench")
        store.ensure_encoder("bench", "enc", {"family": "bench", "dim": d})
        t = time.perf_counter()
        store.upsert_points("bench", ids, payloads)
        t_payload = time.perf_counter() - t
        t = time.perf_counter()
        store.upsert_vectors("bench", "enc", ids, x)
        store.flush()
        t_vectors = time.perf_counter() - t
        t = time.perf_counter()
        got_ids, mat = store.load_vectors("bench", "enc")
        t_load = time.perf_counter() - t
        assert len(got_ids) == n and mat.shape == (n, d)
        t = time.perf_counter()
        ref_ids, ref = Store.load_vectors(store, "bench", "enc")  # reference: through Edge's Python objects
        t_ref = time.perf_counter() - t
        assert ref_ids == got_ids and np.allclose(ref, mat, atol=1e-6)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# ingest benchmark, {date.today()}, {cpu_name()}, "
          f"{__import__('os').cpu_count()} cores, N={n}, d={d}")
    print(f"raw Edge upsert (vectors only, reference): {raw:6.1f} s  {n / raw:9,.0f} points/s")
    print(f"curate vectors upsert:                     {t_vectors:6.1f} s  {n / t_vectors:9,.0f} points/s  "
          f"ratio to raw {raw / t_vectors:.2f}")
    print(f"curate payload upsert (8 fields):          {t_payload:6.1f} s  {n / t_payload:9,.0f} points/s")
    print(f"curate total ingest:                       {t_payload + t_vectors:6.1f} s  "
          f"{n / (t_payload + t_vectors):9,.0f} points/s")
    print(f"curate load_vectors (N x d, sorted):       {t_load:6.1f} s  {n / t_load:9,.0f} points/s  "
          f"{t_ref / t_load:.0f}x faster than the reference")
    print(f"reference read via Edge scroll (Python lists): {t_ref:6.1f} s  {n / t_ref:9,.0f} points/s")


if __name__ == "__main__":
    main()
