"""Balance: hard quotas per metadata mode, turned into (group per row, quota per group).

A *mode* is the value of one metadata key (`weather`), or the joint values of several keys
(`weather,time_of_day` -> cells such as rain/night). Targets are fractions (summing to 1) or
counts (summing to the budget); the default is uniform over the modes present among the
candidates. Fractions become counts by largest remainder, ties to the first mode in sorted order.

With `mode: marginal` (`Marginal` target) each key gets its own quotas instead of joint cells:
`weather,time_of_day` asks for the weather shares AND the time-of-day shares at once. Per-key
quotas are planned as for one key, then turned into cell quotas that meet every key's quotas
(`marginal_cells`): a max-flow for two keys (exact whenever any solution exists), a greedy with
a local-search repair for three or more (the general problem is a hard multi-way table one; the
repair met 181 of 194 feasible random small cases in tests/test_select_balance_marginal.py's
generator); a shortfall is reported, never hidden, and the budget is still filled from the
closest cells.

Soft targets that silently miss are what users complain about, so quotas are hard: the selector
takes exactly `quota[g]` images from every group. When a mode has fewer candidates than its
quota, it gets all it has and the shortfall is redistributed to the other target modes in
proportion to their targets (never to a mode the user set to 0 or left out of the table);
every such change is reported in `messages`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MISSING = "(missing)"
Mode = tuple[str, ...]


class BalanceError(ValueError):
    pass


@dataclass
class QuotaPlan:
    keys: list[str]
    modes: list[Mode]  # one per group, sorted
    groups: np.ndarray  # int64 per row: group index, -1 = not selectable under this plan
    quotas: np.ndarray  # int64 per group
    available: np.ndarray  # int64 candidates per group
    messages: list[str] = field(default_factory=list)

    def name(self, g: int) -> str:
        return mode_name(self.keys, self.modes[g])


def mode_name(keys: list[str], mode: Mode) -> str:
    return mode[0] if len(keys) == 1 else ", ".join(f"{k}={v}" for k, v in zip(keys, mode, strict=True))


def _text(v: Any) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def modes_of(payloads: list[dict[str, Any]], keys: list[str]) -> list[Mode]:
    """The mode of every row; a missing value is its own mode, `(missing)`."""
    return [tuple(_text(p.get(k)) for k in keys) for p in payloads]


def check_keys(payloads: list[dict[str, Any]], keys: list[str]) -> None:
    """Unknown metadata key -> one clear error listing the keys that exist."""
    seen: set[str] = set()
    for p in payloads:
        seen.update(p)
    missing = [k for k in keys if k not in seen]
    if missing:
        known = ", ".join(sorted(seen)) or "none"
        raise BalanceError(f"unknown metadata key {missing[0]!r} for --balance-by; keys in the pool: {known}")


def read_target(target: Any, keys: list[str]) -> tuple[dict[Mode, float], str]:
    """Normalize a target to ({mode: value}, "fraction" | "count").

    Accepted: None (uniform), a mapping {value: x} for one key, a list of rows
    [{key: value, ..., "fraction" or "count": x}], or a path to a CSV/JSON/YAML file holding one.
    """
    if target is None:
        return {}, "fraction"
    if isinstance(target, str | Path):
        target = _read_target_file(Path(target))
    rows: list[tuple[Mode, float, str]] = []
    if isinstance(target, dict):
        if len(keys) != 1:
            raise BalanceError("a {value: share} target needs exactly one --balance-by key; "
                               "for several keys give rows with one column per key")
        for v, x in target.items():
            rows.append(((_text(v),), x, ""))
    elif isinstance(target, list):
        for i, row in enumerate(target):
            if not isinstance(row, dict):
                raise BalanceError(f"balance target row {i + 1} is not a mapping")
            unit = [u for u in ("fraction", "count") if u in row]
            if len(unit) != 1:
                raise BalanceError(f"balance target row {i + 1} needs exactly one of 'fraction' or 'count'")
            absent = [k for k in keys if k not in row]
            if absent:
                raise BalanceError(f"balance target row {i + 1} has no column {absent[0]!r}")
            rows.append((tuple(_text(row[k]) for k in keys), row[unit[0]], unit[0]))
    else:
        raise BalanceError("balance target must be a mapping, a list of rows or a file")
    out: dict[Mode, float] = {}
    units = {u for _, _, u in rows if u}
    for mode, x, _ in rows:
        try:
            val = float(x)
        except (TypeError, ValueError):
            raise BalanceError(f"balance target for {mode_name(keys, mode)!r} is not a number: {x!r}") from None
        if not np.isfinite(val) or val < 0:
            raise BalanceError(f"balance target for {mode_name(keys, mode)!r} must be >= 0, got {x!r}")
        if mode in out:
            raise BalanceError(f"balance target lists {mode_name(keys, mode)!r} twice")
        out[mode] = val
    if len(units) > 1:
        raise BalanceError("balance target mixes 'fraction' and 'count' rows; use one")
    if units:
        unit = units.pop()
    else:
        total = sum(out.values())
        is_count = all(float(v).is_integer() for v in out.values()) and total > 1 + 1e-9
        unit = "count" if is_count else "fraction"
    return out, unit


def _read_target_file(path: Path) -> Any:
    if not path.is_file():
        raise BalanceError(f"balance target file {path} not found")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    if path.suffix.lower() == ".csv":
        import polars as pl

        return pl.read_csv(path, infer_schema_length=0).to_dicts()  # all text: values match as text
    raise BalanceError(f"balance target file {path}: use .csv, .json or .yaml")


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to `weights` summing to `total`; ties to the lower index."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    exact = w / w.sum() * total
    base = np.floor(exact + 1e-9).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        order = np.lexsort((np.arange(len(w)), -(exact - base)))
        base[order[:rest]] += 1
    return base


def plan_quotas(
    modes: list[Mode],
    candidates: np.ndarray,
    budget: int,
    keys: list[str],
    target: Any = None,
) -> QuotaPlan:
    """Quotas for `budget` picks over the candidate rows' modes (see module doc)."""
    if isinstance(target, Marginal):
        return plan_marginal(modes, candidates, budget, keys, target.target)
    cand = np.asarray(candidates, bool)
    present = sorted({modes[i] for i in np.flatnonzero(cand)})
    shares, unit = read_target(target, keys)
    messages: list[str] = []
    if not shares:
        shares = {m: 1.0 for m in present}
    # every row's mode gets an index: rows outside the candidates (labeled, picked earlier) can
    # hold a mode that has no candidate left
    all_modes = sorted(set(shares) | set(present) | set(modes))
    index = {m: g for g, m in enumerate(all_modes)}
    groups = np.array([index[m] for m in modes], dtype=np.int64)
    avail = np.bincount(groups[cand], minlength=len(all_modes)).astype(np.int64)
    weight = np.array([shares.get(m, 0.0) for m in all_modes])
    if unit == "fraction":
        if abs(weight.sum() - 1.0) > 1e-6 and target is not None:
            raise BalanceError(f"balance fractions sum to {weight.sum():.4g}; make them sum to 1 or give counts")
        want = largest_remainder(weight, budget)
    else:
        want = weight.astype(np.int64)
        if int(want.sum()) != budget:
            raise BalanceError(f"balance counts sum to {int(want.sum())} but the budget is {budget}; "
                               "make them match (or drop --budget to use their sum)")
    outside = [m for m in present if m not in shares]
    if outside:
        n_out = int(sum(avail[index[m]] for m in outside))
        names = ", ".join(mode_name(keys, m) for m in outside[:5])
        messages.append(f"balance: {n_out} candidates in modes not in the target ({names}) are not selected")
    quota = np.minimum(want, avail)
    short = [g for g in range(len(all_modes)) if want[g] > avail[g]]
    if short:
        for g in short:
            messages.append(
                f"balance: {mode_name(keys, all_modes[g])} wanted {int(want[g])}, only {int(avail[g])} "
                f"available; {int(want[g] - avail[g])} given to other modes"
            )
        deficit = int(want.sum() - quota.sum())
        while deficit > 0:
            spare = (avail - quota) * (weight > 0)
            if spare.sum() == 0:
                break
            extra = np.minimum(largest_remainder(weight * (spare > 0), deficit), spare)
            if extra.sum() == 0:  # rounding gave everything to full modes: one at a time
                extra = np.zeros_like(quota)
                extra[int(np.argmax(spare > 0))] = 1
            quota += extra
            deficit -= int(extra.sum())
        gained = quota - np.minimum(want, avail)
        if gained.any():
            messages.append("balance: redistributed " + ", ".join(
                f"{mode_name(keys, all_modes[g])} +{int(gained[g])}" for g in np.flatnonzero(gained)))
        if deficit > 0:
            messages.append(f"balance: only {int(quota.sum())} candidates in the target modes; "
                            f"{deficit} of the budget cannot be filled")
    groups = np.where(weight[groups] > 0, groups, -1)
    return QuotaPlan(list(keys), all_modes, groups, quota.astype(np.int64), avail, messages)


