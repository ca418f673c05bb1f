"""Named evaluation slices: "night, rain, pedestrians" as a set of image ids.

A slice is built from one source of similarity (a text query through the encoder's text tower,
example images, a k-means cluster) or from a payload filter alone, cut by top-k and/or a
similarity threshold, optionally balanced over a payload key and cleaned of images too close to
another set (`exclude_near`, so an eval slice does not contain near copies of training images).
It is saved as a payload tag `slice_<name>: true` and as a manifest `slice_<name>.csv`.

Also here: `resolve_set`, which turns a name (slice, selection, `where:` filter or manifest file)
into ids; `curate leaks` and `--exclude-near` both use it.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from curate.files import write_atomic
from curate.kernels import check_threshold, topk_similarity
from curate.store import Condition, Store, parse_where
from curate.store.columnar import load_id_column
from curate.store.idcolumn import IdColumn

DEFAULT_TEMPLATES = (
    "a photo of {}.",
    "a photo of the {}.",
    "a close-up photo of {}.",
    "a blurry photo of {}.",
    "a low resolution photo of {}.",
    "a bright photo of {}.",
    "a dark photo of {}.",
    "{}",
)
DEFAULT_CLUSTERS = 20
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson", ".txt")


class SliceError(ValueError):
    """A one-line, actionable problem with a slice request."""


def tag_key(name: str) -> str:
    return f"slice_{name}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SliceError(f"slice name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


# ------------------------------------------------------------------------------------------------
# sets of ids: slices, selections, filters, manifests
# ------------------------------------------------------------------------------------------------
def path_index(store: Store, collection: str, only: set[str] | None = None) -> dict[str, str]:
    """path, relpath and id -> id, for turning user-given paths into points. `only`: keep just these
    keys (the refs being resolved), streaming the payload: memory for the refs, not the pool."""
    out: dict[str, str] = {}
    for batch in store.scan_payload(collection, None, ["path", "relpath"]):
        for pid, p in batch:
            for key in (pid, p.get("path"), p.get("relpath")):
                if key and (only is None or str(key) in only):
                    out[str(key)] = pid
    return out


def ref_keys(refs: list[str]) -> set[str]:
    """Every key `ids_from_refs` may look a ref up by."""
    keys = {str(r).strip() for r in refs}
    return keys | {os.path.abspath(os.path.expanduser(k)) for k in keys if k}


def ids_from_refs(refs: list[str], index: dict[str, str]) -> tuple[list[str], list[str]]:
    """(ids found, refs not found). A ref is an id, a stored path/relpath, or a path that resolves
    to a stored absolute path."""
    found: list[str] = []
    missing: list[str] = []
    for r in refs:
        r = str(r).strip()
        if not r:
            continue
        pid = index.get(r) or index.get(os.path.abspath(os.path.expanduser(r)))
        if pid is None:
            missing.append(r)
        else:
            found.append(pid)
    return list(dict.fromkeys(found)), missing


def read_manifest_refs(path: Path) -> list[str]:
    """The `id` column (else `path`, else `relpath`) of a CSV/Parquet/JSONL manifest, or the lines
    of a .txt file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pl.read_ndjson(path)
        else:
            df = pl.read_csv(path, infer_schema_length=0)
    except Exception as e:  # noqa: BLE001 - polars raises many types; the user needs one line
        raise SliceError(f"cannot read manifest {path}: {e}") from None
    for col in ("id", "path", "relpath"):
        if col in df.columns:
            return [str(v) for v in df[col].to_list() if v is not None]
    raise SliceError(f"manifest {path} has no id, path or relpath column")


