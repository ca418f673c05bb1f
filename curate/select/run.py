"""The store-facing side of selection: read the pool, run `compose.select`, write the results.

A round:
  1. read payload fields and one encoder's vectors from the store (sorted by id: deterministic);
  2. candidates = points with a vector, matching `where`, not failed, not duplicates (unless
     asked), not labeled and not picked in an earlier round; labeled and earlier-picked points
     are the existing centers (whatever `where` says: they are in the training set either way);
  3. select; 4. record the round as pending in the store metadata; 5. write the manifest (CSV
     and/or Parquet, atomically); 6. tag the picks in the store (`selected_round`,
     `selection_name`); 7. optionally export symlinks/copies for a labeling tool; 8. mark the
     round complete. A round killed anywhere in 4-8 is finished or rolled back by the next
     command that touches selection (rounds.py), so it is all or nothing.

`mark_labeled` sets `labeled: true` from a manifest of ids or paths; later rounds exclude those
images and use them as centers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.device import pick_device
from curate.files import write_atomic
from curate.payload_fields import find_by_path, index_by_path
from curate.select.compose import Pool, Selection, select
from curate.select.config import SelectionConfig
from curate.select.export import export_files
from curate.select.rounds import (
    SELECTED_ROUND,
    SELECTION_NAME,
    begin_round,
    complete_round,
    pause_point,
    pending_round,
    resolve_pending,
    tag_round,
    used_rounds,
)
from curate.select.similarity import resolve_query_ids, text_queries
from curate.select.tensors import unit_rows
from curate.select.uncertainty import load_predictions, match_predictions
from curate.store import Store, parse_where
from curate.store.columnar import load_id_column

LABELED = "labeled"
BASE_FIELDS = ["path", "relpath", "failed", "is_duplicate", LABELED, SELECTED_ROUND, SELECTION_NAME]


class SelectError(ValueError):
    """An expected problem with a one-line message for the user."""


@dataclass
class RunResult:
    round: int
    name: str
    strategy: str
    budget: int
    n_candidates: int
    n_centers: int
    ids: list[str]  # picked ids in rank order
    paths: list[str | None]  # their image paths
    manifests: list[Path]
    selection: Selection
    exported: int = 0
    dry_run: bool = False
    messages: list[str] = field(default_factory=list)


class NoPayloads(Sequence[dict[str, Any]]):
    """`Pool.payloads` of a lean run: an empty payload for every row, without a list of N slots."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [{} for _ in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return {}


def _needed_fields(cfg: SelectionConfig) -> list[str]:
    extra = [s.input[6:] for s in cfg.steps if s.input and s.input.startswith("field:")]
    bal = cfg.balance
    return list(dict.fromkeys(BASE_FIELDS + extra + (bal.keys if bal else [])))


def _lean(cfg: SelectionConfig) -> bool:
    """True when selection reads no payload beyond the flags: then only flagged points' payloads are
    held (labeled, picked, failed, duplicates: usually few), not one dict per point of the pool
    (~0.4 KiB each: 4 GiB at 10M points)."""
    return (_needed_fields(cfg) == list(dict.fromkeys(BASE_FIELDS)) and not cfg.predictions
            and not cfg.similar_to)


def _flagged_payloads(store: Store, collection: str) -> tuple[dict[str, dict[str, Any]], int]:
    """(payloads (BASE_FIELDS) of the points that carry any selection flag, points scanned), from one
    streaming scan that drops the unflagged points batch by batch."""
    flags = ("failed", "is_duplicate", LABELED, SELECTED_ROUND, SELECTION_NAME)
    out: dict[str, dict[str, Any]] = {}
    seen = 0
    for batch in store.scan_payload(collection, fields=BASE_FIELDS):
        seen += len(batch)
        out.update((pid, p) for pid, p in batch if any(p.get(k) is not None for k in flags))
    return out, seen


