"""Find images: a folder (recursive), a glob, or a manifest (CSV, Parquet, JSONL) read with polars.

Every image gets a stable point id: a UUIDv5 of its path relative to the pool root, so re-runs
match and a pool moved to another disk keeps its ids. Metadata columns of a manifest become
payload fields (renamed to `meta_<name>` where they collide with curate's own fields), and every
image gets a `folder` field: its parent folder relative to the pool root ("." at the top).
"""

from __future__ import annotations

import glob as globlib
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curate.payload_fields import rename_reserved

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet", ".jsonl", ".ndjson"})
_NAMESPACE = uuid.UUID("6f1c1d2a-8f0e-4c43-9a58-0c5e2b7d9e11")


def point_id(relpath: str) -> str:
    """Stable id of an image: UUIDv5 of its POSIX path relative to the pool root."""
    return str(uuid.uuid5(_NAMESPACE, Path(relpath).as_posix()))


class SourceError(ValueError):
    """A source that cannot be read, with a message naming it and what to do."""


@dataclass(frozen=True)
class Pool:
    """The images of one source: a table with `id`, `path` (absolute), `relpath` and metadata columns."""

    root: Path
    table: pl.DataFrame
    renamed: dict[str, str] = field(default_factory=dict)  # manifest column -> stored name
    # `path` of a file whose name is not UTF-8 (shown with \xNN escapes) -> its real name
    # (surrogate-escaped str, which open() turns back into the exact bytes)
    raw_paths: dict[str, str] = field(default_factory=dict)

    @property
    def metadata_columns(self) -> list[str]:
        """The manifest's own columns (curate's `folder` fact excluded)."""
        return [c for c in self.table.columns if c not in ("id", "path", "relpath", "folder")]

    def __len__(self) -> int:
        return self.table.height


def _walk(folder: Path) -> list[str]:
    """All image-extension entries under folder, symlinks (even broken ones) included, so a bad
    link is reported as a failure rather than silently skipped."""
    found = []
    for dirpath, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return found


def _glob_root(pattern: str) -> Path:
    """The deepest folder of a glob pattern that holds no wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def read_manifest(path: Path, key: str = "path") -> pl.DataFrame:
    """A manifest as a table; `key` is the column every row must fill (path, or id for `curate meta`)."""
    ext = path.suffix.lower()
    try:
        if ext == ".csv":
            df = pl.read_csv(path, infer_schema_length=10_000)
        elif ext == ".parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_ndjson(path)
    except Exception as e:  # polars raises several error types for malformed files
        raise SourceError(f"cannot read manifest {path}: {e}") from e
    if key not in df.columns:
        raise SourceError(f"manifest {path} has no {key!r} column (columns: {', '.join(df.columns)})")
    if df[key].null_count():
        raise SourceError(f"manifest {path}: {df[key].null_count()} row(s) have an empty {key!r}")
    return df


def _relative(paths: list[str], root: Path) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(Path(p).relative_to(root).as_posix())
        except ValueError:  # outside the root: the absolute path is its own stable key
            out.append(Path(p).as_posix())
    return out


def _folder(relpath: str) -> str:
    """The parent folder of a relative path, the most common class layout ("." at the top)."""
    return posixpath.dirname(relpath) or "."


def _shown(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _text_names(files: list[str], root: Path) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """(paths, relpaths, ids, raw_paths). A file name that is not UTF-8 cannot be stored as text
    (payload, Parquet): it gets a shown form with \\xNN escapes, and an id from its exact bytes."""
    paths, rels, ids, raw = [], [], [], {}
    for f, r in zip(files, _relative(files, root), strict=True):
        try:
            f.encode("utf-8")
        except UnicodeEncodeError:
            shown = _shown(f)
            raw[shown] = f
            paths.append(shown)
            rels.append(_shown(r))
            ids.append(point_id(f"{_shown(r)}\0{os.fsencode(r).hex()}"))  # \0: no real name has one
            continue
        paths.append(f)
        rels.append(r)
        ids.append(point_id(r))
    return paths, rels, ids, raw


def discover(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Pool:
    """Resolve a folder, glob or manifest into a Pool, sorted by relpath (deterministic order).

    `root` overrides the pool root used for relative paths and ids."""
    src = str(source)
    path = Path(src)
    meta: pl.DataFrame | None = None
    if path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        meta = read_manifest(path)
        base = path.parent.resolve()
        files = [str(p) if Path(p).is_absolute() else str(base / p) for p in meta["path"].cast(pl.Utf8)]
        default_root = base
    elif path.is_dir():
        default_root = path.resolve()
        files = _walk(default_root)
    elif any(ch in src for ch in "*?["):
        default_root = _glob_root(src).resolve()
        files = [
            os.path.abspath(p)
            for p in globlib.glob(src, recursive=True)
            if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(p)
        ]
    elif path.is_file():
        raise SourceError(
            f"{src}: not a folder, glob or manifest; manifests end in {', '.join(sorted(MANIFEST_EXTENSIONS))}"
        )
    else:
        raise SourceError(f"{src}: no such folder, file or glob match")

    pool_root = Path(root).resolve() if root else default_root
    # Keep symlinks as links (no resolve): a broken link must still show up as its own path.
    files = [os.path.join(os.path.abspath(os.path.dirname(f)), os.path.basename(f)) for f in files]
    files, rel, ids, raw = _text_names(files, pool_root)
    table = pl.DataFrame({"id": ids, "path": files, "relpath": rel})
    table = table.with_columns(pl.Series("folder", [_folder(r) for r in rel], dtype=pl.Utf8))
    renamed: dict[str, str] = {}
    if meta is not None:
        meta = meta.drop("path")
        renamed = rename_reserved(meta.columns)
        table = pl.concat([table, meta.rename(renamed)], how="horizontal")
    dupes = table.filter(pl.col("id").is_duplicated())
    if dupes.height:
        raise SourceError(
            f"{src}: {dupes.height} rows point at the same image more than once, e.g. {dupes['path'][0]}"
        )
    if table.height == 0:
        raise SourceError(f"{src}: no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return Pool(root=pool_root, table=table.sort("relpath"), renamed=renamed, raw_paths=raw)
