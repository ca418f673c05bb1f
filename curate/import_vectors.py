"""Bring your own vectors: store vectors computed elsewhere as another encoder of the same points.

Input: a Parquet file with an `id` or `path` column and a `vector` column (a list or array of
floats), or a `.npy` matrix with a manifest (CSV/Parquet, one row per matrix row, with an `id` or
`path` column). Typical vectors: a task model's penultimate layer, BADGE gradient embeddings, or
a whole pool embedded by another tool.

Two modes:
  - default: the rows name points already in the collection (by id, or by stored absolute or
    relative path); their vectors are added under `--encoder NAME`. Rows naming unknown images are
    an error (or skipped and counted with `skip_unknown`).
  - create: the rows are new points named by their `path` column, with ids computed as `curate
    embed` computes them for the same manifest (UUIDv5 of the path relative to the root, by default
    the file's folder; relative paths are read relative to that folder too), so a later `curate
    embed` of the same images lands on the same points. The file's other columns become payload.
    Points that already exist keep their payload (tags from earlier rounds) and get the vector.

Validation (nothing is written when it fails): the key column exists and has no empty or repeated
values; every vector has the same length, matching the encoder's stored dimension if it exists;
no NaN/inf and no all-zero row. Vectors are stored L2-normalized in float32, like curate's own.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.payload_fields import find_by_path, index_by_path, is_curate_field
from curate.select.tensors import unit_rows
from curate.sources import point_id
from curate.store import Store

BATCH = 10_000


class VectorsError(ValueError):
    """Bad vectors file, with a one-line message naming it and what to do."""


@dataclass
class ImportReport:
    collection: str
    encoder: str
    dim: int
    rows: int
    written: int = 0
    created: int = 0
    skipped_unknown: int = 0
    unknown_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"imported {self.written} vectors (dim {self.dim}) as encoder {self.encoder!r} into "
                 f"{self.collection!r}"]
        if self.created:
            parts.append(f"{self.created} new points")
        if self.skipped_unknown:
            parts.append(f"{self.skipped_unknown} rows skipped: not in the collection "
                         f"(e.g. {self.unknown_examples[0]!r})")
        return "; ".join(parts)


def _read_table(path: Path):
    import polars as pl

    if not path.is_file():
        raise VectorsError(f"{path} not found")
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, infer_schema_length=10_000)
    except Exception as e:  # polars raises several types for a malformed file
        raise VectorsError(f"cannot read {path}: {e}") from e
    raise VectorsError(f"{path}: use a .parquet file with a vector column, or .npy with --manifest")


def _matrix_from_column(df, path: Path, column: str) -> np.ndarray:
    import polars as pl

    if column not in df.columns:
        raise VectorsError(f"{path}: no {column!r} column (columns: {', '.join(df.columns)}); "
                           "name the list column of vectors with --column")
    s = df[column]
    if not isinstance(s.dtype, pl.List | pl.Array):
        raise VectorsError(f"{path}: column {column!r} is {s.dtype}, not a list of floats")
    if s.null_count():
        raise VectorsError(f"{path}: vector missing (null) in row {int(s.is_null().arg_max()) + 1}")
    if isinstance(s.dtype, pl.List):
        lens = s.list.len()
        if lens.min() != lens.max():
            mode = int(lens.mode()[0])
            bad = int((lens != mode).arg_max())
            raise VectorsError(f"{path}: row {bad + 1} has {lens[bad]} values but most rows have {mode}; "
                               "every vector needs the same dimension")
        s = s.list.to_array(int(lens[0]) if len(lens) else 0)
    try:
        return s.cast(pl.Array(pl.Float32, s.dtype.size)).to_numpy().astype(np.float32, copy=False)
    except Exception as e:  # a list of strings, say
        raise VectorsError(f"{path}: column {column!r} must hold numbers ({e})") from e


def read_vectors(file: str | os.PathLike, manifest: str | os.PathLike | None = None, column: str = "vector"):
    """(table without the vector column, (N, d) float32 matrix). The table holds `id` or `path`."""
    path = Path(file)
    if path.suffix.lower() == ".npy":
        if manifest is None:
            raise VectorsError(f"{path}: a .npy matrix needs --manifest FILE (.csv/.parquet, one row per "
                               "vector, with an id or path column)")
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # not an .npy file, or an object array
            raise VectorsError(f"cannot read {path}: {e}") from e
        if X.ndim != 2:
            raise VectorsError(f"{path}: expected a 2-D matrix (rows x dim), got shape {X.shape}")
        df = _read_table(Path(manifest))
        if df.height != X.shape[0]:
            raise VectorsError(f"{manifest} has {df.height} rows but {path} has {X.shape[0]} vectors")
        return df, np.asarray(X, dtype=np.float32)
    if manifest is not None:
        raise VectorsError("--manifest goes with a .npy matrix; a Parquet file carries its own id/path column")
    df = _read_table(path)
    X = _matrix_from_column(df, path, column)
    return df.drop(column), X


def _check(df, X: np.ndarray, file: str, key: str) -> None:
    if df[key].null_count():
        raise VectorsError(f"{file}: empty {key!r} in row {int(df[key].is_null().arg_max()) + 1}")
    dup = df[key].is_duplicated()
    if dup.any():
        raise VectorsError(f"{file}: {key} {df[key][int(dup.arg_max())]!r} appears more than once")
    if X.shape[0] == 0:
        raise VectorsError(f"{file}: no rows")
    if X.shape[1] == 0:
        raise VectorsError(f"{file}: vectors are empty (dimension 0)")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise VectorsError(f"{file}: NaN or inf in the vector of row {r + 1} ({df[key][r]}); fix or drop it")
    zero = ~(np.abs(X).max(axis=1) > 0)
    if zero.any():
        r = int(np.argmax(zero))
        raise VectorsError(f"{file}: the vector of row {r + 1} ({df[key][r]}) is all zeros; it has no direction")


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
        return True
    except ValueError:
        return False


def _match_existing(store: Store, collection: str, key: str, keys: list[str]) -> list[str | None]:
    """Point id for each key (None = unknown): ids as is, paths against stored path or relpath."""
    if key == "id":
        known = store.existing_ids(collection, [k for k in keys if _is_uuid(k)])
        return [k if k in known else None for k in keys]
    by_path = index_by_path(pt for batch in store.scan_payload(collection, fields=["path", "relpath"]) for pt in batch)
    return [find_by_path(by_path, k) for k in keys]


def _new_points(df, file: Path, root: str | os.PathLike | None) -> tuple[list[str], list[dict[str, Any]]]:
    """Ids and payloads as `curate embed FILE` would make them for the same manifest rows."""
    clash = sorted(c for c in df.columns if c != "path" and is_curate_field(c))
    if clash:
        raise VectorsError(f"{file}: column(s) {', '.join(clash)} are written by curate itself; rename them")
    base = file.parent.resolve()
    pool_root = Path(root).resolve() if root else base
    ids, payloads = [], []
    for row in df.iter_rows(named=True):
        p = str(row["path"])
        full = p if Path(p).is_absolute() else str(base / p)
        full = os.path.join(os.path.abspath(os.path.dirname(full)), os.path.basename(full))
        try:
            rel = Path(full).relative_to(pool_root).as_posix()
        except ValueError:  # outside the root: the absolute path is its own key, as in sources.py
            rel = Path(full).as_posix()
        ids.append(point_id(rel))
        meta = {k: v for k, v in row.items() if k != "path" and v is not None}
        payloads.append({"path": full, "relpath": rel, **meta})
    return ids, payloads


def import_vectors(
    store: Store,
    collection: str,
    file: str | os.PathLike,
    encoder: str,
    *,
    manifest: str | os.PathLike | None = None,
    create: bool = False,
    root: str | os.PathLike | None = None,
    skip_unknown: bool = False,
    column: str = "vector",
) -> ImportReport:
    """Validate the whole file first, then write payload (create) and vectors in batches."""
    file = Path(file)
    if not encoder or not encoder.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise VectorsError(f"--encoder {encoder!r}: use letters, digits, '-', '_' or '.'")
    df, X = read_vectors(file, manifest, column)
    key = "path" if create else "id" if "id" in df.columns else "path" if "path" in df.columns else None
    if key is None or key not in df.columns:
        need = "a 'path' column (--create names new points by path)" if create else "an 'id' or 'path' column"
        raise VectorsError(f"{manifest or file}: needs {need}")
    df = df.with_columns(df[key].cast(str))
    _check(df, X, str(manifest or file), key)
    dim = int(X.shape[1])
    known = store.encoders(collection).get(encoder) if store.has_collection(collection) else None
    if known is not None and known.get("family") != "imported":
        raise VectorsError(f"encoder {encoder!r} in {collection!r} was made by curate embed; "
                           "import under another --encoder name")
    if known is not None and int(known["dim"]) != dim:
        raise VectorsError(f"encoder {encoder!r} is stored in {collection!r} with dim {known['dim']}, "
                           f"but {file} has dim {dim}; use another --encoder name")
    report = ImportReport(collection, encoder, dim, len(X))
    keys = df[key].to_list()
    if create:
        ids, payloads = _new_points(df, Path(manifest or file), root)
        dup = len(set(ids)) != len(ids)
        if dup:
            raise VectorsError(f"{manifest or file}: several rows name the same image (same path under the root)")
        store.ensure_collection(collection)
        exists = store.existing_ids(collection, ids)
        fresh = [i for i, pid in enumerate(ids) if pid not in exists]
        for lo in range(0, len(fresh), BATCH):
            part = fresh[lo : lo + BATCH]
            store.upsert_points(collection, [ids[i] for i in part], [payloads[i] for i in part])
        report.created = len(fresh)
        rows = np.arange(len(ids))
        targets = ids
    else:
        if not store.has_collection(collection):
            raise VectorsError(f"collection {collection!r} not found in {store.location}; "
                               "use --create to make new points from the file's path column")
        matched = _match_existing(store, collection, key, keys)
        unknown = [k for k, m in zip(keys, matched, strict=True) if m is None]
        if unknown and not skip_unknown:
            raise VectorsError(f"{manifest or file}: {len(unknown)} of {len(keys)} rows name images not in "
                               f"{collection!r} (e.g. {unknown[0]!r}); check the {key} column and --collection, "
                               "or pass --skip-unknown (or --create)")
        report.skipped_unknown = len(unknown)
        report.unknown_examples = unknown[:5]
        rows = np.flatnonzero([m is not None for m in matched])
        targets = [m for m in matched if m is not None]
        if len(set(targets)) != len(targets):
            raise VectorsError(f"{manifest or file}: several rows name the same stored image (by path and relpath)")
        if not targets:
            raise VectorsError(f"{manifest or file}: no row names an image in {collection!r}")
    spec = {"family": "imported", "model": encoder, "pretrained": None, "dim": dim, "source": file.name}
    store.ensure_encoder(collection, encoder, spec)
    for lo in range(0, len(rows), BATCH):
        part = rows[lo : lo + BATCH]
        store.upsert_vectors(collection, encoder, [targets[i] for i in range(lo, lo + len(part))],
                             unit_rows(X[part]))
    store.flush()
    report.written = len(rows)
    return report