def _budget(cfg: SelectionConfig, n_cand: int) -> int:
    if cfg.budget is not None:
        return int(cfg.budget)
    if cfg.fraction is not None:
        return max(1, math.floor(cfg.fraction * n_cand + 0.5))
    bal = cfg.balance
    if bal is not None and bal.target is not None:
        from curate.select.balance import Marginal, read_target

        targets = [(t, [k]) for k, t in bal.target.per_key(bal.keys).items()] \
            if isinstance(bal.target, Marginal) else [(bal.target, bal.keys)]
        sums = set()
        for t, keys in targets:
            shares, unit = read_target(t, keys)
            if unit != "count":
                break
            sums.add(int(sum(shares.values())))
        else:
            if len(sums) > 1:
                raise SelectError(f"the balance counts of the keys sum to different totals ({sorted(sums)}); "
                                  "make them equal or give --budget")
            if sums:
                return sums.pop()
    raise SelectError("give --budget N or --fraction F (or a balance target in counts)")


def check_selection_name(name: str) -> str:
    """A selection name becomes a file name in the output folder: a plain name, never a path."""
    bad = next((c for c in name if c in "/\\" or ord(c) < 32 or c == "\x7f"), None)
    if bad is not None or name.startswith(".") or not name.strip():
        raise SelectError(f"--name {name!r} must be a plain name (no '/', '\\', control characters or "
                          "leading '.'); it names the manifest file")
    if len(name.encode("utf-8", "surrogateescape")) > 100:
        raise SelectError(f"--name is {len(name.encode('utf-8', 'surrogateescape'))} bytes; use at most 100")
    if re.fullmatch(r"round-\d+", name):
        raise SelectError(f"--name {name!r}: names round-N are given to unnamed rounds; pick another name")
    return name


def _is_true(v: Any) -> bool:
    return v is True or (isinstance(v, int) and v == 1)


