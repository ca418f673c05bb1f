"""Uncertainty from a task model's predictions: one file, or several (an ensemble / MC dropout).

File: Parquet or CSV with an `id` or `path` column and either class probabilities (a list
column, `prob*`/`p_*` columns, or every other numeric column) or one `score` column (higher = more
worth labeling, >= 0). Several files (a list, a glob such as 'preds/pass_*.parquet', or a folder
of .parquet/.csv files) are the members of an ensemble or the passes of MC dropout: one
probability matrix each, rows matched by id or path (every file must name the same images).

Scores, all in [0, 1] so they mean the same as thresholds and weights whatever the number of
classes C and members M (p_m = member m's probabilities, p = their mean):
  entropy           H(p) / log C
  margin            1 - (p_top1 - p_top2)
  least_confidence  (1 - p_top1) * C / (C - 1)
  bald              (H(p) - mean_m H(p_m)) / log C       mutual information (Houlsby et al. 2011)
  vote_entropy      H(votes) / log min(M, C)             votes = each member's argmax
  variation_ratio   1 - (votes for the modal class) / M  (Freeman 1965; 0 = members agree)
The first three use the mean over members; the last three need M >= 2.
Bad input fails loudly: NaN or missing probabilities, negative values, rows that do not sum to 1
(logits passed by mistake), duplicated images, files that disagree on the images or classes.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("entropy", "margin", "least_confidence", "bald", "vote_entropy", "variation_ratio", "score")
ENSEMBLE_KINDS = ("bald", "vote_entropy", "variation_ratio")  # need several members


class PredictionsError(ValueError):
    pass


@dataclass
class Predictions:
    file: str  # the file, or "N files: first, ..." for an ensemble
    key_column: str  # "id" or "path"
    keys: list[str]
    scores: np.ndarray  # float64, one per row
    kind: str
    members: int = 1


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


def _entropy(p: np.ndarray) -> np.ndarray:
    """Natural-log entropy along the last axis, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)


def uncertainty_from_probs(p: np.ndarray, kind: str) -> np.ndarray:
    """Scores in [0, 1], higher = less certain (see module doc). `p` is (N, C), or (M, N, C) for
    M members (entropy, margin and least confidence then score the mean over members)."""
    if kind not in KINDS or kind == "score":
        raise PredictionsError(f"unknown uncertainty {kind!r}; use one of {', '.join(KINDS[:-1])}")
    members = p if p.ndim == 3 else p[None]
    m, c = members.shape[0], members.shape[2]
    mean = members.mean(axis=0)
    if kind in ENSEMBLE_KINDS:
        if m < 2:
            raise PredictionsError(f"--uncertainty {kind} needs several prediction files (ensemble members "
                                   "or MC-dropout passes); with one file use entropy, margin or least_confidence")
        if kind == "bald":
            mi = _entropy(mean) - _entropy(members).mean(axis=0)
            return np.clip(mi / np.log(c), 0.0, 1.0)
        votes = members.argmax(axis=2)  # (M, N): ties go to the lower class
        counts = np.stack([(votes == k).sum(axis=0) for k in range(c)], axis=1)  # (N, C)
        if kind == "vote_entropy":
            return np.clip(_entropy(counts / m) / np.log(min(m, c)), 0.0, 1.0)
        return 1.0 - counts.max(axis=1) / m
    if kind == "entropy":
        return np.clip(_entropy(mean) / np.log(c), 0.0, 1.0)
    top = -np.sort(-mean, axis=1)
    if kind == "margin":
        return np.clip(1.0 - (top[:, 0] - top[:, 1]), 0.0, 1.0)
    return np.clip((1.0 - top[:, 0]) * c / (c - 1), 0.0, 1.0)