@dataclass(frozen=True)
class Marginal:
    """A balance target to meet per key (marginal quotas), not per joint cell. `target`: None
    (uniform per key) or {key: a one-key target (mapping, rows or file)}, or a file holding that."""

    target: Any = None

    def per_key(self, keys: list[str]) -> dict[str, Any]:
        t = _read_target_file(Path(self.target)) if isinstance(self.target, str | Path) else self.target
        if t is None:
            return {}
        if not isinstance(t, dict) or not all(k in keys for k in t):
            raise BalanceError(f"a marginal balance target maps each key ({', '.join(keys)}) to its own "
                               "target, e.g. {weather: {sun: 0.5, rain: 0.5}, time: {day: 0.7, night: 0.3}}")
        return dict(t)


def plan_marginal(modes: list[Mode], candidates: np.ndarray, budget: int, keys: list[str], target: Any) -> QuotaPlan:
    """Quotas per joint cell that meet each key's own quotas (see module doc)."""
    cand = np.asarray(candidates, bool)
    per_key = Marginal(target).per_key(keys)
    messages: list[str] = []
    want: list[dict[str, int]] = []  # per key: value -> quota
    allowed = cand.copy()
    for j, key in enumerate(keys):
        pj = plan_quotas([(m[j],) for m in modes], cand, budget, [key], per_key.get(key))
        messages.extend(pj.messages)
        want.append({pj.modes[g][0]: int(q) for g, q in enumerate(pj.quotas) if q > 0})
        allowed &= pj.groups >= 0
    all_modes = sorted(set(modes))
    index = {m: g for g, m in enumerate(all_modes)}
    groups = np.array([index[m] for m in modes], dtype=np.int64)
    avail = np.bincount(groups[cand], minlength=len(all_modes)).astype(np.int64)
    cells = [m for m in all_modes if avail[index[m]] > 0 and all(m[j] in want[j] for j in range(len(keys)))]
    got = marginal_cells(cells, [int(avail[index[m]]) for m in cells], want)
    quota = np.zeros(len(all_modes), dtype=np.int64)
    for m, n in zip(cells, got, strict=True):
        quota[index[m]] = n
    total = min(sum(w.values()) for w in want)
    if int(quota.sum()) < total:  # no exact solution: fill the budget from the cells that miss least
        spare = {m: int(avail[index[m]]) - int(quota[index[m]]) for m in {modes[i] for i in np.flatnonzero(allowed)}}
        count = [{v: 0 for v in w} for w in want]
        for m in all_modes:
            for j in range(len(keys)):
                if m[j] in count[j]:
                    count[j][m[j]] += int(quota[index[m]])
        while int(quota.sum()) < budget:
            open_ = sorted(m for m in spare if spare[m] > 0)
            if not open_:
                break
            best = min(open_, key=lambda m: (sum(count[j].get(m[j], 0) >= want[j].get(m[j], 0)
                                                 for j in range(len(keys))), m))
            quota[index[best]] += 1
            spare[best] -= 1
            for j in range(len(keys)):
                if best[j] in count[j]:
                    count[j][best[j]] += 1
        misses = [f"{key}={v} {count[j].get(v, 0)} of {q}" for j, key in enumerate(keys)
                  for v, q in sorted(want[j].items()) if count[j].get(v, 0) != q]
        messages.append("balance (marginal): the key quotas cannot all be met at once with these candidates; "
                        "got " + ", ".join(misses))
    groups = np.where(allowed | ~cand, groups, -1)
    return QuotaPlan(list(keys), all_modes, groups, quota, avail, messages)