def run_selection(
    store: Store,
    collection: str,
    cfg: SelectionConfig,
    *,
    encoder: str | None = None,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike = "curate-out",
    out: str | os.PathLike | None = None,  # a manifest file or a folder (instead of out_dir/collection)
    export_dir: str | os.PathLike | None = None,
    export_mode: str = "symlink",
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
) -> RunResult:
    """One selection round against a store collection (see module doc). `engine`: None (this
    process) or a `curate.select.ray_select.RayEngine`; store reads and writes stay here either way."""
    say = log or (lambda _m: None)
    cfg.validate()
    if cfg.name:
        check_selection_name(cfg.name)
    if export_mode not in ("symlink", "copy"):
        raise SelectError(f"--export-mode must be symlink or copy, not {export_mode!r}")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    enc = store.require_encoder(collection, encoder)
    pending: set[str] = set()
    notes: list[str] = []
    if not dry_run:
        if (done := resolve_pending(store, collection, None)) is not None:
            notes.append(done)
    elif (p := pending_round(store, collection)) is not None:  # a dry run writes nothing: count it as picked
        pending = set(p["ids"])
        notes.append(f"round {p['name']!r} was interrupted; the next select, labeled, unselect or export "
                     "finishes it (this dry run treats its picks as taken)")
    lean = _lean(cfg)
    if lean:
        payloads, n_points = _flagged_payloads(store, collection)
    else:
        payloads = store.payloads(collection, fields=_needed_fields(cfg))
        n_points = len(payloads)
    if not n_points:
        raise SelectError(f"collection {collection!r} is empty; run 'curate embed' first")
    # round numbers are never reused (an unselected round keeps its number in the metadata)
    meta_max, taken = used_rounds(store, collection)
    used = [int(p[SELECTED_ROUND]) for p in payloads.values() if p.get(SELECTED_ROUND) is not None]
    rnd = max([meta_max, *used]) + 1
    name = check_selection_name(cfg.name) if cfg.name else f"round-{rnd}"
    taken |= {p.get(SELECTION_NAME) for p in payloads.values() if p.get(SELECTION_NAME)}
    if cfg.name and cfg.name in taken:
        raise SelectError(f"selection name {cfg.name!r} is already used by an earlier round; pick another --name")

    ids, X = load_id_column(store, collection, enc)  # sorted ids as one bytes column, no str per vector
    if not len(ids):
        raise SelectError(f"collection {collection!r} has no vectors for encoder {enc!r}; run 'curate embed' first")

    n = len(ids)
    allowed = np.ones(n, bool) if not cfg.where else ids.mask(  # streamed: no set of the matching ids
        pid for batch in store.scan_payload(collection, parse_where(cfg.where), fields=[]) for pid, _ in batch)
    # flags of the few flagged points, looked up by id (payloads without a vector are ignored)
    flagged = [(pid, p) for pid, p in payloads.items()
               if _is_true(p.get("failed")) or _is_true(p.get(LABELED)) or p.get(SELECTED_ROUND) is not None
               or _is_true(p.get("is_duplicate"))]
    at = ids.rows(pid for pid, _ in flagged)
    failed, center, dup = np.zeros(n, bool), ids.mask(pending), np.zeros(n, bool)
    for r, (_, p) in zip(at, flagged, strict=True):
        if r >= 0:
            failed[r] = _is_true(p.get("failed"))
            center[r] |= _is_true(p.get(LABELED)) or p.get(SELECTED_ROUND) is not None
            dup[r] = not cfg.include_duplicates and _is_true(p.get("is_duplicate"))
    center &= ~failed
    dup &= ~failed & ~center
    outside = ~(failed | center | dup | allowed)
    cand = ~(failed | center | dup | outside)
    n_failed, n_dup, n_where = int(failed.sum()), int(dup.sum()), int(outside.sum())
    n_cand, n_cent = int(cand.sum()), int(center.sum())
    parts = [f"{k} {what}" for k, what in ((n_cent, "labeled or picked"), (n_dup, "duplicates"),
                                            (n_where, "outside --where"), (n_failed, "failed")) if k]
    why = f"{n} with vectors" + (": " + ", ".join(parts) if parts else "")
    if n_cand == 0:
        raise SelectError(f"no selectable images in {collection!r} ({why})")
    budget = _budget(cfg, n_cand)
    if budget > n_cand:
        raise SelectError(f"budget {budget} is larger than the {n_cand} selectable images ({why})")
    say(f"pool: {n_cand} candidates, {n_cent} existing centers ({why})")

    bal = cfg.balance
    if bal is not None:
        _check_balance_keys(store, collection, bal.keys, payloads)

    keep = np.flatnonzero(cand | center)
    pool_ids = ids.take(keep)
    pool_payloads = NoPayloads(len(keep)) if lean else [payloads.get(pid, {}) for pid in pool_ids]
    uncertainty = None
    if cfg.predictions and any(s.input == "uncertainty" for s in cfg.steps):
        pred = load_predictions(cfg.predictions, cfg.uncertainty)
        all_ids = list(payloads)
        rows = match_predictions(pred, all_ids,
                                 [payloads[i].get("path") for i in all_ids],
                                 [payloads[i].get("relpath") for i in all_ids])
        at = pool_ids.rows(all_ids[row] for row in rows)
        uncertainty = np.full(len(pool_ids), np.nan)
        last = len(at) - 1 - np.unique(at[::-1], return_index=True)[1]  # a row named twice: the last score
        last = last[at[last] >= 0]
        uncertainty[at[last]] = np.asarray(pred.scores, dtype=np.float64)[last]
    query = None
    if cfg.similar_to or cfg.text:
        parts = []
        if cfg.similar_to:
            qids = resolve_query_ids(cfg.similar_to, payloads)
            parts.append(store.get_vectors(collection, enc, qids))
        if cfg.text:
            parts.append(text_queries(store.encoders(collection)[enc], cfg.text, dev))
        query = unit_rows(np.concatenate(parts))

    pool_x = X if len(keep) == n else X[keep]  # a copy only when rows leave; the full matrix is released
    del X
    pool = Pool(unit_rows(pool_x, inplace=True), cand[keep], center[keep], pool_payloads, uncertainty, query,
                ids=pool_ids)
    sel = select(pool, cfg, budget, device=dev, log=say, engine=engine)
    if cfg.balance is not None and "group" in sel.columns:
        _balanced_order(sel)
    picked = pool_ids.strings(sel.indices)  # Python strings for the picks only
    if lean:  # the picks' paths, fetched by id (memory: the picks, not the pool's payload pages)
        payloads.update((pid, {**payloads.get(pid, {}), **p})
                        for pid, p in store.payloads_of(collection, picked, ["path"]).items())

    rows = _manifest_rows(picked, sel, payloads, rnd, name)
    paths = manifest_paths(out, out_dir, collection, name, dry_run)
    exported = 0
    if dry_run:
        manifests = write_manifest(rows, paths)
    else:
        export = {"dir": str(Path(export_dir).resolve()), "mode": export_mode} if export_dir is not None else None
        begin_round(store, collection, rnd, name, picked, paths, export)
        manifests = write_manifest(rows, paths)
        tag_round(store, collection, picked, rnd, name)
        if export_dir is not None:
            try:
                exported, missing = export_files(rows, Path(export_dir), export_mode)
            except OSError as e:  # the round itself is fine: keep it, say how to export again
                missing = 0
                sel.messages.append(f"export to {export_dir} failed ({e}); the round is tagged; export it "
                                    f"with: curate export {name} --to DIR")
            if missing:
                sel.messages.append(f"export: {missing} source files not found (moved or deleted?)")
        pause_point("complete")
        complete_round(store, collection)
    return RunResult(rnd, name, sel.strategy, budget, n_cand, n_cent, picked, rows["path"], manifests, sel,
                     exported, dry_run, notes + list(sel.messages))


