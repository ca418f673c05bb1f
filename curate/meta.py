"""Merge metadata from a manifest (or a folder re-scan) into images that are already embedded.

Embedding skips stored images, so a metadata column added to a manifest later would never arrive;
`merge_metadata` sets it on the stored points without touching vectors or curate's tags. Each
point's update is one payload write (a kill leaves every point with its old or its new values), and
setting the same values twice changes nothing, so an interrupted merge is finished by re-running it.
Every matched point also gets `folder`, derived from its stored `relpath`, so pools embedded before
`folder` existed can be balanced by folder.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curate.payload_fields import rename_reserved
from curate.sources import MANIFEST_EXTENSIONS, SourceError, discover, read_manifest
from curate.store import Store, StoreError


@dataclass
class MergeReport:
    matched: int = 0
    unmatched: int = 0
    fields: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    unmatched_examples: list[str] = field(default_factory=list)

    def summary(self, collection: str) -> str:
        names = ", ".join(self.fields) or "none"
        line = f"merged field(s) {names} into {self.matched} image(s) of {collection!r}"
        if self.unmatched:
            line += (f"; {self.unmatched} row(s) matched no stored image "
                     f"(e.g. {self.unmatched_examples[0]!r})")
        return line


def _rows(source: str, key: str, root: str | None) -> tuple[list[list[str]], pl.DataFrame, dict[str, str]]:
    """(candidate keys per row, metadata columns, renamed columns). Keys are tried in order."""
    if key == "id":
        path = Path(source)
        if not (path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS):
            raise SourceError(f"--key id needs a manifest ({', '.join(sorted(MANIFEST_EXTENSIONS))}) with an "
                              f"'id' column; {source} is not one")
        df = read_manifest(path, key="id")
        if df["id"].is_duplicated().any():
            raise SourceError(f"{source}: some ids appear more than once, e.g. "
                              f"{df.filter(pl.col('id').is_duplicated())['id'][0]}")
        keys = [[str(v)] for v in df["id"].to_list()]
        meta = df.drop([c for c in ("id", "path", "relpath") if c in df.columns])
        renamed = rename_reserved(meta.columns)
        return keys, meta.rename(renamed), renamed
    if key != "path":
        raise ValueError(f"--key {key!r}: use path or id")
    pool = discover(source, root)
    t = pool.table
    # the id embed would give it, then the path as written (a stored relpath), then the absolute path
    raw = t["relpath"].to_list()
    keys = [[i, r, p] for i, r, p in zip(t["id"].to_list(), raw, t["path"].to_list(), strict=True)]
    return keys, t.select(pool.metadata_columns), pool.renamed


def merge_metadata(
    store: Store, collection: str, source: str | os.PathLike, key: str = "path", root: str | None = None
) -> MergeReport:
    """Set the metadata columns of `source` on the stored images its rows name (by path or id)."""
    if not store.has_collection(collection):
        raise StoreError(f"collection {collection!r} not found in {store.location}")
    keys, meta, renamed = _rows(str(source), key, root)
    stored = store.payloads(collection, fields=["path", "relpath"])
    lookup: dict[str, str] = {pid: pid for pid in stored}
    if key == "path":
        for pid, p in stored.items():
            for k in ("relpath", "path"):
                if p.get(k):
                    lookup.setdefault(str(p[k]), pid)
    report = MergeReport(fields=[*meta.columns, "folder"], renamed=renamed)
    items: dict[str, dict[str, Any]] = {}
    rows = meta.iter_rows(named=True) if meta.width else ({} for _ in keys)  # a folder: no columns
    for cands, row in zip(keys, rows, strict=True):
        pid = next((lookup[c] for c in cands if c in lookup), None)
        if pid is None:
            report.unmatched += 1
            if len(report.unmatched_examples) < 3:
                report.unmatched_examples.append(cands[-1])
            continue
        fields = {k: v for k, v in row.items() if v is not None}
        relpath = stored[pid].get("relpath")
        if relpath:
            fields["folder"] = posixpath.dirname(str(relpath)) or "."
        items[pid] = fields
    report.matched = len(items)
    if items:
        store.set_payloads(collection, items)
        store.flush()
    return report
