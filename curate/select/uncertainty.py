"""Uncertainty from a task model's predictions file: entropy, margin or least confidence.

File: Parquet or CSV with an `id` or `path` column and either class probabilities (a list
column, `prob*`/`p_*` columns, or every other numeric column) or one `score` column (higher = more
worth labeling, >= 0). All three uncertainty scores are scaled to [0, 1] so they can be used as
thresholds and as weights with the same meaning whatever the number of classes:
  entropy           H(p) / log C
  margin            1 - (p_top1 - p_top2)
  least_confidence  (1 - p_top1) * C / (C - 1)
Bad input fails loudly: NaN or missing probabilities, negative values, rows that do not sum to 1
(logits passed by mistake), duplicated images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("entropy", "margin", "least_confidence", "score")


class PredictionsError(ValueError):
    pass


@dataclass
class Predictions:
    file: str
    key_column: str  # "id" or "path"
    keys: list[str]
    scores: np.ndarray  # float64, one per row
    kind: str


def _read_table(path: Path):
    import polars as pl

    if not path.is_file():
        raise PredictionsError(f"predictions file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",")
    except Exception as e:  # polars raises many types for a malformed file
        raise PredictionsError(f"cannot read predictions file {path}: {e}") from e
    raise PredictionsError(f"predictions file {path}: use .parquet or .csv")


def _probability_matrix(df, path: Path, skip: set[str]) -> tuple[np.ndarray, list[str]]:
    import polars as pl

    lists = [c for c in df.columns if c not in skip and isinstance(df.schema[c], pl.List | pl.Array)]
    if lists:
        col = lists[0]
        if df[col].null_count():
            row = int(df[col].is_null().arg_max())
            raise PredictionsError(f"{path}: probabilities missing (null) in row {row + 1}; fix the file")
        lens = df[col].list.len()
        if lens.min() != lens.max():
            raise PredictionsError(f"{path}: column {col!r} has rows with different numbers of classes")
        return np.asarray(df[col].to_list(), dtype=np.float64), [col]
    numeric = [c for c in df.columns if c not in skip and df.schema[c].is_numeric()]
    named = [c for c in numeric if c.lower().startswith(("prob", "p_"))]
    cols = named or numeric
    if len(cols) < 2:
        raise PredictionsError(
            f"{path}: no class probabilities found; give a list column, prob_* columns, or a 'score' column"
        )
    return df.select(cols).to_numpy().astype(np.float64), cols


def uncertainty_from_probs(p: np.ndarray, kind: str) -> np.ndarray:
    """Scores in [0, 1], higher = less certain (see module doc)."""
    c = p.shape[1]
    if kind == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        return np.clip(h / np.log(c), 0.0, 1.0)
    top = -np.sort(-p, axis=1)
    if kind == "margin":
        return np.clip(1.0 - (top[:, 0] - top[:, 1]), 0.0, 1.0)
    if kind == "least_confidence":
        return np.clip((1.0 - top[:, 0]) * c / (c - 1), 0.0, 1.0)
    raise PredictionsError(f"unknown uncertainty {kind!r}; use one of {', '.join(KINDS)}")


def load_predictions(path: str | os.PathLike, kind: str = "entropy") -> Predictions:
    """Read and score a predictions file. `kind="score"` uses its `score` column as is."""
    if kind not in KINDS:
        raise PredictionsError(f"unknown uncertainty {kind!r}; use one of {', '.join(KINDS)}")
    path = Path(path)
    df = _read_table(path)
    key = "id" if "id" in df.columns else "path" if "path" in df.columns else None
    if key is None:
        raise PredictionsError(f"{path}: needs an 'id' or 'path' column naming the image of each row")
    if df[key].null_count():
        raise PredictionsError(f"{path}: empty {key!r} in row {int(df[key].is_null().arg_max()) + 1}")
    keys = [str(k) for k in df[key].to_list()]
    dup = df[key].is_duplicated()
    if dup.any():
        raise PredictionsError(f"{path}: image {keys[int(dup.arg_max())]!r} appears more than once")
    skip = {"id", "path", "score"}
    has_score = "score" in df.columns and df.schema["score"].is_numeric()
    if kind == "score" or (has_score and kind == "entropy" and not _has_probs(df, skip)):
        if not has_score:
            raise PredictionsError(f"{path}: --uncertainty score needs a numeric 'score' column")
        s = df["score"].cast(float).fill_null(float("nan")).to_numpy().astype(np.float64)
        bad = ~np.isfinite(s)
        if bad.any():
            raise PredictionsError(f"{path}: score is NaN/missing in row {int(np.argmax(bad)) + 1} "
                                   f"({keys[int(np.argmax(bad))]}); fix the file")
        if (s < 0).any():
            raise PredictionsError(f"{path}: scores must be >= 0 (higher = more worth labeling)")
        return Predictions(str(path), key, keys, s, "score")
    p, cols = _probability_matrix(df, path, skip)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise PredictionsError(f"{path}: NaN probability in row {r + 1} ({keys[r]}); fix the file or drop the row")
    if (p < 0).any() or (p > 1 + 1e-6).any():
        r = int(np.argmax(((p < 0) | (p > 1 + 1e-6)).any(axis=1)))
        raise PredictionsError(f"{path}: probabilities must lie in [0, 1] (row {r + 1}); pass softmax outputs")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1) > 1e-3
    if off.any():
        r = int(np.argmax(off))
        raise PredictionsError(f"{path}: row {r + 1} probabilities sum to {sums[r]:.4g}, not 1; "
                               "pass softmax outputs, not logits")
    p = p / sums[:, None]
    return Predictions(str(path), key, keys, uncertainty_from_probs(p, kind), kind)


def _has_probs(df, skip: set[str]) -> bool:
    try:
        _probability_matrix(df, Path("."), skip)
        return True
    except PredictionsError:
        return False


def match_predictions(
    pred: Predictions, ids: list[str], paths: list[str | None], relpaths: list[str | None]
) -> np.ndarray:
    """Row of `ids` for every prediction; raises when predictions name images not in the store.

    Paths match the stored absolute path, the path resolved against the working directory, or the
    stored relative path."""
    if pred.key_column == "id":
        where = {k: i for i, k in enumerate(ids)}
        rows = [where.get(k, -1) for k in pred.keys]
    else:
        where = {}
        for i, (p, r) in enumerate(zip(paths, relpaths, strict=True)):
            if r:
                where.setdefault(r, i)
            if p:
                where[p] = i
        rows = []
        for k in pred.keys:
            i = where.get(k, -1)
            if i < 0:
                i = where.get(os.path.abspath(k), -1)
            rows.append(i)
    out = np.asarray(rows, dtype=np.int64)
    unknown = np.flatnonzero(out < 0)
    if unknown.size:
        raise PredictionsError(
            f"{pred.file}: {unknown.size} prediction(s) name images not in the collection "
            f"(e.g. {pred.keys[unknown[0]]!r}); check the {pred.key_column} column and --collection"
        )
    return out