def _balanced_order(sel: Selection) -> None:
    """Reorder a balanced selection so every prefix of the manifest is balanced (balance.interleave)."""
    from curate.select.balance import interleave

    perm = interleave(np.asarray(sel.columns["group"], dtype=str))
    sel.indices = sel.indices[perm]
    sel.columns = {k: np.asarray(v)[perm] for k, v in sel.columns.items()}


def _check_balance_keys(store: Store, collection: str, keys: list[str], payloads: dict[str, dict[str, Any]]) -> None:
    """Unknown key -> one line naming the keys that do exist (read from a sample of full payloads,
    since the main read fetched only the fields selection needs)."""
    missing = [k for k in keys if not any(k in p for p in payloads.values())]
    if not missing:
        return
    seen: set[str] = set()
    for batch in store.scan_payload(collection, batch=1000):
        for _, p in batch:
            seen.update(p)
        break
    known = ", ".join(sorted(seen - {"failed", "error"})) or "none"
    raise SelectError(f"unknown metadata key {missing[0]!r} for --balance-by; keys in the pool: {known}")


def _manifest_rows(
    picked: list[str], sel: Selection, payloads: dict[str, dict[str, Any]], rnd: int, name: str
) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {
        "rank": list(range(1, len(picked) + 1)),
        "id": picked,
        "path": [payloads.get(i, {}).get("path") for i in picked],
        "strategy": [sel.strategy] * len(picked),
        "round": [rnd] * len(picked),
        "selection_name": [name] * len(picked),
    }
    for key, values in sel.columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind == "f":
            cols[key] = [None if not math.isfinite(v) else float(v) for v in arr.tolist()]
        elif arr.dtype.kind in "iu":
            cols[key] = [int(v) for v in arr.tolist()]
        else:
            cols[key] = [str(v) for v in arr.tolist()]
    return cols


