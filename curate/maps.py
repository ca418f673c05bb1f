"""`curate map`: a 2-D UMAP layout of one encoder's vectors, stored back in the store.

Where the coordinates live: payload fields `map_<encoder>_x` / `map_<encoder>_y` on each point
(`<encoder>` with anything but letters, digits and '_' turned into '_'), plus one record per
encoder under `maps` in the collection's metadata with the settings used. So `curate report`
and later runs read them back instead of recomputing:
  - same settings, every point already placed -> nothing to do;
  - same settings, the pool grew by at most as many points as are placed -> only the new points
    are placed, each at the similarity-weighted mean of its k nearest placed neighbours in the
    embedding space (the starting position UMAP's own transform uses), so old points never move;
  - new settings, or a pool that more than doubled -> a fresh layout.

Large pools: UMAP is fitted on a seeded sample (`sample` rows, reduced to `pca_dims` with PCA
first), and the rest is placed relative to that layout, in chunks streamed from the resident
matrix (never a second N x d copy):
  - pools of at most `transform_max` points: UMAP's own transform (a few ms per point: it
    optimizes every point's position for many epochs);
  - larger pools: k-NN interpolation, each point at the membership-weighted mean of its k nearest
    fitted points' 2-D positions (cosine in the same PCA space; the position UMAP's transform
    starts from), several times cheaper per point and linear in the pool, so a 10M pool takes
    under an hour of CPU instead of a day or more. On the synthetic pools of benchmarks/map.py
    it keeps every held-out point in its cluster where the transform strands some in another
    one (BENCHMARKS.md).
Fitting costs most and its memory grows with the sample; structure that the sample misses
(clusters rarer than ~1/sample of the pool) gets no room of its own.
All or nothing: a fresh layout first drops the map's record from the collection's metadata and
writes it back only after every coordinate is stored, so a run killed meanwhile leaves no map
(never half of a new one mixed with the old); the next run starts over.
Reproducible: a fixed seed makes UMAP single-threaded and every step deterministic.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from curate.store import Store
from curate.store.columnar import load_id_column
from curate.store.idcolumn import IdColumn

Progress = Callable[[int, int], None]  # (done, total)

WRITE_CHUNK = 100_000  # coordinates written per set_payloads call
# Larger pools place the points outside the fitted sample by k-NN interpolation: measured no worse
# in cluster purity, and the transform's ms per point would put a 100k pool past 3 minutes.
TRANSFORM_MAX = 50_000


@dataclass(frozen=True)
class MapSettings:
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0
    sample: int = 25_000  # fit UMAP on at most this many points; place the rest (transform or interpolation)
    pca_dims: int = 50  # reduce to this many dimensions before UMAP (when the vectors have more)
    n_epochs: int | None = None  # UMAP's default (200 for large data, 500 for small)
    chunk: int = 20_000  # transform (or interpolate) this many points at a time
    transform_max: int = TRANSFORM_MAX  # above this pool size, interpolate instead of transform

    def check(self) -> None:
        if self.n_neighbors < 2:
            raise ValueError(f"--neighbors {self.n_neighbors} must be at least 2")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError(f"--min-dist {self.min_dist} must be between 0 and 1")
        if self.sample < self.n_neighbors + 1:
            raise ValueError(f"--sample {self.sample} must exceed --neighbors ({self.n_neighbors})")
        if self.pca_dims < 2:
            raise ValueError(f"--pca-dims {self.pca_dims} must be at least 2")
        if self.transform_max < 0:
            raise ValueError(f"--transform-max {self.transform_max} must be at least 0")

    def record(self) -> dict[str, Any]:
        """What decides the layout, as stored in the collection's metadata. Neither the chunk size nor
        the transform/interpolation switch is in it: a stored map of either kind is kept (--refit redoes it)."""
        d = asdict(self)
        d.pop("chunk")
        d.pop("transform_max")
        d["metric"] = "cosine"
        return d


@dataclass
class MapResult:
    encoder: str
    fields: tuple[str, str]
    total: int
    fitted: int = 0  # points UMAP was fitted on
    transformed: int = 0  # points placed by UMAP's transform
    interpolated: int = 0  # points placed by k-NN interpolation against the fitted sample
    placed: int = 0  # new points placed by their neighbours (grown pool)
    reused: int = 0  # points whose stored coordinates were kept
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.total == self.reused:
            return f"map of {self.encoder}: {self.total} points, already up to date (nothing to do)"
        parts = []
        if self.fitted:
            parts.append(f"fitted on {self.fitted}")
        if self.transformed:
            parts.append(f"transformed {self.transformed}")
        if self.interpolated:
            parts.append(f"interpolated {self.interpolated}")
        if self.placed:
            parts.append(f"placed {self.placed} new by their neighbours")
        if self.reused:
            parts.append(f"kept {self.reused}")
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        return f"map of {self.encoder}: {self.total} points ({', '.join(parts)}; {secs})"


def map_fields(encoder: str) -> tuple[str, str]:
    slug = re.sub(r"[^A-Za-z0-9_]", "_", encoder)
    return f"map_{slug}_x", f"map_{slug}_y"


def _coordinate_batches(store: Store, collection: str, encoder: str) -> Iterator[list[tuple[str, float, float]]]:
    """The coordinates already in the store for this encoder, one scan batch at a time: (id, x, y)."""
    fx, fy = map_fields(encoder)
    for batch in store.scan_payload(collection, fields=[fx, fy]):
        yield [(pid, float(p[fx]), float(p[fy])) for pid, p in batch
               if p.get(fx) is not None and p.get(fy) is not None]


def stored_coordinates(store: Store, collection: str, encoder: str) -> dict[str, tuple[float, float]]:
    """Coordinates already in the store for this encoder: id -> (x, y)."""
    return {pid: (x, y) for got in _coordinate_batches(store, collection, encoder) for pid, x, y in got}


def _stored_rows(store: Store, collection: str, encoder: str, ids: IdColumn) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the rows of `ids` with stored coordinates, their (x, y) [N, 2] float32): one streaming
    scan into row arrays, not an id -> (x, y) dict of the pool."""
    placed, xy = np.zeros(len(ids), bool), np.zeros((len(ids), 2), np.float32)
    for got in _coordinate_batches(store, collection, encoder):
        rows = ids.rows(pid for pid, _, _ in got)
        ok = rows >= 0
        placed[rows[ok]] = True
        xy[rows[ok]] = np.array([(x, y) for _, x, y in got], dtype=np.float32).reshape(-1, 2)[ok]
    return placed, xy


