"""The dtype an analysis holds the pool matrix in, and the one read every analysis starts with.

Why: 10M x 512 float32 is 20 GB, more than a 24 GB machine can hold beside anything else. Above
`FP32_SHARE` of the machine's RAM the matrix is held in float16 (half the memory) and every
product is still computed in fp32, one row tile at a time (curate.kernels, curate.select.tensors),
so no full-size fp32 or normalized copy is ever made. What fp16 changes: each unit-vector
component is rounded by up to 2^-11 relative, so a cosine moves by at most ~1e-3:
  - k-center picks are identical unless two candidates' distances are within ~1e-3 (near ties);
  - dedup (star and complete linkage) re-scores pairs within 2e-3 of the cut from the stored fp32
    vectors, so its groups equal an fp32 run's; `--linkage single`, `--engine ray` and the k-means
    split itself still judge fp16 rows;
  - slice / map rankings can swap neighbours whose scores differ by less than that.
Below the share (most pools) nothing changes: fp32, exact as before.
`CURATE_RESIDENT_DTYPE=float16|float32` forces one (benchmarks and tests use it).
"""

from __future__ import annotations

import os

import numpy as np

from curate.store.base import Store
from curate.store.filters import Condition

FP32_SHARE = 0.125  # fp32 matrix up to 1/8 of RAM: 3 GiB (1.5M x 512) on a 24 GiB machine


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def resident_dtype(n: int, dim: int) -> np.dtype:
    forced = os.environ.get("CURATE_RESIDENT_DTYPE", "").strip().lower()
    if forced:
        if forced not in ("float16", "float32"):
            raise ValueError(f"CURATE_RESIDENT_DTYPE={forced!r}: use float16 or float32")
        return np.dtype(forced)
    fp32_bytes = n * dim * 4
    return np.dtype(np.float32 if fp32_bytes <= FP32_SHARE * total_memory_bytes() else np.float16)


def load_resident(
    store: Store, collection: str, encoder: str, where: list[Condition] | None = None
) -> tuple[list[str], np.ndarray]:
    """`store.load_vectors` (sorted by id) in the resident dtype for the pool's size."""
    n = store.count_vectors(collection, encoder)
    dim = int(store.encoders(collection)[encoder]["dim"])
    return store.load_vectors(collection, encoder, where, dtype=resident_dtype(n, dim))
