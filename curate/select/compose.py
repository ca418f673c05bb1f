"""Compose strategies into one selection, on arrays (the store-facing side is run.py).

Order, as in Lightly's selection: thresholds first (they shrink the candidates), then balance
quotas are planned on what is left, then one greedy procedure picks under those quotas:

  diversity   argmax over candidates of  dist_to_centers^s_d * prod_j input_j^s_j  (k-center)
  typicality  TypiClust cluster coverage; within a cluster argmax typicality * prod_j input_j^s_j
  (neither)   rank by prod_j input_j^s_j

Multiplying objectives makes their scales irrelevant (argmax of c * f is argmax of f), so inputs
need no normalization, only to be >= 0: similarity enters as (1 + cos) / 2.

`--strategy auto` (the default) resolves by budget; see `resolve_auto`. Where it resolves to
typicality on a pool without cluster structure (`structure.cluster_structure` below
AUTO_STRUCTURE_MIN: its k-means clusters separate no better than a Gaussian reference's, whatever
the budget), it keeps TypiClust's clusters and coverage order but takes a seeded random image of
each cluster ("auto->stratified"): without cluster structure the most typical image is no better a
representative than any member, and a random one varies with the seed instead of repeating one
cluster solution's accident (measured in BENCHMARKS.md, label efficiency).

Row order never matters: `select` first puts the rows in a canonical order (by id when the pool has
ids, else by a hash of each vector's bytes), runs there, and maps the picks back. So every seeded
choice (k-means++ seeds, samples, the random input) and every tie-break ("lowest row") is a
function of the vectors, ids, payload and seed, and the API on vectors in file order picks the
same images as the CLI on the store (which reads points sorted by id).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from curate.select.balance import QuotaPlan, check_keys, modes_of, plan_quotas
from curate.select.config import AUTO_STRUCTURE_MIN, AUTO_TYPICALITY_MAX, SelectionConfig, Step
from curate.select.density import knn_density
from curate.select.kcenter import kcenter_select
from curate.select.similarity import max_similarity
from curate.select.structure import cluster_structure
from curate.select.typicality import (
    Clustering,
    cluster_pool,
    n_clusters_for,
    typiclust_select,
)
from curate.store.idcolumn import IdColumn


def resolve_auto(n_centers: int, budget: int) -> str:
    """'typicality' at tiny budgets, 'density-kcenter' otherwise (the documented rule)."""
    return "typicality" if n_centers + budget <= AUTO_TYPICALITY_MAX else "density-kcenter"


@dataclass
class Pool:
    """What a selection needs, row-aligned: candidates and existing centers only."""

    X: np.ndarray  # (N, d) float32, L2-normalized rows
    candidate: np.ndarray  # bool: may be picked
    center: np.ndarray  # bool: labeled or picked in an earlier round (never picked again)
    payloads: list[dict[str, Any]]
    uncertainty: np.ndarray | None = None  # per row, NaN = no prediction
    query: np.ndarray | None = None  # (q, d) query vectors for the similarity input
    ids: list[str] | None = None  # point ids: the canonical row order (see module doc)


@dataclass
class Selection:
    indices: np.ndarray  # pool rows in pick order
    columns: dict[str, np.ndarray]  # per-pick scores that led to the pick
    strategy: str  # the resolved strategy, e.g. "auto->typicality"
    messages: list[str] = field(default_factory=list)


class _Inputs:
    """Lazily computed per-row inputs, shared by thresholds, weights and the manifest."""

    def __init__(self, pool: Pool, cfg: SelectionConfig, budget: int, device: torch.device,
                 engine: Any = None) -> None:
        self.pool, self.cfg, self.budget, self.device, self.engine = pool, cfg, budget, device, engine
        self.values: dict[str, np.ndarray] = {}
        self._clusters: Clustering | None = None

    def clusters(self) -> Clustering:
        if self._clusters is None:
            k = n_clusters_for(len(self.pool.X), int(self.pool.center.sum()), self.budget, self.cfg.max_clusters)
            fit = cluster_pool if self.engine is None else self.engine.cluster_pool
            self._clusters = fit(self.pool.X, k, k=self.cfg.knn, seed=self.cfg.seed, device=self.device)
        return self._clusters

    def get(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.values[name]
        p = self.pool
        if name == "density":
            v = knn_density(p.X, self.cfg.knn, seed=self.cfg.seed, device=self.device)
        elif name == "typicality":
            v = self.clusters().typicality
        elif name == "uncertainty":
            if p.uncertainty is None:
                raise ValueError("the uncertainty input needs a predictions file")
            v = p.uncertainty
        elif name == "similarity":
            if p.query is None:
                raise ValueError("the similarity input needs query images or text")
            v = max_similarity(p.X, p.query, device=self.device)
        elif name == "random":
            v = 1.0 - np.random.default_rng(self.cfg.seed).random(len(p.X))  # in (0, 1]
        elif name.startswith("field:"):
            key = name[6:]
            v = np.array([_number(pl.get(key)) for pl in p.payloads], dtype=np.float64)
            if np.isnan(v).all():
                raise ValueError(f"input {name}: no point has a numeric {key!r} field")
        else:
            raise ValueError(f"unknown input {name!r}")
        self.values[name] = np.asarray(v, dtype=np.float64)
        return self.values[name]


def _number(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return float("nan") if v is None else float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _weight_value(name: str, v: np.ndarray) -> np.ndarray:
    if name == "similarity":
        return (1.0 + v) / 2.0
    if np.nanmin(v) < 0:
        raise ValueError(f"input {name} has negative values; weights need values >= 0 (use a threshold instead)")
    return v


def canonical_order(pool: Pool) -> np.ndarray:
    """Row permutation that sorts the pool by id, or (no ids) by a hash of each row's float bits,
    ties (identical vectors) by payload text and then row. Integer hashing is exact, so the key
    of a row never depends on where the row sits."""
    n = len(pool.X)
    if pool.ids is not None:
        if len(pool.ids) != n:
            raise ValueError(f"pool has {n} vectors but {len(pool.ids)} ids")
        if isinstance(pool.ids, IdColumn):  # sorted and unique by construction: no per-id decode
            return np.arange(n)
        if all(a < b for a, b in itertools.pairwise(map(str, pool.ids))):  # store reads come sorted:
            return np.arange(n)  # no N-string array, no argsort, and `_permuted` skips its copy
        ids = np.asarray([str(i) for i in pool.ids])
        order = np.argsort(ids, kind="stable")
        if n > 1 and (ids[order[1:]] == ids[order[:-1]]).any():
            raise ValueError("pool ids must be unique")
        return order
    return np.lexsort((np.arange(n), [repr(sorted(p.items())) for p in pool.payloads], row_hash(pool.X)))


def row_hash(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's float32 bits (wrap-around integer arithmetic), in row chunks."""
    bits = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32)
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(bits), dtype=np.uint64)
    step = max(1, (1 << 24) // max(1, bits.shape[1]))
    with np.errstate(over="ignore"):
        for r0 in range(0, len(bits), step):
            b = bits[r0 : r0 + step].astype(np.uint64)
            out[r0 : r0 + step] = ((b ^ (b >> np.uint64(7))) * mult).sum(axis=1, dtype=np.uint64)
    return out


def _permuted(pool: Pool, order: np.ndarray) -> Pool:
    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.asarray(a)[order]

    if np.array_equal(order, np.arange(len(order))):
        return pool  # already canonical: no copy of a pool-sized matrix
    return Pool(np.ascontiguousarray(pool.X[order]), pool.candidate[order], pool.center[order],
                [pool.payloads[i] for i in order], take(pool.uncertainty), pool.query,
                None if pool.ids is None else [pool.ids[i] for i in order])


def select(
    pool: Pool,
    cfg: SelectionConfig,
    budget: int,
    *,
    device: torch.device,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
) -> Selection:
    """Run the composed selection on the pool in canonical row order; indices refer to `pool`'s rows.
    Never returns fewer than `budget` picks without a message. `engine`: None (this process) or a
    `curate.select.ray_select.RayEngine` (k-center and typicality as Ray tasks)."""
    order = canonical_order(pool)
    if np.array_equal(order, np.arange(len(order))):  # already canonical (the store path): no copy
        return _select(pool, cfg, budget, device=device, log=log, engine=engine)
    sel = _select(_permuted(pool, order), cfg, budget, device=device, log=log, engine=engine)
    sel.indices = order[sel.indices].astype(np.int64)
    return sel


def _select(
    pool: Pool,
    cfg: SelectionConfig,
    budget: int,
    *,
    device: torch.device,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
) -> Selection:
    say = log or (lambda _m: None)
    steps = list(cfg.steps)
    label = cfg.strategy
    auto = next((s for s in steps if s.type == "auto"), None)
    choice = None
    if auto is not None:
        choice = resolve_auto(int(pool.center.sum()), budget)
        label = label.replace("auto", f"auto->{choice}", 1)
        steps.remove(auto)
        if choice == "typicality":
            if auto.min_distance is not None:
                say("note: --min-distance is ignored because auto chose typicality for this budget")
            steps.insert(0, Step("typicality"))
        else:
            steps[:0] = [Step("diversity", min_distance=auto.min_distance), Step("weights", "density")]
    inputs = _Inputs(pool, cfg, budget, device, engine)
    messages: list[str] = []
    proc = next((s for s in steps if s.type in ("diversity", "typicality", "cluster_margin", "badge")), None)
    if engine is not None and (proc is None or proc.type not in ("diversity", "typicality")):
        what = proc.type.replace("_", "-") if proc is not None else "ranking by weights"
        messages.append(f"{what} has no --engine ray path (only k-center and typicality do); it ran locally")
    cand = pool.candidate.copy()

    # 1. thresholds, and rows a weight input cannot score (no prediction, missing field)
    used = [s.input for s in steps if s.type in ("weights", "threshold") and s.input]
    for name in dict.fromkeys(used):
        v = inputs.get(name)
        missing = cand & np.isnan(v)
        if missing.any():
            what = "have no prediction" if name == "uncertainty" else f"have no value for {name}"
            messages.append(f"{int(missing.sum())} candidates {what} and are not selected")
            cand &= ~missing
    for s in steps:
        if s.type != "threshold":
            continue
        v = inputs.get(s.input or "")
        keep = np.ones(len(v), dtype=bool)
        if s.min is not None:
            keep &= v >= s.min
        if s.max is not None:
            keep &= v <= s.max
        dropped = int((cand & ~keep).sum())
        cand &= keep
        parts = ([f">= {s.min}"] if s.min is not None else []) + ([f"<= {s.max}"] if s.max is not None else [])
        bounds = " and ".join(parts)
        say(f"threshold {s.input} {bounds}: {dropped} candidates removed, {int(cand.sum())} left")

    # 2. weights: product of input^strength
    weight: np.ndarray | None = None
    for s in steps:
        if s.type == "weights" and s.input:
            w = _weight_value(s.input, np.nan_to_num(inputs.get(s.input), nan=0.0)) ** s.strength
            weight = w if weight is None else weight * w

    # 3. balance quotas on the remaining candidates
    plan: QuotaPlan | None = None
    bal = next((s for s in steps if s.type == "balance"), None)
    if bal is not None:
        check_keys(pool.payloads, bal.keys)
        plan = plan_quotas(modes_of(pool.payloads, bal.keys), cand, budget, bal.keys, bal.target)
        messages.extend(plan.messages)
    groups = plan.groups if plan is not None else None
    quotas = plan.quotas if plan is not None else None

    # 4. the greedy procedure
    columns: dict[str, np.ndarray] = {}
    if proc is not None and proc.type == "diversity":
        kw = None if weight is None else weight ** (1.0 / proc.strength)
        centers = np.flatnonzero(pool.center)
        kcenter = kcenter_select if engine is None else engine.kcenter_select
        res = kcenter(pool.X, budget, centers, weights=kw, candidates=cand, groups=groups, quotas=quotas,
                      min_distance=proc.min_distance, device=device)
        idx = res.indices
        columns["distance"] = res.distances
        if res.stopped == "min_distance":
            messages.append(f"stopped at {len(idx)} picks: every remaining candidate is within "
                            f"min_distance {proc.min_distance} of a labeled or picked image")
    elif proc is not None and proc.type in ("cluster_margin", "badge"):
        idx, columns = _active_procedure(proc.type, pool, cfg, cand, weight, budget, groups, quotas, device)
    elif proc is not None:
        cl = inputs.clusters()
        within = None  # typicality, computed only where it ranks (auto->stratified never needs it all)
        if choice == "typicality":
            structure = cluster_structure(pool.X)
            if structure < AUTO_STRUCTURE_MIN:  # NaN (a pool too small to judge) keeps typicality
                within = 1.0 - np.random.default_rng(cfg.seed).random(len(pool.X))  # in (0, 1]
                label = label.replace("auto->typicality", "auto->stratified", 1)
                messages.append(f"auto: the pool's k-means clusters separate no better than in structure-free "
                                f"data of the same spread (structure {structure:.3f} < {AUTO_STRUCTURE_MIN}), so "
                                "a random image of each cluster, not the most typical")
        done = False
        if within is None and weight is None and groups is None:  # typicality alone: rank the contenders
            ranking = cl.ranking(cand).astype(np.float64)
            idx, picked_clusters = typiclust_select(cl.labels, ranking, budget, candidates=cand, centers=pool.center)
            done = not (ranking[idx] == 0).any()  # else a cluster's picks outnumbered its contenders
        if not done:  # weights or quotas may favour any member (or the contenders ran out): rank them all
            if within is None:
                within = cl.typicality.astype(np.float64)
            score = within * (1.0 if weight is None else weight)
            idx, picked_clusters = typiclust_select(cl.labels, score, budget, candidates=cand, centers=pool.center,
                                                    groups=groups, quotas=quotas)
        columns["cluster"] = picked_clusters
        if "typicality" not in inputs.values:  # the manifest column: the picks' values are enough
            typ = np.full(len(pool.X), np.nan)
            typ[idx] = cl.typicality_at(idx)
            inputs.values["typicality"] = typ
    else:
        assert weight is not None  # validated: weights exist when there is no procedure
        idx = _rank(weight, cand, budget, groups, quotas)
    if len(idx) < budget and not any(m.startswith("stopped at") for m in messages):
        messages.append(f"selected {len(idx)} of the budget {budget}: no further candidate passes the "
                        "filters, thresholds and quotas")

    for name, v in inputs.values.items():
        columns[name.replace("field:", "")] = v[idx]
    if weight is not None:
        columns["weight"] = weight[idx]
    if plan is not None:
        columns["group"] = np.array([plan.name(int(g)) for g in plan.groups[idx]], dtype=object)
    return Selection(np.asarray(idx, dtype=np.int64), columns, label, messages)


def _active_procedure(kind: str, pool: Pool, cfg: SelectionConfig, cand: np.ndarray, weight: np.ndarray | None,
                      budget: int, groups: np.ndarray | None, quotas: np.ndarray | None,
                      device: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """cluster-margin (curate.select.cluster_margin) and BADGE (curate.select.badge)."""
    if kind == "cluster_margin":
        from curate.select.cluster_margin import cluster_margin_select

        assert weight is not None  # validated: cluster_margin needs a weights step
        idx, cl = cluster_margin_select(pool.X, weight, budget, candidates=cand, max_clusters=cfg.max_clusters,
                                        seed=cfg.seed, groups=groups, quotas=quotas, device=device)
        return idx, {"cluster": cl}
    from curate.select.badge import badge_select

    idx, dist = badge_select(pool.X, budget, candidates=cand, centers=pool.center, weights=weight, seed=cfg.seed,
                             groups=groups, quotas=quotas, device=device)
    return idx, {"distance": dist}


def _rank(
    weight: np.ndarray, cand: np.ndarray, budget: int, groups: np.ndarray | None, quotas: np.ndarray | None
) -> np.ndarray:
    """Highest weight first (ties: lower row), skipping rows whose quota group is full."""
    rows = np.flatnonzero(cand)
    order = rows[np.lexsort((rows, -weight[rows]))]
    if groups is None or quotas is None:
        return order[:budget]
    count = np.zeros(len(quotas), dtype=np.int64)
    out: list[int] = []
    for r in order:
        g = groups[r]
        if g >= 0 and count[g] < quotas[g]:
            out.append(int(r))
            count[g] += 1
            if len(out) == budget:
                break
    return np.asarray(out, dtype=np.int64)