def map_pool(
    store: Store,
    collection: str,
    encoder: str | None = None,
    settings: MapSettings | None = None,
    *,
    refit: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> MapResult:
    """Compute (or bring up to date) the 2-D layout of one encoder's vectors and store it."""
    cfg = settings or MapSettings()
    cfg.check()
    enc = store.require_encoder(collection, encoder)
    say = log or (lambda _m: None)
    fx, fy = map_fields(enc)
    t0 = time.perf_counter()
    ids, X = load_id_column(store, collection, enc)  # sorted ids as one bytes column, no str per vector
    res = MapResult(enc, (fx, fy), len(ids), seconds={"read": time.perf_counter() - t0})
    if len(ids) < 3:
        raise ValueError(f"collection {collection!r} has {len(ids)} vectors for {enc}; a map needs at least 3")
    meta = store.get_meta(collection)
    prior = meta.get("maps", {}).get(enc, {})
    placed, have = np.zeros(len(ids), bool), None
    if prior.get("settings") == cfg.record() and not refit:
        placed, have = _stored_rows(store, collection, enc, ids)
    n_old = int(placed.sum())
    if n_old == len(ids):
        res.reused = n_old
        return res
    if n_old >= 3 and len(ids) - n_old <= n_old:
        say(f"{len(ids) - n_old} new points; placing them by their nearest mapped neighbours")
        t = time.perf_counter()
        # against at most `sample` old points (seeded), new points streamed in chunks: bounded memory
        # and time linear in the new points on a 10M pool (all old points when the pool is small)
        old_rows, new_rows = np.flatnonzero(placed), np.flatnonzero(~placed)
        if len(old_rows) > cfg.sample:
            old_rows = np.sort(np.random.default_rng(cfg.seed).choice(old_rows, size=cfg.sample, replace=False))
        assert have is not None
        old_xy = have[old_rows]
        del have
        anchors = X[old_rows]
        xy = np.empty((len(new_rows), 2), dtype=np.float32)
        for lo in range(0, len(new_rows), cfg.chunk):
            xy[lo : lo + cfg.chunk] = place_by_neighbours(anchors, old_xy, X[new_rows[lo : lo + cfg.chunk]],
                                                         k=cfg.n_neighbors)
        res.placed, res.reused = len(xy), n_old
        res.seconds["place"] = time.perf_counter() - t
        new_ids = ids.take(new_rows)
    else:
        if enc in meta.get("maps", {}):  # all or nothing: no record while the new coordinates are written
            meta["maps"].pop(enc)
            store.set_meta(collection, meta)
            store.flush()
        xy, new_ids = layout(X, cfg, res, progress, say), ids
    del X
    t = time.perf_counter()
    for lo in range(0, len(new_ids), WRITE_CHUNK):  # one dict per point for a chunk, not for the pool
        store.set_payloads(collection, {
            pid: {fx: round(float(a), 5), fy: round(float(b), 5)}
            for pid, (a, b) in zip(new_ids[lo : lo + WRITE_CHUNK], xy[lo : lo + WRITE_CHUNK], strict=True)
        })
    meta = store.get_meta(collection)  # re-read: never overwrite what another step wrote meanwhile
    meta.setdefault("maps", {})[enc] = {"settings": cfg.record(), "fields": [fx, fy], "points": len(ids),
                                        "fitted_on": res.fitted or prior.get("fitted_on", 0)}
    store.set_meta(collection, meta)
    store.flush()
    res.seconds["write"] = time.perf_counter() - t
    return res


@dataclass
class FittedSample:
    """UMAP fitted on a seeded sample of X: what placing the other rows needs."""

    X: np.ndarray
    rows: np.ndarray  # sorted rows of X the model was fitted on
    pca: Any  # sklearn PCA, or None when X already has at most pca_dims columns
    model: Any  # umap.UMAP
    anchors: np.ndarray  # the sample in the reduced space, float32 [m, p]
    xy: np.ndarray  # the sample's 2-D positions, float32 [m, 2]

    def reduce(self, rows: np.ndarray) -> np.ndarray:
        part = self.X[rows].astype(np.float32)  # a fp16 (out-of-core) pool: upcast this chunk only
        return (self.pca.transform(part) if self.pca is not None else part).astype(np.float32)

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """UMAP's own transform (optimizes each point's position: a few ms per point)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.transform(self.reduce(rows)).astype(np.float32)

    def interpolate(self, rows: np.ndarray, k: int) -> np.ndarray:
        """k-NN interpolation against the sample (the position UMAP's transform starts from)."""
        return interpolate_positions(self.anchors, self.xy, self.reduce(rows), k)


def fit_sample(X: np.ndarray, cfg: MapSettings) -> FittedSample:
    from sklearn.decomposition import PCA

    n = X.shape[0]
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n, size=cfg.sample, replace=False)) if n > cfg.sample else np.arange(n)
    pca = None
    if X.shape[1] > cfg.pca_dims and len(rows) > cfg.pca_dims:
        pca = PCA(n_components=cfg.pca_dims, random_state=cfg.seed, svd_solver="randomized").fit(X[rows])
    fitted = FittedSample(X, rows, pca, _umap(cfg, len(rows)), np.empty(0), np.empty(0))
    fitted.anchors = fitted.reduce(rows)
    fitted.xy = fitted.model.fit_transform(fitted.anchors).astype(np.float32)
    return fitted