def marginal_cells(cells: list[Mode], avail: list[int], want: list[dict[str, int]]) -> list[int]:
    """Count per cell, at most its availability, so that for every key j and value v the cells
    with that value sum to want[j][v] (as close as possible when impossible). Starts from the
    independence table (cell ~ product of its values' shares, rounded down), then completes it:
    by augmenting paths (max-flow, exact) for two keys, greedily for more."""
    n_keys = len(want)
    total = min(sum(w.values()) for w in want) if want else 0
    if total == 0 or not cells:
        return [0] * len(cells)
    out = []
    for m, a in zip(cells, avail, strict=True):
        share = float(total)
        for j in range(n_keys):
            share *= want[j][m[j]] / total
        out.append(min(a, int(share + 1e-9)))
    rem = [{v: q for v, q in w.items()} for w in want]
    for m, n in zip(cells, out, strict=True):
        for j in range(n_keys):
            rem[j][m[j]] -= n
    if n_keys == 2:
        return _augment(cells, avail, out, rem)
    while True:  # greedy: the cell whose values all still need picks, largest need first
        ok = [c for c, m in enumerate(cells) if out[c] < avail[c] and all(rem[j][m[j]] > 0 for j in range(n_keys))]
        if not ok:  # the local search is quadratic in cells: skipped for very many cells
            return _repair(cells, avail, out, rem) if len(cells) <= 200 else out
        c = max(ok, key=lambda c: (min(rem[j][cells[c][j]] for j in range(n_keys)), -c))
        out[c] += 1
        for j in range(n_keys):
            rem[j][cells[c][j]] -= 1