def prediction_files(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files named by a path, a glob, a folder (its .parquet/.csv files), or a list of those."""
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in (".parquet", ".csv", ".tsv"))
            if not found:
                raise PredictionsError(f"predictions folder {p} holds no .parquet or .csv files")
            out.extend(found)
        elif any(ch in s for ch in "*?[") and not p.exists():
            found = sorted(Path(f) for f in globlib.glob(s) if Path(f).is_file())
            if not found:
                raise PredictionsError(f"predictions glob {s!r} matches no file")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise PredictionsError("no predictions file given")
    dup = [f for i, f in enumerate(out) if f in out[:i]]
    if dup:
        raise PredictionsError(f"predictions file {dup[0]} is given twice")
    return out


def _read_one(path: Path, want_score: bool) -> tuple[str, list[str], np.ndarray, bool]:
    """(key column, keys, values, is_score): values are (N, C) probabilities or (N,) scores."""
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
    if want_score or (has_score and not _has_probs(df, skip)):
        if not has_score:
            raise PredictionsError(f"{path}: --uncertainty score needs a numeric 'score' column")
        s = df["score"].cast(float).fill_null(float("nan")).to_numpy().astype(np.float64)
        bad = ~np.isfinite(s)
        if bad.any():
            raise PredictionsError(f"{path}: score is NaN/missing in row {int(np.argmax(bad)) + 1} "
                                   f"({keys[int(np.argmax(bad))]}); fix the file")
        if (s < 0).any():
            raise PredictionsError(f"{path}: scores must be >= 0 (higher = more worth labeling)")
        return key, keys, s, True
    p, _cols = _probability_matrix(df, path, skip)
    if p.shape[1] < 2:
        raise PredictionsError(f"{path}: needs probabilities for at least 2 classes")
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
    return key, keys, p / sums[:, None], False


def load_predictions(
    spec: str | os.PathLike | Sequence[str | os.PathLike], kind: str = "entropy"
) -> Predictions:
    """Read and score one predictions file or several (see module doc). `kind="score"` uses a
    single file's `score` column as is."""
    if kind not in KINDS:
        raise PredictionsError(f"unknown uncertainty {kind!r}; use one of {', '.join(KINDS)}")
    files = prediction_files(spec)
    if len(files) > 1 and kind == "score":
        raise PredictionsError("--uncertainty score reads one file's score column; give one predictions file")
    key, keys, first, is_score = _read_one(files[0], kind == "score")
    if is_score:
        if kind not in ("score", "entropy") or len(files) > 1:  # entropy is the default: a score file is fine
            raise PredictionsError(f"{files[0]}: has a score column but no class probabilities; "
                                   f"--uncertainty {kind} and several files need probabilities")
        return Predictions(str(files[0]), key, keys, first, "score")
    members = [first]
    where = {k: i for i, k in enumerate(keys)}
    for f in files[1:]:
        k2, keys2, p2, s2 = _read_one(f, False)
        if s2:
            raise PredictionsError(f"{f}: has no class probabilities; every predictions file needs them")
        if k2 != key:
            raise PredictionsError(f"{f}: names images by {k2!r} but {files[0]} by {key!r}; use the same column")
        if p2.shape[1] != first.shape[1]:
            raise PredictionsError(f"{f}: {p2.shape[1]} classes, but {files[0]} has {first.shape[1]}")
        extra = [k for k in keys2 if k not in where]
        if extra or len(keys2) != len(keys):
            missing = extra[0] if extra else next(k for k in keys if k not in set(keys2))
            raise PredictionsError(f"{f} and {files[0]} name different images (e.g. {missing!r}); "
                                   "every pass must predict the same images")
        order = np.empty(len(keys), dtype=np.int64)
        order[[where[k] for k in keys2]] = np.arange(len(keys2))
        members.append(p2[order])
    scores = uncertainty_from_probs(np.stack(members), kind)
    label = str(files[0]) if len(files) == 1 else f"{len(files)} files: {files[0]}, ..."
    return Predictions(label, key, keys, scores, kind, len(files))


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