def layout(
    X: np.ndarray, cfg: MapSettings, res: MapResult, progress: Progress | None, say: Callable[[str], None]
) -> np.ndarray:
    """Fit UMAP on (a seeded sample of) X and place the rest in chunks; returns [N, 2] float32."""
    n = X.shape[0]
    t = time.perf_counter()
    say(f"fitting UMAP on {min(n, cfg.sample)} of {n} points")
    fitted = fit_sample(X, cfg)
    out = np.empty((n, 2), dtype=np.float32)
    out[fitted.rows] = fitted.xy
    res.fitted = len(fitted.rows)
    res.seconds["fit"] = time.perf_counter() - t
    rest = np.setdiff1d(np.arange(n), fitted.rows, assume_unique=True)
    if not len(rest):
        return out
    interpolate = n > cfg.transform_max
    if interpolate:
        say(f"placing the other {len(rest)} by their {cfg.n_neighbors} nearest fitted points (pool above "
            f"--transform-max {cfg.transform_max})")
    t = time.perf_counter()
    for lo in range(0, len(rest), cfg.chunk):
        rows = rest[lo : lo + cfg.chunk]
        out[rows] = fitted.interpolate(rows, cfg.n_neighbors) if interpolate else fitted.transform(rows)
        if progress:
            progress(min(lo + cfg.chunk, len(rest)), len(rest))
    if interpolate:
        res.interpolated = len(rest)
    else:
        res.transformed = len(rest)
    res.seconds["interpolate" if interpolate else "transform"] = time.perf_counter() - t
    return out