def _repair(cells: list[Mode], avail: list[int], out: list[int], rem: list[dict[str, int]]) -> list[int]:
    """Local search after the greedy (three or more keys): apply the best move among "add one to a
    cell" and "move one from cell d to cell c" while it lowers the total miss sum_j,v |rem|."""
    n_keys = len(rem)
    out = list(out)

    def gain(add: int | None, drop: int | None) -> int:
        g = 0
        for j in range(n_keys):
            delta: dict[str, int] = {}
            if add is not None:
                delta[cells[add][j]] = delta.get(cells[add][j], 0) - 1
            if drop is not None:
                delta[cells[drop][j]] = delta.get(cells[drop][j], 0) + 1
            for v, d in delta.items():
                g += abs(rem[j][v]) - abs(rem[j][v] + d)
        return g

    for _ in range(10 * sum(avail) + 10):
        best, move = 0, None
        adds = [c for c in range(len(cells)) if out[c] < avail[c]]
        for c in adds:
            for d in [None, *[d for d in range(len(cells)) if out[d] > 0 and d != c]]:
                g = gain(c, d)
                if g > best:
                    best, move = g, (c, d)
        if move is None:
            return out
        c, d = move
        out[c] += 1
        for j in range(n_keys):
            rem[j][cells[c][j]] -= 1
        if d is not None:
            out[d] -= 1
            for j in range(n_keys):
                rem[j][cells[d][j]] += 1
    return out


def _augment(cells: list[Mode], avail: list[int], flow: list[int], rem: list[dict[str, int]]) -> list[int]:
    """Two keys as a flow network: source -> value of key 0 (its quota) -> cell (its availability)
    -> value of key 1 (its quota) -> sink. Augmenting shortest paths from the current flow gives a
    maximum flow; the flow is the full budget exactly when the quotas can be met."""
    flow = list(flow)
    a_vals, b_vals = sorted(rem[0]), sorted(rem[1])
    src_left = dict(rem[0])  # residual source -> a
    sink_left = dict(rem[1])  # residual b -> sink
    by_a: dict[str, list[int]] = {a: [] for a in a_vals}
    by_b: dict[str, list[int]] = {b: [] for b in b_vals}
    for c, (a, b) in enumerate(cells):
        by_a[a].append(c)
        by_b[b].append(c)
    while True:
        # BFS over value nodes; forward along a cell with spare availability, backward along a cell with flow
        start = [a for a in a_vals if src_left[a] > 0]
        prev: dict[tuple[str, str], tuple[tuple[str, str] | None, int]] = {("a", a): (None, -1) for a in start}
        queue = [("a", a) for a in start]
        end = None
        while queue and end is None:
            nxt = []
            for side, v in queue:
                if side == "a":
                    for c in by_a[v]:
                        node = ("b", cells[c][1])
                        if flow[c] < avail[c] and node not in prev:
                            prev[node] = ((side, v), c)
                            if sink_left[node[1]] > 0:
                                end = node
                                break
                            nxt.append(node)
                else:
                    for c in by_b[v]:
                        node = ("a", cells[c][0])
                        if flow[c] > 0 and node not in prev:
                            prev[node] = ((side, v), c)
                            nxt.append(node)
                if end is not None:
                    break
            queue = nxt
        if end is None:
            return flow
        path, node = [], end
        while prev[node][0] is not None:
            parent, c = prev[node]
            path.append((c, parent[0] == "a"))  # forward when we went a -> b
            node = parent
        first = node[1]
        push = min(src_left[first], sink_left[end[1]],
                   *[avail[c] - flow[c] if fwd else flow[c] for c, fwd in path])
        for c, fwd in path:
            flow[c] += push if fwd else -push
        src_left[first] -= push
        sink_left[end[1]] -= push


def interleave(groups: np.ndarray | list[Any]) -> np.ndarray:
    """A permutation of picks that keeps each group's own order and makes every prefix as
    balanced as the totals allow: after p picks, group g holds floor or ceil of p * n_g / n
    (n_g its picks, n all picks). This is Balinski and Young's quota method: the next pick goes
    to the group with the smallest (taken + 1) / n_g among those still below their upper quota
    (taken < p * n_g / n), ties to the group that sorts first. A team that labels top-down and
    stops early still gets a balanced set."""
    labels = np.asarray(groups)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inv = np.unique(labels, return_inverse=True)
    q = np.bincount(inv).astype(np.int64)
    queues = [np.flatnonzero(inv == g) for g in range(len(q))]
    n = len(labels)
    taken = np.zeros(len(q), dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for p in range(1, n + 1):
        open_ = (taken < q) & (taken * n < p * q)
        if not open_.any():  # cannot happen for the quota method; stay safe rather than stop
            open_ = taken < q
        prio = np.where(open_, (taken + 1) / q, np.inf)
        g = int(np.argmin(prio))
        out[p - 1] = queues[g][taken[g]]
        taken[g] += 1
    return out
