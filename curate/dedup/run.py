"""`curate dedup` as a library call: load the pool from the store, find exact and near duplicate
groups together, choose keepers, write the group table, manifests and payload tags.

The core (`find_groups`) works on plain arrays, so tests compare it with a brute-force reference
without a store; `run_dedup` only adds loading and writing. Nothing here deletes or moves a file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from curate.dedup.candidates import CANDIDATE_FLOOR, CANDIDATES, THUMB_FLOOR, knn_pairs
from curate.dedup.cut import MAX_SHARE, RELATIVE, CutChoice, derive_cut
from curate.dedup.exact import exact_edges, present
from curate.dedup.groups import KEEP_POLICIES, Components, choose_keeper, groups_of, priority_order
from curate.dedup.linkage import LINKAGES, Rescore, complete_groups, edge_groups, star_groups
from curate.dedup.near import (
    DEFAULT_THRESHOLD,
    NeighbourSample,
    add_near_edges,
    nearest_neighbour_sample,
)
from curate.dedup.pool import Pool, load_pool, lookup, text_column
from curate.dedup.semdedup import cluster_subsets, clustered_near_edges
from curate.dedup.verified import VERIFY_MODES, PairVerifier, Progress, VerifyStats, unreadable_paths
from curate.device import pick_device
from curate.files import write_atomic
from curate.kernels import check_threshold, iter_pairs_above
from curate.store import Condition, Store

MODES = ("auto", "exact", "clustered")
# `auto` switches to clustered search above these pool sizes: exact all-pairs then costs more than
# ~10 minutes (CPU: ~130 GFLOP/s on 2 cores; one modern GPU: several hundred TFLOP/s).
EXACT_LIMIT = {"cpu": 300_000, "cuda": 5_000_000}
GROUP_FIELDS = ("dup_group", "is_duplicate")
CUT_SAMPLE = 5000  # images whose nearest neighbour sets the default cut (its median is stable by then)


@dataclass
class DedupResult:
    table: pl.DataFrame  # one row per member of a duplicate group
    n_points: int
    n_vectors: int
    n_groups: int
    n_removed: int
    n_exact_pairs: int  # sha256 edges (star per hash)
    n_near_pairs: int  # single: pairs >= threshold found (clustered: visits); star/complete: members joined
    mode: str
    threshold: float | None
    seconds: float
    files: list[str] = field(default_factory=list)
    cut: CutChoice | None = None  # how the default threshold was derived (None: given)
    linkage: str = "star"  # star, complete, single; "exact" when only sha256 was compared
    verify: VerifyStats | None = None  # candidates verified on the images (None: grouped by the cut)
    verify_note: str | None = None  # why verification is off although it was asked for by `auto`

    @property
    def near_share(self) -> float:
        """Share of the pool removed as near (not byte-identical) copies: what the 20% guard checks."""
        if not len(self.table) or not self.n_points:
            return 0.0
        return int((~self.table["kept"] & (self.table["match"] == "near")).sum()) / self.n_points

    @property
    def remove_ids(self) -> list[str]:
        return self.table.filter(~pl.col("kept"))["id"].to_list()

    def summary(self) -> str:
        near = f", near >= {self.threshold:.4g} ({self.linkage}, {self.mode})" if self.threshold is not None else ""
        if self.verify is not None:
            near = f", near = verified on the images ({self.linkage}, {self.mode})"
        return (
            f"{self.n_points} points ({self.n_vectors} with vectors): {self.n_groups} duplicate groups, "
            f"{self.n_removed} to remove, {self.n_points - self.n_removed} to keep [exact sha256{near}; "
            f"{self.seconds:.1f} s]"
        )


def centered(vectors: np.ndarray, block: int = 65536) -> np.ndarray:
    """Vectors minus the pool's mean vector (then unit length again).

    Why: embeddings of one pool share a large common component (all-positive thumbnails, post-ReLU
    CNN features, CLIP's anisotropy), so raw cosines of unrelated images are high and a cut that
    catches copies also catches look-alikes. Removing the mean keeps what distinguishes images:
    in benchmarks/dedup.py it lifts `pixels` precision on look-alike textiles from 0.003 to 1.0 at
    the same recall. The mean is accumulated in float64 over row blocks."""
    total = np.zeros(vectors.shape[1], dtype=np.float64)
    for s in range(0, len(vectors), block):
        total += vectors[s : s + block].sum(axis=0, dtype=np.float64)
    out = vectors.astype(np.float32, copy=True)
    out -= (total / max(1, len(vectors))).astype(np.float32)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def resolve_mode(mode: str, n_vectors: int, device: torch.device) -> str:
    if mode not in MODES:
        raise ValueError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "exact" if n_vectors <= EXACT_LIMIT.get(device.type, EXACT_LIMIT["cpu"]) else "clustered"


def find_groups(
    pool: Pool,
    *,
    threshold: float | None = DEFAULT_THRESHOLD,
    keep: str = "largest",
    linkage: str = "star",
    mode: str = "auto",
    n_clusters: int | None = None,
    probes: int = 2,
    device: str | torch.device | None = None,
    chunk: int | None = None,
    center: bool = False,
    engine: Any = None,
    verifier: PairVerifier | None = None,
    candidates: int = CANDIDATES,
) -> DedupResult:
    """Exact (sha256) and near (cosine >= threshold; None = exact only) duplicate groups.

    With a `verifier`, near pairs are the `candidates` nearest neighbours of each image at cosine >=
    `threshold` (None: CANDIDATE_FLOOR) that the verifier confirms on the images; the linkage then
    works on confirmed pairs (star: every member confirmed against its kept image).

    `engine`: None (this process) or the connected `ray` module: then the clustered mode's pair
    search runs as Ray tasks (curate.dedup.ray_dedup), with the same groups; `auto` means clustered.
    The verified path has no Ray driver yet (the caller turns verification off with --engine ray).

    Byte-identical files always share a group. `linkage`: star (default; every member within the
    cut of its kept image), complete (of every other member) or single (union-find, chains).
    `center=True` compares vectors after subtracting the pool's mean vector (see `centered`)."""
    t0 = time.perf_counter()
    if linkage not in LINKAGES:
        raise ValueError(f"--linkage {linkage!r}: use one of {', '.join(LINKAGES)}")
    if center and pool.vectors is not None and len(pool.vectors) >= 2:
        pool = dataclasses.replace(pool, vectors=centered(pool.vectors), fp32_rows=None)
    if keep not in KEEP_POLICIES:
        raise ValueError(f"--keep {keep!r}: use one of {', '.join(KEEP_POLICIES)}")
    if threshold is not None:
        check_threshold(threshold)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    n = len(pool.ids)
    comps = Components(n)
    a, b = exact_edges(pool.hashes)
    comps.add(a, b)
    n_vec = 0 if pool.vectors is None else len(pool.vectors)
    near = (threshold is not None or verifier is not None) and pool.vectors is not None and n_vec >= 2
    if engine is not None and mode == "exact":
        raise ValueError("--engine ray runs --mode clustered only (exact all-pairs has no Ray path)")
    if engine is not None and verifier is not None:
        raise ValueError("--engine ray groups by the cut only: add --verify off (verification has no Ray path yet)")
    used_mode = ("clustered" if engine is not None else resolve_mode(mode, n_vec, dev)) if near else "none"
    n_near = 0
    if near and verifier is not None:
        floor = CANDIDATE_FLOOR if threshold is None else threshold
        groups, n_near = _verified_groups(pool, comps.result(), keep, linkage, used_mode, verifier, candidates, floor,
                                          n_clusters=n_clusters, probes=probes, device=dev)
    elif near and linkage == "single":
        assert pool.vectors is not None and threshold is not None
        if used_mode == "exact":
            n_near = add_near_edges(pool.vectors, threshold, comps, pool.node_of_row, device=dev, chunk=chunk)
        elif engine is not None:
            from curate.dedup.ray_dedup import subset_pairs

            subsets = cluster_subsets(pool.vectors, n_clusters=n_clusters, probes=probes, device=dev)
            for i, j in subset_pairs(engine, pool.vectors, subsets, threshold):
                n_near += len(i)
                comps.add(pool.node_of_row[i], pool.node_of_row[j])
        else:
            n_near, _ = clustered_near_edges(
                pool.vectors, threshold, comps, pool.node_of_row, n_clusters=n_clusters, probes=probes, device=dev
            )
        groups = [(choose_keeper(m, keep, pool.info, pool.vectors), m) for m in groups_of(comps.result())]
    elif near:
        assert threshold is not None
        groups, n_near = _greedy_groups(pool, comps.result(), threshold, keep, linkage, used_mode,
                                        n_clusters=n_clusters, probes=probes, device=dev, chunk=chunk, engine=engine)
    else:
        groups = [(choose_keeper(m, keep, pool.info, pool.vectors), m) for m in groups_of(comps.result())]
    table = _group_table(pool, groups)
    n_removed = int((~table["kept"]).sum()) if len(table) else 0
    return DedupResult(
        table=table,
        n_points=n,
        n_vectors=n_vec,
        n_groups=len(groups),
        n_removed=n_removed,
        n_exact_pairs=len(a),
        n_near_pairs=n_near,
        mode=used_mode,
        threshold=threshold,
        seconds=time.perf_counter() - t0,
        linkage=linkage if near else "exact",
        verify=verifier.stats if verifier is not None and near else None,
    )


def _greedy_groups(
    pool: Pool,
    hash_label: np.ndarray,
    threshold: float,
    keep: str,
    linkage: str,
    mode: str,
    *,
    n_clusters: int | None,
    probes: int,
    device: torch.device,
    chunk: int | None,
    engine: Any = None,
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Star / complete groups: one vector per set of byte-identical files (its first image in
    priority order) takes part in the greedy; the other files of the set follow it, so exact
    copies always stay together, also those that failed to embed. Returns ((keeper, members)
    groups ordered by smallest member, number of members joined by similarity)."""
    assert pool.vectors is not None
    vec = pool.vectors
    subsets = None
    if mode == "clustered":
        subsets = cluster_subsets(vec, n_clusters=n_clusters, probes=probes, device=device)
    pairs = None
    if engine is not None and subsets is not None:  # the pair search as Ray tasks, the greedy here
        from curate.dedup import ray_dedup

        pairs = ray_dedup.subset_pairs(engine, vec, subsets, threshold)
    degree = None
    if keep == "central":
        deg_rows = _degree(vec, threshold, subsets, device, chunk) if pairs is None else \
            ray_dedup.degree_from_pairs(pairs, len(vec))
        degree = np.zeros(len(pool.ids), dtype=np.int64)
        degree[pool.node_of_row] = deg_rows
    order = priority_order(pool.info, keep, degree)
    with_vec = order[pool.info.vec_row[order] >= 0]
    _, first = np.unique(hash_label[with_vec], return_index=True)
    reps = with_vec[np.sort(first)]  # points, in priority order
    rep_rows = pool.info.vec_row[reps]
    rank_subsets = None
    if subsets is not None:
        rank_of_row = np.full(len(vec), -1, dtype=np.int64)
        rank_of_row[rep_rows] = np.arange(len(reps))
        rank_subsets = [np.sort(r[r >= 0]) for r in (rank_of_row[s] for s in subsets)]
    tile_kw = {"tile": chunk, "cols": chunk} if chunk else {}
    # the greedy reads reps in priority order through `order=rep_rows`: no reordered copy of the matrix
    if pairs is not None and rank_subsets is not None:  # pairs name the rows: renumbered to ranks
        leader = ray_dedup.groups_from_pairs(linkage, vec, threshold, rank_subsets,
                                             ray_dedup.renumber(pairs, rank_of_row), device=device, order=rep_rows)
    else:
        fn = star_groups if linkage == "star" else complete_groups
        leader = fn(vec, threshold, subsets=rank_subsets, order=rep_rows, rescore=_rescorer(pool, rep_rows),
                    device=device, **tile_kw)
    return _assemble(pool, hash_label, reps, leader, keep), int(np.sum(leader != np.arange(len(reps))))


def _assemble(pool: Pool, hash_label: np.ndarray, reps: np.ndarray, leader: np.ndarray,
              keep: str) -> list[tuple[int, np.ndarray]]:
    """(keeper, members) groups from the greedy's leader (a rank into `reps`) per representative;
    the other files of each byte-identical set follow their representative."""
    n = len(pool.ids)
    keeper_of_label = np.full(n, -1, dtype=np.int64)
    keeper_of_label[hash_label[reps]] = reps[leader]
    keeper = keeper_of_label[hash_label]
    exact_only = keeper < 0  # sets of identical files none of which has a vector
    keeper[exact_only] = n + hash_label[exact_only]  # a key of their own, outside 0..n-1
    groups = []
    for members in groups_of(keeper):
        k = int(keeper[members[0]])
        groups.append((k if k < n else choose_keeper(members, keep, pool.info, pool.vectors), members))
    return groups


def _verified_groups(
    pool: Pool,
    hash_label: np.ndarray,
    keep: str,
    linkage: str,
    mode: str,
    verifier: PairVerifier,
    k: int,
    floor: float,
    *,
    n_clusters: int | None,
    probes: int,
    device: torch.device,
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Groups from confirmed pairs: candidates are the nearest neighbours among one vector per set
    of byte-identical files (so identical files do not crowd out a set's neighbours); the verifier
    checks them on the images; the greedy (`edge_groups`) or union-find (single) links them."""
    assert pool.vectors is not None
    vec_label = hash_label[pool.node_of_row]
    _, first = np.unique(vec_label, return_index=True)
    rows = np.sort(first)  # vector rows, one per byte-identical set
    vectors = pool.vectors[rows]  # one gathered copy for the clustering and the neighbour search
    subsets = None
    if mode == "clustered":
        subsets = cluster_subsets(vectors, n_clusters=n_clusters, probes=probes, device=device)
    i, j, _ = knn_pairs(vectors, k, floor, subsets=subsets, device=device)
    del vectors
    from_thumbs = 0
    thumbnails = getattr(verifier, "thumbnails", None)
    if thumbnails is not None:  # a second source: copies the encoder's neighbours miss (resize, crop, turn)
        thumbs = thumbnails(pool.node_of_row[rows])
        t_subsets = None
        if mode == "clustered":
            t_subsets = cluster_subsets(thumbs, n_clusters=n_clusters, probes=probes, device=device)
        ti, tj, _ = knn_pairs(thumbs, k, THUMB_FLOOR, subsets=t_subsets, device=device)
        key = np.unique(np.concatenate([i * len(rows) + j, ti * len(rows) + tj]))
        from_thumbs = len(key) - len(i)
        i, j = key // len(rows), key % len(rows)
    na, nb = pool.node_of_row[rows[i]], pool.node_of_row[rows[j]]
    ok = verifier(na, nb)
    verifier.stats.k, verifier.stats.floor, verifier.stats.from_thumbs = k, floor, from_thumbs
    la, lb = hash_label[na[ok]], hash_label[nb[ok]]
    degree = None
    if keep == "central":  # confirmed copies per set of identical files
        deg_label = np.bincount(np.concatenate([la, lb]), minlength=len(pool.ids))
        degree = deg_label[hash_label]
    order = priority_order(pool.info, keep, degree)
    with_vec = order[pool.info.vec_row[order] >= 0]
    _, first_in_order = np.unique(hash_label[with_vec], return_index=True)
    reps = with_vec[np.sort(first_in_order)]  # points, in priority order
    rank_of_label = np.full(len(pool.ids), -1, dtype=np.int64)
    rank_of_label[hash_label[reps]] = np.arange(len(reps))
    ra, rb = rank_of_label[la], rank_of_label[lb]
    if linkage == "single":
        comps = Components(len(reps))
        comps.add(ra, rb)
        label = comps.result()
        _, lead = np.unique(label, return_index=True)  # the first rank of each component leads it
        leader = lead[np.searchsorted(np.unique(label), label)]
    else:
        leader = edge_groups(len(reps), ra, rb, linkage)
    return _assemble(pool, hash_label, reps, leader, keep), int(np.sum(leader != np.arange(len(reps))))


def _rescorer(pool: Pool, rep_rows: np.ndarray) -> Rescore | None:
    """fp32 cosines of (rank, rank) pairs for the greedy's pairs near the cut when it computes in
    fp16: from the pool's matrix when that is fp32 (GPU storage), else from the store's fp32 rows
    (`pool.fp32_rows`, only the few rows asked for). None: no fp32 rows to read."""
    assert pool.vectors is not None
    fetch = pool.fp32_rows if pool.vectors.dtype == np.float16 else (lambda r: pool.vectors[r])  # type: ignore[index]
    if fetch is None:
        return None

    def rescore(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ra, rb = rep_rows[a], rep_rows[b]
        rows = np.unique(np.concatenate([ra, rb]))
        v = _unit_rows(np.asarray(fetch(rows)))
        va, vb = v[np.searchsorted(rows, ra)], v[np.searchsorted(rows, rb)]
        return np.einsum("ij,ij->i", va, vb)

    return rescore


def _degree(vec: np.ndarray, threshold: float, subsets: list[np.ndarray] | None, device: torch.device,
            chunk: int | None) -> np.ndarray:
    """Neighbours at cosine >= threshold per row (inside clusters when `subsets`)."""
    deg = np.zeros(len(vec), dtype=np.int64)
    for rows in subsets if subsets is not None else [np.arange(len(vec))]:
        for i, j, _ in iter_pairs_above(vec[rows], threshold, device=device, chunk=chunk):
            deg += np.bincount(rows[i], minlength=len(vec)) + np.bincount(rows[j], minlength=len(vec))
    return deg


def _unit_rows(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _group_table(pool: Pool, groups: list[tuple[int, np.ndarray]], block: int = 65536) -> pl.DataFrame:
    """Long table: one row per member with its group (the keeper's id), whether it is kept, its
    cosine to the keeper (1.0 for byte-identical copies; null when either has no vector) and how it
    matches the keeper (exact = same bytes, near = similar vectors, linked = no vector to compare,
    in the group through another member's bytes). Built column-wise over all members at once."""
    schema = {
        "group": pl.String, "group_size": pl.Int64, "id": pl.String, "path": pl.String,
        "kept": pl.Boolean, "similarity": pl.Float32, "match": pl.String,
    }
    if not groups:
        return pl.DataFrame(schema=schema)
    member = np.concatenate([np.concatenate([[k], m[m != k]]) for k, m in groups]).astype(np.int64)
    size = np.array([len(m) for _, m in groups], dtype=np.int64)
    keeper = np.repeat(np.array([k for k, _ in groups], dtype=np.int64), size)
    kh, mh = pool.hashes[keeper], pool.hashes[member]
    same_bytes = present(kh) & (kh == mh)
    sim = np.full(len(member), np.nan, dtype=np.float32)
    if pool.vectors is not None:
        rk, rm = pool.info.vec_row[keeper], pool.info.vec_row[member]
        both = np.flatnonzero((rk >= 0) & (rm >= 0))
        for s in range(0, len(both), block):  # fp32 rows of the members only, a block at a time
            sel = both[s : s + block]
            sim[sel] = np.einsum("ij,ij->i", _unit_rows(pool.vectors[rk[sel]]), _unit_rows(pool.vectors[rm[sel]]))
    sim[same_bytes] = 1.0
    kept = member == keeper
    match = np.where(kept, "self", np.where(same_bytes, "exact", np.where(np.isnan(sim), "linked", "near")))
    df = pl.DataFrame({
        "group": pool.ids[keeper].tolist(), "group_size": np.repeat(size, size), "id": pool.ids[member].tolist(),
        "path": pool.paths[member].tolist(), "kept": kept, "similarity": pl.Series(sim).fill_nan(None),
        "match": match.tolist(),
    }, schema=schema)
    return df.sort(["group_size", "group", "kept", "path"], descending=[True, False, True, False])


# ------------------------------------------------------------------------------------------------
# writing results
# ------------------------------------------------------------------------------------------------
def write_outputs(result: DedupResult, pool: Pool, out_dir: str | Path) -> list[str]:
    """dedup_groups.parquet (the table), dedup_keep.csv (every point neither removed nor failed:
    an image that failed to decode or embed is no training image) and dedup_remove.csv (the
    duplicates to drop, with their group and similarity)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = ~_in_table(pool, result.table.filter(~pl.col("kept"))["id"])
    if pool.failed is not None:
        keep &= ~pool.failed
    remove_df = result.table.filter(~pl.col("kept")).select("id", "path", "group", "similarity", "match")
    files = [out / "dedup_groups.parquet", out / "dedup_keep.csv", out / "dedup_remove.csv"]
    write_atomic(files[0], result.table.write_parquet)
    write_atomic(files[1], lambda tmp: _write_keep_csv(tmp, pool, np.flatnonzero(keep)))
    write_atomic(files[2], remove_df.write_csv)
    return [str(f) for f in files]


def _write_keep_csv(path: Path, pool: Pool, keep: np.ndarray, block: int = 1 << 20) -> None:
    """id,path of the kept points, a block of rows at a time (a 10M-row list of strings is ~1 GiB)."""
    with open(path, "wb") as f:
        for s in range(0, max(len(keep), 1), block):
            rows = keep[s : s + block]
            pl.DataFrame({"id": pool.ids[rows].tolist(), "path": pool.paths[rows].tolist()},
                         schema={"id": pl.String, "path": pl.String}).write_csv(f, include_header=s == 0)


def write_payload(store: Store, collection: str, result: DedupResult, pool: Pool) -> None:
    """`dup_group` (the keeper's id) and `is_duplicate` on group members; every other point of this
    run gets is_duplicate=false and no group, so tags from an earlier run never linger."""
    items: dict[str, dict] = {}
    for gid, pid, kept in result.table.select("group", "id", "kept").iter_rows():
        items[pid] = {"dup_group": gid, "is_duplicate": not kept}
    if items:
        store.set_payloads(collection, items)
    others = np.flatnonzero(~_in_table(pool, result.table["id"]))
    for s in range(0, len(others), 100_000):  # a block of id strings at a time
        store.set_payload(collection, pool.ids[others[s : s + 100_000]].tolist(),
                          {"dup_group": None, "is_duplicate": False})
    store.flush()


def _in_table(pool: Pool, ids: pl.Series) -> np.ndarray:
    """Mask over the pool's points: True for those whose id is in `ids` (ids of this pool)."""
    mask = np.zeros(len(pool.ids), dtype=bool)
    if len(ids):
        pos, found = lookup(pool.ids, text_column(ids.to_list()))
        mask[pos[found]] = True
    return mask


class TooManyDuplicates(ValueError):
    """A run would remove more than MAX_SHARE of the pool as near copies: nothing was written."""

    def __init__(self, result: DedupResult, sample: NeighbourSample | None, cut: CutChoice | None) -> None:
        self.result, self.sample, self.cut = result, sample, cut
        share = f"{100 * result.near_share:.1f}% of the pool as near copies (more than {100 * MAX_SHARE:.0f}%)"
        if cut is None:  # verified: every pair was confirmed on the images, there is no cut to move
            msg = (f"would remove {share}, each confirmed on the images: nothing written; look at the groups with "
                   "`curate dedup --no-tags --out DIR --force` first, then re-run with --force to write them")
        else:
            msg = (f"threshold {result.threshold:.4g} would remove {share}: nothing written; suggested threshold "
                   f"{cut.cut:.4f}, or --force to write these groups")
        super().__init__(msg)


def run_dedup(
    store: Store,
    collection: str,
    encoder: str | None,
    out_dir: str | Path | None,
    *,
    threshold: float | None = None,
    exact_only: bool = False,
    where: list[Condition] | None = None,
    write_tags: bool = True,
    force: bool = False,
    sample: int = CUT_SAMPLE,
    verify: str = "auto",
    workers: int | None = None,
    progress: Progress | None = None,
    **options: object,
) -> DedupResult:
    """Load, find groups, write outputs and payload.

    `verify` (auto, on, off): near pairs are candidates from the nearest neighbours confirmed on the
    image files (curate.dedup.verify); `auto` verifies unless `threshold` is given or the pool's
    files cannot be read (imported vectors, moved files), and then groups by the cosine cut.

    `exact_only`: byte-identical files only, no vectors read. Otherwise `encoder` may be None when
    the collection holds one encoder, and `threshold=None` derives the cut from the pool
    (curate.dedup.cut). A run that would remove more than MAX_SHARE of the pool as near copies
    raises TooManyDuplicates and writes nothing, unless `force`. `options` go to `find_groups`."""
    family = None
    if exact_only:
        encoder = None
        if not store.has_collection(collection):
            store.require_encoder(collection, None)  # raises the standard "collection not found" error
    else:
        encoder = store.require_encoder(collection, encoder)
        family = (store.encoders(collection).get(encoder) or {}).get("family")
    pool = load_pool(store, collection, encoder, where)
    center = bool(options.get("center"))
    has_vectors = not exact_only and pool.vectors is not None and len(pool.vectors) >= 2
    engine = options.get("engine")
    use, note = resolve_verify(verify, pool, threshold, engine=engine) if has_vectors else (False, None)
    if use:
        verifier = PairVerifier(pool.paths, hashes=pool.hashes, workers=workers, progress=progress)
        result = find_groups(pool, threshold=threshold, verifier=verifier, **options)  # type: ignore[arg-type]
        if not force and result.near_share > MAX_SHARE:  # the same stop-and-ask as the cut path
            raise TooManyDuplicates(result, None, None)
    else:
        ns = choice = None
        if has_vectors:
            ns, choice = pool_cut(pool, family, center=center, sample=sample, device=options.get("device"))
        given = threshold
        if threshold is None and choice is not None:
            threshold = choice.cut
        result = find_groups(pool, threshold=None if exact_only else threshold, **options)  # type: ignore[arg-type]
        result.cut = choice if given is None else None
        result.verify_note = note
        if not force and ns is not None and choice is not None and result.near_share > MAX_SHARE:
            raise TooManyDuplicates(result, ns, choice)
    pool.vectors = pool.fp32_rows = None  # groups found: the matrix goes before the outputs are built
    if out_dir is not None:
        result.files = write_outputs(result, pool, out_dir)
    if write_tags:
        write_payload(store, collection, result, pool)
    return result


VERIFY_CHECK = 1000  # image paths stat-ed to decide whether `--verify auto` can read the pool's files


def resolve_verify(verify: str, pool: Pool, threshold: float | None, *,
                   engine: Any = None) -> tuple[bool, str | None]:
    """(verify or not, why not when `auto` turned it off). `auto` checks a sample of the paths: a
    pool whose files are gone (or were never here: imported vectors) is grouped by the cut, and so
    is a run on Ray (verification has no Ray path yet; `on` with Ray is refused by find_groups)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"--verify {verify!r}: use one of {', '.join(VERIFY_MODES)}")
    if verify == "off" or (verify == "auto" and threshold is not None):
        return False, None
    if verify == "on":
        return True, None
    with_vec = np.flatnonzero(pool.info.vec_row >= 0)
    rng = np.random.default_rng(0)
    pick = rng.choice(with_vec, size=min(VERIFY_CHECK, len(with_vec)), replace=False)
    missing = unreadable_paths(pool.paths[pick].tolist())
    if missing:
        return False, (f"verification off: {len(missing)} of {len(pick)} checked image files cannot be read "
                       f"(e.g. {missing[0]}); near copies grouped by the cosine cut")
    if engine is not None:
        return False, "verification off: --engine ray groups near copies by the cosine cut (no Ray path yet)"
    return True, None


def pool_cut(pool: Pool, family: str | None, *, center: bool = False, sample: int = CUT_SAMPLE,
             device: object = None, relative: float = RELATIVE) -> tuple[NeighbourSample, CutChoice]:
    """Nearest-neighbour sample of the pool (in the space find_groups compares: centered when
    `center`) and the cut derived from it."""
    assert pool.vectors is not None
    vectors = centered(pool.vectors) if center else pool.vectors
    ns = nearest_neighbour_sample(vectors, sample, device=device)  # type: ignore[arg-type]
    return ns, derive_cut(ns.sims, family, centered=center, relative=relative)


def suggest_threshold(
    store: Store,
    collection: str,
    encoder: str | None,
    *,
    where: list[Condition] | None = None,
    sample: int = CUT_SAMPLE,
    device: str | torch.device | None = None,
    center: bool = False,
) -> tuple[NeighbourSample, Pool, CutChoice]:
    """Nearest-neighbour similarities of a sample of the pool and the cut `dedup` would derive from
    them, for `--suggest` (in the same space as `find_groups`: centered when `center`)."""
    encoder = store.require_encoder(collection, encoder)
    family = (store.encoders(collection).get(encoder) or {}).get("family")
    pool = load_pool(store, collection, encoder, where)
    if pool.vectors is None or len(pool.vectors) < 2:
        raise ValueError(f"fewer than 2 vectors for encoder {encoder!r}; nothing to compare")
    ns, choice = pool_cut(pool, family, center=center, sample=sample, device=device)
    return ns, pool, choice


def sample_verification(ns: NeighbourSample, pool: Pool, verify: str, threshold: float | None, *,
                        progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, VerifyStats] | str | None:
    """For --suggest: verify the sampled nearest-neighbour pairs at cosine >= the candidate floor.
    Returns (same-picture mask, indices into the sample, stats), a line saying why verification is
    off (auto), or None when it is off by choice."""
    use, note = resolve_verify(verify, pool, threshold)
    if not use:
        return note
    floor = CANDIDATE_FLOOR if threshold is None else threshold
    near = np.flatnonzero(ns.sims >= floor)
    verifier = PairVerifier(pool.paths, hashes=pool.hashes, progress=progress)
    ok = verifier(pool.node_of_row[ns.rows[near]], pool.node_of_row[ns.neighbours[near]])
    verifier.stats.floor = floor
    return ok, near, verifier.stats