def manifest_paths(out: str | os.PathLike | None, out_dir: str | os.PathLike, collection: str, name: str,
                   dry_run: bool = False) -> list[Path]:
    """Where a round's manifest goes: `--out FILE`, else `<name>.csv` and `.parquet` in `--out DIR` or
    in `<out_dir>/<collection>/` (one folder per collection, as dedup and slice). A dry run writes
    `<stem>.preview<suffix>` instead, so it never replaces a real round's manifest."""
    if out is not None and Path(out).suffix.lower() in (".csv", ".parquet"):
        paths = [Path(out)]
    else:
        folder = Path(out) if out is not None else Path(out_dir) / collection
        paths = [folder / f"{name}.csv", folder / f"{name}.parquet"]
    if dry_run:
        paths = [p.with_name(f"{p.stem}.preview{p.suffix}") for p in paths]
    return paths


def write_manifest(cols: dict[str, list[Any]], paths: list[Path]) -> list[Path]:
    """Write each file to a temporary name, then rename: a reader never sees half a manifest."""
    import polars as pl

    df = pl.DataFrame(cols, strict=False)
    for p in paths:
        write_atomic(p, df.write_parquet if p.suffix.lower() == ".parquet" else df.write_csv)
        pause_point("manifest")
    return paths


# ---- curate labeled -----------------------------------------------------------------------------
def read_reference_list(file: str | os.PathLike) -> tuple[str, list[str]]:
    """('id' | 'path' | 'any', values) from a CSV/Parquet manifest (id or path column) or a text
    file with one id or path per line."""
    import polars as pl

    p = Path(file)
    if not p.is_file():
        raise SelectError(f"{p} not found")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".parquet", ".tsv"):
        try:
            df = pl.read_parquet(p) if suffix == ".parquet" else pl.read_csv(
                p, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0)
        except Exception as e:  # malformed file
            raise SelectError(f"cannot read {p}: {e}") from e
        col = "id" if "id" in df.columns else "path" if "path" in df.columns else None
        if col is None:
            if len(df.columns) != 1:
                raise SelectError(f"{p}: needs an 'id' or 'path' column")
            col = df.columns[0]
        values = [str(v) for v in df[col].drop_nulls().to_list()]
        return (col if col in ("id", "path") else "any"), values
    lines = [ln.strip() for ln in p.read_text().splitlines()]
    return "any", [ln for ln in lines if ln and not ln.startswith("#")]


def resolve_references(kind: str, values: list[str], payloads: dict[str, dict[str, Any]], source: str) -> list[str]:
    """Point ids for ids/paths; any unknown entry is an error (nothing is written)."""
    by_path = index_by_path(payloads.items())
    out: list[str] = []
    unknown: list[str] = []
    for v in values:
        found = v if kind in ("id", "any") and v in payloads else None
        if found is None and kind in ("path", "any"):
            found = find_by_path(by_path, v)
        if found is None:
            unknown.append(v)
        else:
            out.append(found)
    if unknown:
        raise SelectError(f"{source}: {len(unknown)} entr{'y' if len(unknown) == 1 else 'ies'} not in the "
                          f"collection (e.g. {unknown[0]!r}); nothing was marked")
    return list(dict.fromkeys(out))


def mark_labeled(store: Store, collection: str, file: str | os.PathLike, *, unset: bool = False,
                 log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Mark (or unmark) the images listed in `file` as labeled. Returns (changed, already so)."""
    if not store.has_collection(collection):
        raise SelectError(f"collection {collection!r} not found in {store.location}")
    resolve_pending(store, collection, log)
    payloads = store.payloads(collection, fields=["path", "relpath", LABELED])
    kind, values = read_reference_list(file)
    if not values:
        raise SelectError(f"{file}: no ids or paths in it")
    ids = resolve_references(kind, values, payloads, str(file))
    change = [i for i in ids if _is_true(payloads[i].get(LABELED)) == unset]
    if change:
        store.set_payload(collection, change, {LABELED: not unset})
        store.flush()
    return len(change), len(ids) - len(change)