def resolve_set(store: Store, collection: str, ref: str) -> tuple[str, list[str]]:
    """(description, ids) of a named set of images.

    `ref` is `slice:NAME`, `selection:NAME`, `where:EXPR`, a manifest file, or a bare NAME tried as
    a slice, then as a selection. Unknown names are an error naming what was tried."""
    if ref.startswith("where:"):
        conds = parse_where(ref[len("where:") :])
        return ref, sorted(store.ids_where(collection, conds))
    p = Path(ref).expanduser()
    if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
        refs = read_manifest_refs(p)
        ids, missing = ids_from_refs(refs, path_index(store, collection, ref_keys(refs)))
        if missing and not ids:
            raise SliceError(f"none of the {len(refs)} entries of {p} is an image of {collection!r}")
        return f"manifest {p}", sorted(ids)
    kind, _, name = ref.partition(":") if ref.startswith(("slice:", "selection:")) else ("", "", ref)
    if kind in ("", "slice") and _NAME.match(name):
        ids = sorted(store.ids_where(collection, [Condition(tag_key(name), "==", True)]))
        if ids or kind == "slice":
            return f"slice {name}", ids
    if kind in ("", "selection"):
        ids = sorted(store.ids_where(collection, [Condition("selection_name", "==", name)]))
        if ids or kind == "selection":
            return f"selection {name}", ids
    raise SliceError(
        f"unknown set {ref!r}: not a slice tag, a selection name, a 'where:EXPR' filter or a manifest file"
    )


# ------------------------------------------------------------------------------------------------
# building a slice
# ------------------------------------------------------------------------------------------------
@dataclass
class SliceRequest:
    name: str
    texts: list[str] = field(default_factory=list)
    templates: list[str] | None = None
    examples: list[str] = field(default_factory=list)  # ids, stored paths, or image files
    example_mode: str = "mean"  # mean: one query (their mean); each: neighbours of every example
    cluster: int | None = None
    n_clusters: int = DEFAULT_CLUSTERS
    where: list[Condition] = field(default_factory=list)
    top_k: int | None = None
    threshold: float | None = None
    balanced_by: str | None = None
    exclude_near: str | None = None
    exclude_threshold: float | None = None  # None: the dedup default of the encoder (same "near copy")
    seed: int = 0

    def validate(self) -> None:
        check_name(self.name)
        sources = [bool(self.texts), bool(self.examples), self.cluster is not None]
        if sum(sources) > 1:
            raise SliceError("give one of --text, --example or --cluster per slice")
        if not any(sources) and not self.where:
            raise SliceError("say what the slice holds: --text, --example, --cluster or --where")
        if self.example_mode not in ("mean", "each"):
            raise SliceError(f"--example-mode {self.example_mode!r}: use mean or each")
        if self.top_k is not None and self.top_k < 1:
            raise SliceError(f"--top-k {self.top_k}: must be at least 1")
        for label, t in (("--threshold", self.threshold), ("--exclude-threshold", self.exclude_threshold)):
            if t is not None:
                try:
                    check_threshold(t)
                except ValueError:
                    raise SliceError(f"{label} {t} is outside [-1, 1]; cosine similarity lives there") from None
        if any(sources) and self.top_k is None and self.threshold is None and self.cluster is None:
            raise SliceError("give --top-k N and/or --threshold T to cut the ranking")
        for t in self.templates or []:
            if "{}" not in t:
                raise SliceError(f"--template {t!r} needs a '{{}}' where the query goes")
        if self.cluster is not None and not (0 <= self.cluster < self.n_clusters):
            raise SliceError(f"--cluster {self.cluster}: clusters are numbered 0..{self.n_clusters - 1}")