def _umap(cfg: MapSettings, n_fit: int):  # noqa: ANN202 - umap is imported lazily (numba start-up)
    import umap

    return umap.UMAP(
        n_neighbors=min(cfg.n_neighbors, n_fit - 1),
        min_dist=cfg.min_dist,
        metric="cosine",
        random_state=cfg.seed,
        transform_seed=cfg.seed,
        n_epochs=cfg.n_epochs,
        low_memory=True,
        n_jobs=1,  # a seed makes UMAP single-threaded anyway; say so instead of warning
    )


def place_by_neighbours(
    old_x: np.ndarray, old_xy: np.ndarray, new_x: np.ndarray, k: int = 15
) -> np.ndarray:
    """Each new vector at the similarity-weighted mean of its k most similar old vectors' coordinates."""
    from curate.kernels import topk_similarity

    k = min(k, old_x.shape[0])
    sims, idx = topk_similarity(new_x, old_x, k, device="cpu")
    w = np.clip(sims, 0.0, None) + 1e-6
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", w, old_xy[idx]).astype(np.float32)


def membership_weights(sims: np.ndarray) -> np.ndarray:
    """UMAP's fuzzy membership of each of k neighbours (rows of cosine similarities, descending):
    exp(-(d - d_nearest) / sigma), cosine distance d, sigma per row such that the k weights sum to
    log2(k) (UMAP's smooth k-NN distance); rows normalized to sum to 1."""
    d = 1.0 - sims.astype(np.float64)
    gap = np.maximum(d - d[:, :1], 0.0)
    target = np.log2(max(sims.shape[1], 2))
    lo = np.zeros(len(d))
    hi = np.full(len(d), np.inf)
    sigma = np.ones(len(d))
    for _ in range(64):  # bisection on every row at once (the sum grows with sigma)
        too_big = np.exp(-gap / sigma[:, None]).sum(1) > target
        hi = np.where(too_big, sigma, hi)
        lo = np.where(too_big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    w = np.exp(-gap / sigma[:, None])
    return w / w.sum(1, keepdims=True)


def interpolate_positions(anchors: np.ndarray, anchor_xy: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """2-D positions of `queries`, each the membership-weighted mean of its k most cosine-similar
    `anchors`' positions `anchor_xy` (exact blocked top-k: memory is one tile, never queries x anchors)."""
    from curate.kernels import topk_similarity

    sims, idx = topk_similarity(queries, anchors, min(k, len(anchors)), device="cpu")
    w = membership_weights(sims)
    return np.einsum("nk,nkd->nd", w, anchor_xy[idx].astype(np.float64)).astype(np.float32)


def load_map(store: Store, collection: str, encoder: str | None = None) -> tuple[str, list[str], np.ndarray]:
    """(encoder, ids, [N, 2] coordinates) of the stored layout; a clear error when there is none."""
    enc = store.require_encoder(collection, encoder)
    # no record: no map, or a run that stopped while writing one (its coordinates are not a whole map)
    have = stored_coordinates(store, collection, enc) if enc in store.get_meta(collection).get("maps", {}) else {}
    if not have:
        raise ValueError(f"no map of {enc} in {collection!r} yet; run 'curate map --collection {collection}' first")
    ids = sorted(have)
    return enc, ids, np.array([have[i] for i in ids], dtype=np.float32).reshape(-1, 2)
