"""Gather what the report shows from the store and the result files of earlier commands.

Everything here is plain data (strings, numbers, numpy arrays); escaping happens in render.py and
in the page's script, which only ever sets text, never HTML, from data.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.mapplot import PALETTE, categories, is_categorical
from curate.report.data import metadata_keys, slice_keys

SHA = re.compile(r"^[0-9a-f]{64}$")
MISSING_COLOUR = "#c8ccd2"
OTHER_COLOUR = "#8a8f98"


@dataclass
class Tile:
    id: str
    path: str
    sha: str | None
    lines: list[str] = field(default_factory=list)  # caption lines under the image
    mark: str | None = None  # a badge: "kept", "duplicate", "A", "B"
    row: int = -1  # row on the map (for the click-to-locate link), -1 when not mapped


@dataclass
class Gallery:
    title: str
    total: int
    tiles: list[Tile]
    note: str = ""


@dataclass
class Groups:
    title: str
    total_groups: int
    groups: list[list[Tile]]
    note: str = ""


@dataclass
class Distribution:
    key: str
    bars: list[tuple[str, int]]
    missing: int
    other: int = 0  # values beyond the shown bars


@dataclass
class ColourField:
    name: str
    labels: list[str]
    colours: list[str]
    codes: np.ndarray  # uint8/uint16 per map point, index into labels

    def counts(self) -> list[int]:
        return np.bincount(self.codes, minlength=len(self.labels)).tolist()


def shown_path(p: dict[str, Any]) -> str:
    return str(p.get("relpath") or p.get("path") or "")


def sha_of(p: dict[str, Any]) -> str | None:
    sha = p.get("sha256")
    return sha if isinstance(sha, str) and SHA.match(sha) else None  # it names a file: no surprises


# ---- summary -----------------------------------------------------------------------------------
def distributions(payloads: dict[str, dict[str, Any]], keys: list[str], top: int = 12) -> list[Distribution]:
    out = []
    for key in keys:
        values = [p.get(key) for p in payloads.values() if not p.get("failed")]
        present = [v for v in values if v is not None]
        missing = len(values) - len(present)
        if present and not is_categorical(present):
            arr = np.array([float(v) for v in present])
            edges = np.histogram_bin_edges(arr, bins=10)
            counts, _ = np.histogram(arr, bins=edges)
            bars = [(f"{edges[i]:.4g} to {edges[i + 1]:.4g}", int(c)) for i, c in enumerate(counts)]
            out.append(Distribution(key, bars, missing))
            continue
        counts_ = Counter(str(v) for v in present)
        order = categories(present)
        bars = [(c, counts_[c]) for c in order[:top]]
        out.append(Distribution(key, bars, missing, sum(counts_[c] for c in order[top:])))
    return out


# ---- map colours -------------------------------------------------------------------------------
def colour_field(name: str, values: list[Any], max_labels: int = 20) -> ColourField:
    """Dictionary-encode one field for the map: categories in a stable order, rare ones folded into
    'other', many-valued numbers binned by quantile, missing values last in grey."""
    present = [v for v in values if v is not None]
    if present and not is_categorical(present):
        arr = np.array([np.nan if v is None else float(v) for v in values])
        qs = np.unique(np.nanquantile(arr, np.linspace(0, 1, 7)))
        labels = [f"{qs[i]:.4g} to {qs[i + 1]:.4g}" for i in range(len(qs) - 1)]
        codes = np.clip(np.searchsorted(qs, arr, side="right") - 1, 0, len(labels) - 1)
        colours = [_ramp(i, len(labels)) for i in range(len(labels))]
        codes = np.where(np.isnan(arr), len(labels), codes)
        return ColourField(name, [*labels, "(missing)"], [*colours, MISSING_COLOUR], codes.astype(np.uint16))
    cats = categories(present)
    shown = cats if len(cats) <= max_labels else cats[: max_labels - 1]
    index = {c: i for i, c in enumerate(shown)}
    labels = list(shown)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(shown))]
    other = len(labels)
    if len(cats) > len(shown):
        labels.append(f"{len(cats) - len(shown)} other values")
        colours.append(OTHER_COLOUR)
    missing = len(labels)
    labels.append("(missing)")
    colours.append(MISSING_COLOUR)
    codes = np.fromiter((missing if v is None else index.get(str(v), other) for v in values),
                        dtype=np.uint16, count=len(values))
    return ColourField(name, labels, colours, codes)


def _ramp(i: int, n: int) -> str:
    """viridis-like ramp without importing matplotlib into the report path."""
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = i / max(n - 1, 1) * (len(stops) - 1)
    a, b = stops[int(np.floor(t))], stops[min(int(np.floor(t)) + 1, len(stops) - 1)]
    f = t - np.floor(t)
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def colour_fields(ids: list[str], payloads: dict[str, dict[str, Any]], density: np.ndarray) -> list[ColourField]:
    rows = [payloads.get(i, {}) for i in ids]
    fields = [colour_field(k, [p.get(k) for p in rows]) for k in metadata_keys(payloads)]
    fields.append(colour_field("selection", [p.get("selection_name") for p in rows]))
    dup = ["duplicate" if p.get("is_duplicate") else "kept (has duplicates)" if p.get("dup_group") else
           "unique" if "is_duplicate" in p else None for p in rows]
    fields.append(colour_field("duplicates", dup))
    for key in slice_keys(payloads):
        fields.append(colour_field(key, ["in slice" if p.get(key) is True else None for p in rows]))
    if len(density):
        q = np.quantile(density, [0.05, 0.25])
        bands = np.where(density <= q[0], "lowest 5% (outliers)",
                         np.where(density <= q[1], "lowest 25%", "rest")).tolist()
        f = colour_field("density", bands)
        order = ["lowest 5% (outliers)", "lowest 25%", "rest", "(missing)"]  # fixed order and colours
        remap = np.array([order.index(lab) for lab in f.labels])
        fields.append(ColourField("density", order, ["#d62728", "#ff9f40", "#9ab0c8", MISSING_COLOUR],
                                  remap[f.codes].astype(np.uint16)))
    return fields


# ---- result files of earlier commands -----------------------------------------------------------
def _tables(results_dir: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not results_dir.is_dir():
        return []
    files = [p for p in results_dir.rglob("*") if p.suffix in suffixes and p.is_file() and ".thumbs" not in p.parts]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)  # newest first


def _columns(path: Path) -> list[str]:
    try:
        if path.suffix == ".parquet":
            return list(pl.read_parquet_schema(path))
        with open(path, encoding="utf-8", errors="replace") as f:
            return [c.strip().strip('"') for c in f.readline().strip().split(",")]
    except (OSError, pl.exceptions.PolarsError):
        return []


def _read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=10_000)


def selection_manifest(results_dir: Path, name: str, members: set[str]) -> tuple[pl.DataFrame, Path] | None:
    """The newest manifest `curate select` wrote for the selection `name` of these points (another
    collection's round may carry the same name)."""
    for path in _tables(results_dir, (".parquet", ".csv")):
        cols = _columns(path)
        if {"rank", "id", "selection_name"} <= set(cols):
            df = _read(path)
            df = df.filter(pl.col("selection_name").cast(pl.String) == name)
            if len(df) and set(df["id"].cast(pl.String).to_list()) <= members:
                return df.sort("rank"), path
    return None


def dedup_table(results_dir: Path, collection: str) -> pl.DataFrame | None:
    for path in _tables(results_dir, (".parquet",)):
        if path.name == "dedup_groups.parquet" and {"group", "id", "kept", "similarity"} <= set(_columns(path)):
            return _read(path)
    return None


def leak_tables(results_dir: Path, known: set[str]) -> list[tuple[str, pl.DataFrame]]:
    """`curate leaks` results whose pairs are all points of this collection."""
    out = []
    for path in _tables(results_dir, (".csv",)):
        if {"a_id", "b_id", "similarity"} <= set(_columns(path)):
            df = _read(path)
            ids = set(df["a_id"].cast(pl.String).to_list()) | set(df["b_id"].cast(pl.String).to_list())
            if ids <= known:
                out.append((path.stem, df))
    return out


@dataclass
class Evaluation:
    """`curate evaluate` results: the learning-curve table and its recommendation."""

    budgets: list[int]
    rows: list[tuple[str, list[str], float]]  # strategy, "mean ± std" per budget, mean over budgets
    recommended: str
    verdict: str
    seeds: int


def evaluation(results_dir: Path, collection: str) -> Evaluation | None:
    """The newest evaluate.csv under the results folder written for this collection."""
    from curate.evaluate import recommend

    for path in _tables(results_dir, (".csv",)):
        if path.name != "evaluate.csv":
            continue
        cols = set(_columns(path))
        if not {"strategy", "seed", "budget", "accuracy", "collection"} <= cols:
            continue
        runs = _read(path).filter(pl.col("collection").cast(pl.String) == collection)
        if not len(runs):
            continue
        summ = (runs.group_by(["strategy", "budget"], maintain_order=True)
                .agg(pl.col("accuracy").mean().alias("mean"),
                     pl.col("accuracy").std(ddof=1).fill_null(0.0).alias("sd")))
        budgets = sorted(set(summ["budget"].to_list()))
        rows = []
        for name in dict.fromkeys(summ["strategy"].to_list()):
            part = {r["budget"]: r for r in summ.filter(pl.col("strategy") == name).iter_rows(named=True)}
            cells = [f"{part[b]['mean']:.3f} ± {part[b]['sd']:.3f}" if b in part else "" for b in budgets]
            rows.append((str(name), cells, float(np.mean([r["mean"] for r in part.values()]))))
        recommended, verdict = recommend(runs)
        return Evaluation(budgets, rows, recommended, verdict, runs["seed"].n_unique())
    return None