@dataclass
class Slice:
    name: str
    ids: list[str]
    scores: np.ndarray  # float32, one per id (nan for filter-only slices)
    table: pl.DataFrame  # rank, id, path, score (+ the balance key)
    n_candidates: int
    n_excluded: int  # dropped by exclude_near
    group_counts: dict[str, int] = field(default_factory=dict)
    shortfall: str | None = None  # balanced slice with a group that had too few images
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"slice {self.name}: {len(self.ids)} images (of {self.n_candidates} candidates"
        if self.n_excluded:
            s += f", {self.n_excluded} excluded as near copies"
        s += ")"
        if self.group_counts:
            s += "; per group: " + ", ".join(f"{k}={v}" for k, v in self.group_counts.items())
        return s


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def text_query(encoder, texts: list[str], templates: list[str] | None) -> np.ndarray:  # noqa: ANN001
    """One unit vector for the query: every text in every template, embedded and averaged
    (prompt ensembling: steadier rankings than a single phrasing)."""
    temps = list(templates) if templates else list(DEFAULT_TEMPLATES)
    prompts = [t.format(q) for q in texts for t in temps]
    emb = encoder.encode_texts(prompts)
    emb = emb.numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    return _unit(_unit(emb).mean(axis=0))


def rank_scores(
    vectors: np.ndarray,
    queries: np.ndarray,
    *,
    per_example_k: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(score per row = max cosine to any query row, mask of rows among some query's top
    `per_example_k` or None). One query row: plain cosine ranking."""
    q = _unit(np.atleast_2d(queries))
    sims, _ = topk_similarity(vectors, q, 1, device=device)
    score = sims[:, 0]
    if per_example_k is None:
        return score, None
    k = min(per_example_k, len(vectors))
    _, idx = topk_similarity(q, vectors, k, device=device)
    mask = np.zeros(len(vectors), dtype=bool)
    mask[idx.ravel()] = True
    return score, mask


def order_rows(scores: np.ndarray, ids: list[str] | IdColumn) -> np.ndarray:
    """Rows by score descending, ties by id (deterministic whatever the store's order)."""
    if isinstance(ids, IdColumn):  # sorted by construction: ties by row, no float64 copy or rank array
        return np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    if all(a < b for a, b in itertools.pairwise(ids)):  # store reads come sorted: no N-string array
        id_rank = np.arange(len(ids))
    else:
        id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable"))
    return np.lexsort((id_rank, -scores.astype(np.float64)))


def balanced_rows(
    ordered: np.ndarray, groups: list[object], top_k: int | None
) -> tuple[np.ndarray, dict[str, int], str | None]:
    """Equal counts per group: `top_k // G` each (or the smallest group's size without top_k),
    the best-scoring rows of each group. A short group is reported, never silently papered over."""
    by_group: dict[str, list[int]] = {}
    for r in ordered:
        by_group.setdefault(str(groups[r]), []).append(int(r))
    if not by_group:
        return np.empty(0, np.int64), {}, None
    sizes = {g: len(v) for g, v in by_group.items()}
    quota = top_k // len(by_group) if top_k is not None else min(sizes.values())
    if top_k is not None and quota == 0:
        raise SliceError(f"--top-k {top_k} is smaller than the {len(by_group)} groups of --balanced-by")
    short = {g: n for g, n in sizes.items() if n < quota}
    taken = {g: rows[:quota] for g, rows in sorted(by_group.items())}
    keep = set(r for rows in taken.values() for r in rows)
    rows = np.array([r for r in ordered if r in keep], dtype=np.int64)
    counts = {g: len(v) for g, v in taken.items()}
    msg = None
    if short:
        msg = f"wanted {quota} per group; short: " + ", ".join(f"{g} has {n}" for g, n in sorted(short.items()))
    return rows, counts, msg


def build_slice(
    store: Store,
    collection: str,
    encoder: str | None,
    req: SliceRequest,
    *,
    text_encoder=None,  # noqa: ANN001 - an Encoder; built from the stored spec when None
    device: str | torch.device | None = None,
) -> Slice:
    """Compute a slice (nothing written; see `save_slice`)."""
    req.validate()
    encoder = store.require_encoder(collection, encoder)
    fields = ["path"] + ([req.balanced_by] if req.balanced_by else [])
    # Without --balanced-by only the picks' paths are needed: read them after ranking (streaming),
    # not one dict per point of the pool beside the matrix (~0.4 KiB per point)
    lean = not req.balanced_by
    payload = {} if lean else store.payloads(collection, req.where or None, fields)
    # the examples first: their path lookup scans the payload, whose pages are unmapped before the matrix
    ex = example_vectors(store, collection, encoder, req.examples, text_encoder, device) if req.examples else None
    ids, vectors = load_id_column(store, collection, encoder, req.where or None)  # no str per vector
    if not lean:  # a point added between the two reads is left out
        keep = ids.mask(payload)
        if not keep.all():
            ids, vectors = ids.take(keep), vectors[keep]
    n_candidates = len(ids)
    if n_candidates == 0:
        raise SliceError(f"slice {req.name} is empty: no embedded image matches --where")

    # 1. drop near copies of another set before ranking, so top-k fills up with allowed images
    n_excluded = 0
    if req.exclude_near:
        _, other = resolve_set(store, collection, req.exclude_near)
        with_vec = store.existing_ids(collection, other, encoder)  # failed images have no vector
        other = [i for i in other if i in with_vec]
        if other:
            ov = store.get_vectors(collection, encoder, other)
            near, _ = topk_similarity(vectors, ov, 1, device=device)
            cut = req.exclude_threshold
            if cut is None:
                from curate.dedup.near import default_threshold

                cut = default_threshold(store.encoders(collection).get(encoder))
            ok = near[:, 0] < cut
            n_excluded = int((~ok).sum())
            ids, vectors = ids.take(ok), vectors[ok]
        if not len(ids):
            raise SliceError(f"slice {req.name} is empty: every candidate is near {req.exclude_near}")

    # 2. score
    in_topk_of_some: np.ndarray | None = None
    if req.texts:
        enc = text_encoder
        if enc is None:
            from curate.encoders import encoder_from_spec

            enc = encoder_from_spec(store.encoders(collection)[encoder], device)
        scores, _ = rank_scores(vectors, text_query(enc, req.texts, req.templates), device=device)
    elif req.examples:
        if req.example_mode == "mean":
            scores, _ = rank_scores(vectors, _unit(_unit(ex).mean(axis=0)), device=device)
        else:
            scores, in_topk_of_some = rank_scores(vectors, ex, per_example_k=req.top_k, device=device)
    elif req.cluster is not None:
        from curate.dedup.semdedup import spherical_kmeans

        k = min(req.n_clusters, len(ids))
        cent = spherical_kmeans(vectors, k, seed=req.seed, device=device)
        sims, assign = topk_similarity(vectors, cent, 1, device=device)
        # clusters numbered by size, largest first (ties by centroid index): stable across reruns
        sizes = np.bincount(assign[:, 0], minlength=k)
        order = np.lexsort((np.arange(k), -sizes))
        number = np.empty(k, np.int64)
        number[order] = np.arange(k)
        in_cluster = number[assign[:, 0]] == req.cluster
        scores = np.where(in_cluster, sims[:, 0], -np.inf).astype(np.float32)
        in_topk_of_some = in_cluster
    else:
        scores = np.full(len(ids), np.nan, dtype=np.float32)

    # 3. cut
    ok = np.ones(len(ids), dtype=bool)
    if req.threshold is not None:
        ok &= scores >= req.threshold
    if in_topk_of_some is not None:
        ok &= in_topk_of_some
    ordered = order_rows(np.nan_to_num(scores, nan=0.0), ids)
    ordered = ordered[ok[ordered]]
    group_counts: dict[str, int] = {}
    shortfall = None
    per_example = req.examples and req.example_mode == "each"
    if req.balanced_by:
        groups = [payload[i].get(req.balanced_by) for i in ids]
        missing = [r for r in ordered if groups[r] is None]
        if len(missing) == len(ordered) and len(ordered):
            raise SliceError(f"--balanced-by {req.balanced_by}: no candidate has that payload field")
        ordered = np.array([r for r in ordered if groups[r] is not None], dtype=np.int64)
        ordered, group_counts, shortfall = balanced_rows(ordered, groups, None if per_example else req.top_k)
    elif req.top_k is not None and not per_example:
        ordered = ordered[: req.top_k]
    if len(ordered) == 0:
        raise SliceError(
            f"slice {req.name} is empty: nothing passes"
            + (f" --threshold {req.threshold}" if req.threshold is not None else " the filters")
            + "; lower the threshold or widen --where"
        )
    sel_ids = ids.strings(ordered)  # Python strings for the slice's rows only
    sel_scores = scores[ordered].astype(np.float32)
    if lean:  # the slice's paths, fetched by id: no scan of the pool's payload pages
        payload.update(store.payloads_of(collection, sel_ids, fields))
    table = pl.DataFrame(
        {
            "rank": np.arange(1, len(sel_ids) + 1),
            "id": sel_ids,
            "path": [str(payload[i].get("path") or "") for i in sel_ids],
            "score": sel_scores,
        }
    )
    if req.balanced_by:
        table = table.with_columns(
            pl.Series(req.balanced_by, [str(payload[i].get(req.balanced_by)) for i in sel_ids])
        )
    return Slice(
        name=req.name,
        ids=sel_ids,
        scores=sel_scores,
        table=table,
        n_candidates=n_candidates,
        n_excluded=n_excluded,
        group_counts=group_counts,
        shortfall=shortfall,
    )


def example_vectors(
    store: Store,
    collection: str,
    encoder: str,
    refs: list[str],
    image_encoder=None,  # noqa: ANN001
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Vectors of example images: stored ones by id/path; image files outside the pool are
    embedded with the same encoder (rebuilt from its stored spec)."""
    index = path_index(store, collection, ref_keys(refs))
    ids, missing = ids_from_refs(refs, index)
    files = [m for m in missing if Path(m).expanduser().is_file()]
    unknown = [m for m in missing if m not in files]
    if unknown:
        raise SliceError(f"example {unknown[0]!r} is not an id or path in {collection!r} nor an image file")
    parts = []
    if ids:
        with_vec = store.existing_ids(collection, ids, encoder)
        lacking = [i for i in ids if i not in with_vec]
        if lacking:
            raise SliceError(f"example {lacking[0]} has no {encoder} vector (it failed to embed); pick another")
        parts.append(store.get_vectors(collection, encoder, ids))
    if files:
        enc = image_encoder
        if enc is None:
            from curate.encoders import encoder_from_spec

            enc = encoder_from_spec(store.encoders(collection)[encoder], device)
        from curate.decode import DecodeError, decode_file

        batch = []
        for f in files:
            try:  # the embed decoder: pixel cap (decompression bombs), EXIF rotation, time limit
                img, _ = decode_file(Path(f).expanduser(), timeout=20.0)
                batch.append(enc.preprocess(img))
            except (OSError, DecodeError) as e:
                raise SliceError(f"example {f}: cannot read the image ({e})") from None
        parts.append(enc.encode_images(torch.stack(batch)).numpy())
    return _unit(np.concatenate(parts))


def save_slice(store: Store, collection: str, sl: Slice, out_dir: str | Path | None) -> Slice:
    """Tag members (`slice_<name>: true`), untag points that left the slice since the last run,
    and write `slice_<name>.csv` atomically."""
    key = tag_key(sl.name)
    store.set_payload(collection, sl.ids, {key: True})
    before = store.ids_where(collection, [Condition(key, "==", True)])
    stale = sorted(set(before) - set(sl.ids))
    if stale:
        store.set_payload(collection, stale, {key: None})
    store.flush()
    if out_dir is not None:
        path = write_atomic(Path(out_dir) / f"slice_{sl.name}.csv", sl.table.write_csv)
        sl.files = [str(path)]
    return sl
