"""`curate leaks A B`: near-duplicate pairs across two sets (a training selection and an eval
slice, say). An eval image with a near copy in training measures memorization, not
generalization; this finds them all (exact search across the two sets, plus byte-identical files
through sha256, which also covers images that failed to embed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from curate.files import write_atomic
from curate.kernels import check_threshold, pairs_above
from curate.slices import SliceError, resolve_set
from curate.store import Store

MAX_PAIRS = 20_000_000  # ~0.5 GB of pairs; beyond that the threshold is not finding copies


@dataclass
class LeakReport:
    a: str
    b: str
    n_a: int
    n_b: int
    threshold: float
    pairs: pl.DataFrame  # a_id, a_path, b_id, b_path, similarity, exact
    files: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def a_leaking(self) -> int:
        return self.pairs["a_id"].n_unique() if len(self.pairs) else 0

    @property
    def b_leaked(self) -> int:
        return self.pairs["b_id"].n_unique() if len(self.pairs) else 0

    def summary(self) -> str:
        pct = 100.0 * self.b_leaked / self.n_b if self.n_b else 0.0
        return (
            f"{self.n_pairs} pairs at cosine >= {self.threshold} between {self.a} ({self.n_a} images) and "
            f"{self.b} ({self.n_b}): {self.b_leaked} of B ({pct:.1f}%) have a near copy in A; "
            f"{self.a_leaking} images of A involved"
        )


def cross_pairs(
    a_vectors: np.ndarray,
    b_vectors: np.ndarray,
    threshold: float,
    *,
    device: str | torch.device | None = None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row in A, row in B, cosine) of every pair >= threshold, sorted by (A row, B row)."""
    check_threshold(threshold)
    return pairs_above(a_vectors, threshold, b_vectors, device=device, chunk=chunk, max_pairs=MAX_PAIRS)


def find_leaks(
    store: Store,
    collection: str,
    encoder: str | None,
    a: str,
    b: str,
    *,
    threshold: float | None = None,
    device: str | torch.device | None = None,
    center: bool = False,
) -> LeakReport:
    """Resolve both sets, compare every A image with every B image, join byte-identical pairs.
    `threshold=None`: the encoder's fixed near-copy cut (the centered floor with `center`).
    `center`: compare after subtracting the mean vector of A and B together (see dedup --center)."""
    encoder = store.require_encoder(collection, encoder)
    if threshold is None:
        from curate.dedup.cut import CENTERED_FLOOR
        from curate.dedup.near import default_threshold

        threshold = CENTERED_FLOOR if center else default_threshold(store.encoders(collection).get(encoder))
    try:
        check_threshold(threshold)
    except ValueError as e:
        raise SliceError(str(e)) from None
    a_name, a_ids = resolve_set(store, collection, a)
    b_name, b_ids = resolve_set(store, collection, b)
    for label, ids in ((a_name, a_ids), (b_name, b_ids)):
        if not ids:
            raise SliceError(f"{label} is empty in {collection!r}")
    payload = store.payloads(collection, None, ["path", "sha256"])
    have = store.existing_ids(collection, sorted(set(a_ids) | set(b_ids)), encoder)
    av_ids = [i for i in a_ids if i in have]
    bv_ids = [i for i in b_ids if i in have]
    rows: dict[tuple[str, str], float] = {}
    if av_ids and bv_ids:
        xa = store.get_vectors(collection, encoder, av_ids)
        xb = store.get_vectors(collection, encoder, bv_ids)
        if center:
            xa, xb = centered_pair(xa, xb)
        i, j, s = cross_pairs(xa, xb, threshold, device=device)
        for ii, jj, ss in zip(i.tolist(), j.tolist(), s.tolist(), strict=True):
            rows[(av_ids[ii], bv_ids[jj])] = ss
    # byte-identical files (same sha256), with or without vectors
    by_hash: dict[str, list[str]] = {}
    for pid in a_ids:
        h = payload.get(pid, {}).get("sha256")
        if h:
            by_hash.setdefault(h, []).append(pid)
    exact: set[tuple[str, str]] = set()
    for pid in b_ids:
        h = payload.get(pid, {}).get("sha256")
        for aid in by_hash.get(h, []) if h else []:
            exact.add((aid, pid))
            rows.setdefault((aid, pid), 1.0)
    keys = sorted(rows)
    df = pl.DataFrame(
        {
            "a_id": [k[0] for k in keys],
            "a_path": [str(payload.get(k[0], {}).get("path") or "") for k in keys],
            "b_id": [k[1] for k in keys],
            "b_path": [str(payload.get(k[1], {}).get("path") or "") for k in keys],
            "similarity": [rows[k] for k in keys],
            "exact": [k in exact for k in keys],
        },
        schema={"a_id": pl.String, "a_path": pl.String, "b_id": pl.String, "b_path": pl.String,
                "similarity": pl.Float32, "exact": pl.Boolean},
    ).sort(["similarity", "a_id", "b_id"], descending=[True, False, False])
    return LeakReport(a_name, b_name, len(a_ids), len(b_ids), threshold, df)


def centered_pair(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets minus the mean of their union (an image in both sets counts twice: negligible),
    rows unit length again."""
    from curate.dedup.run import centered

    both = centered(np.concatenate([xa, xb]))
    return both[: len(xa)], both[len(xa) :]


def leaks_stem(a: str, b: str) -> str:
    """File stem naming both sets, so checks of different pairs of sets do not overwrite each other."""
    def slug(x: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(x).stem if Path(x).is_file() else x).strip("-")[:40] or "set"

    return f"leaks_{slug(a)}__{slug(b)}"


def write_leaks(report: LeakReport, out_dir: str | Path, stem: str = "leaks") -> list[str]:
    """`<stem>.csv`: every pair (a_id, a_path, b_id, b_path, similarity, exact), written atomically."""
    path = write_atomic(Path(out_dir) / f"{stem}.csv", report.pairs.write_csv)
    report.files = [str(path)]
    return report.files
