"""`curate report`: collect, make thumbnails, render one HTML file."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from curate.files import write_atomic
from curate.maps import MapSettings, map_pool, stored_coordinates
from curate.report import collect as c
from curate.report.data import map_encoder, metadata_keys, slice_keys
from curate.report.density import density_and_neighbours
from curate.report.render import render
from curate.report.thumbs import cache_folder, export_thumbs
from curate.store import Store


@dataclass
class ReportInfo:
    path: Path
    thumbs_dir: Path
    size_bytes: int
    points: int
    thumbs: int
    seconds: float


def build_report(
    store: Store,
    collection: str,
    out: str | Path,
    *,
    encoder: str | None = None,
    max_thumbs: int = 20_000,
    gallery: int = 60,
    results_dir: Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ReportInfo:
    """Write the report to `out` (HTML) and its thumbnails to `<stem>_thumbs/` beside it."""
    start = time.perf_counter()
    say = log or (lambda _m: None)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out} must end in .html")
    if gallery < 1 or max_thumbs < 0:
        raise ValueError("--gallery must be at least 1 and --max-thumbs at least 0")
    results = results_dir or out.parent
    enc = map_encoder(store, collection, encoder)
    payloads = store.payloads(collection)

    # The map is kept current (a no-op when it is): a report never shows a stale or partial layout.
    prior = store.get_meta(collection).get("maps", {}).get(enc, {}).get("settings")
    cfg = MapSettings(**{k: v for k, v in prior.items() if k != "metric"}) if prior else MapSettings()
    res = map_pool(store, collection, enc, cfg, log=say)
    if res.reused != res.total:
        say(res.summary())
    ids, X = store.load_vectors(collection, enc)
    coords = stored_coordinates(store, collection, enc)
    xy = np.array([coords[i] for i in ids], dtype=np.float32)
    density, nbrs = density_and_neighbours(X, seed=seed)
    del X
    row_of = {pid: r for r, pid in enumerate(ids)}
    rng = np.random.default_rng(seed)

    def tile(pid: str, lines: list[str] | None = None, mark: str | None = None) -> c.Tile:
        p = payloads.get(pid, {})
        return c.Tile(pid, c.shown_path(p), c.sha_of(p), lines or [], mark, row_of.get(pid, -1))

    def sample(members: list[str]) -> list[str]:
        if len(members) <= gallery:
            return members
        return [members[i] for i in np.sort(rng.choice(len(members), size=gallery, replace=False))]

    sections: dict[str, Any] = {}
    # -- selection: the latest round, in rank order with its scores
    rounds = [(p.get("selected_round"), p.get("selection_name")) for p in payloads.values() if p.get("selected_round")]
    if rounds:
        rnd, name = max(rounds, key=lambda t: t[0])
        members = [pid for pid, p in payloads.items() if p.get("selected_round") == rnd]
        found = c.selection_manifest(results, str(name), set(members))
        if found is not None:
            df, path = found
            skip = {"rank", "id", "path", "strategy", "round", "selection_name"}
            score_cols = [k for k in df.columns if k not in skip]
            tiles = []
            for r in df.head(gallery).iter_rows(named=True):
                lines = [f"#{r['rank']}"] + [_fmt(k, r[k]) for k in score_cols if r[k] is not None]
                tiles.append(tile(str(r["id"]), lines))
            strategy = df["strategy"][0] if "strategy" in df.columns else "?"
            note = f"rank order and scores from {path.name}; strategy {strategy}"
        else:
            tiles = [tile(pid) for pid in sorted(members)[:gallery]]
            note = f"no manifest for {name!r} found under {results}; shown without ranks"
        shown = "first" if len(members) > gallery else "all"
        sections["selection"] = c.Gallery(f"Selection {name} (round {rnd})", len(members), tiles,
                                          f"{shown} {len(tiles)} of {len(members)}; {note}")
    # -- duplicate groups, largest first, the kept image marked
    groups: dict[str, list[str]] = {}
    for pid, p in payloads.items():
        if p.get("dup_group"):
            groups.setdefault(str(p["dup_group"]), []).append(pid)
    if groups:
        table = c.dedup_table(results, collection)
        sim = {}
        if table is not None:
            sim = dict(zip(table["id"].to_list(), table["similarity"].to_list(), strict=True))
        order = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        shown_groups = []
        for keeper, members in order[: max(1, gallery // 3)]:
            members = sorted(members, key=lambda m: (m != keeper, m))[:8]
            shown_groups.append([
                tile(m, [] if m == keeper or m not in sim else [f"similarity {sim[m]:.3f}"],
                     "kept" if not payloads[m].get("is_duplicate") else "duplicate")
                for m in members
            ])
        n_members = sum(len(v) for v in groups.values())
        sections["duplicates"] = c.Groups(
            "Duplicate groups", len(groups), shown_groups,
            f"{len(shown_groups)} largest of {len(groups)} groups ({n_members} images); up to 8 images per group")
    # -- outliers: lowest embedding density
    if len(ids):
        low = np.argsort(density, kind="stable")[:gallery]
        sections["outliers"] = c.Gallery(
            "Outliers", len(ids), [tile(ids[r], [f"density {density[r]:.3f}"]) for r in low],
            f"the {len(low)} images least similar to their 10 nearest neighbours (of {len(ids)})")
    # -- slices
    # -- evaluate: the learning curves `curate evaluate` wrote for this collection
    evaluation = c.evaluation(results, collection)
    if evaluation is not None:
        sections["evaluate"] = evaluation
    sections["slices"] = []
    for key in slice_keys(payloads):
        members = sorted(pid for pid, p in payloads.items() if p.get(key) is True)
        picked = sample(members)
        sections["slices"].append(c.Gallery(
            f"Slice {key.removeprefix('slice_')}", len(members), [tile(m) for m in picked],
            f"{'random sample of ' if len(picked) < len(members) else ''}{len(picked)} of {len(members)}"))
    # -- leaks between two sets
    sections["leaks"] = []
    for stem, df in c.leak_tables(results, set(payloads)):
        pairs = []
        for r in df.head(gallery // 2).iter_rows(named=True):
            lines = [f"similarity {r['similarity']:.3f}"] + (["identical bytes"] if r.get("exact") else [])
            pairs.append([tile(str(r["a_id"]), lines, "A"), tile(str(r["b_id"]), [], "B")])
        sections["leaks"].append(c.Groups(f"Leaks {stem}", len(df), pairs,
                                          f"{len(pairs)} most similar of {len(df)} pairs (A = first set, B = second)"))

    # -- thumbnails: every gallery image, then a seeded sample of the map for hovering
    gallery_tiles = [t for s in _all_tiles(sections) for t in s]
    wanted = list(dict.fromkeys(t.id for t in gallery_tiles))
    wanted_set = set(wanted)
    rest = [i for i in ids if i not in wanted_set]
    room = max(0, max_thumbs - len(wanted))
    if len(rest) > room:
        rest = [rest[i] for i in np.sort(rng.choice(len(rest), size=room, replace=False))]
    items = [(c.sha_of(payloads[i]), str(payloads[i].get("path") or "")) for i in [*wanted, *rest]
             if c.sha_of(payloads.get(i, {}))]
    thumbs_dir = out.with_name(out.stem + "_thumbs")
    say(f"thumbnails: {len(set(items))} (cached under {cache_folder(store.location, results)})")
    have = export_thumbs(items, cache_folder(store.location, results), thumbs_dir)

    # -- summary
    failed = [(c.shown_path(p), str(p.get("error") or "")) for p in payloads.values() if p.get("failed")]
    encs = {name: store.count_vectors(collection, name) for name in sorted(store.encoders(collection))}
    keys = metadata_keys(payloads)
    summary = {
        "collection": collection, "store": store.location, "points": len(payloads), "mapped": len(ids),
        "failed": len(failed), "failed_rows": sorted(failed)[:200], "encoders": encs, "map_encoder": enc,
        "selected": sum(1 for p in payloads.values() if p.get("selected_round")),
        "duplicates": sum(1 for p in payloads.values() if p.get("is_duplicate")),
        "slices": len(slice_keys(payloads)),
        "distributions": c.distributions(payloads, [*keys, "format"] if any("format" in p for p in payloads.values())
                                         else keys),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    fields = c.colour_fields(ids, payloads, density)
    map_data = _map_json(ids, xy, payloads, fields, nbrs, have, thumbs_dir.name)
    html = render(summary, sections, map_data, thumbs_dir.name, have)
    write_atomic(out, lambda p: p.write_text(html, encoding="utf-8"))
    return ReportInfo(out, thumbs_dir, out.stat().st_size, len(ids), len(have), time.perf_counter() - start)


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{key} {value:.3g}"
    return f"{key} {value}"


def _all_tiles(sections: dict[str, Any]) -> list[list[c.Tile]]:
    out: list[list[c.Tile]] = []
    for s in sections.values():
        for part in s if isinstance(s, list) else [s]:
            if isinstance(part, c.Gallery):
                out.append(part.tiles)
            elif isinstance(part, c.Groups):
                out.extend(part.groups)
    return out


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _map_json(
    ids: list[str],
    xy: np.ndarray,
    payloads: dict[str, dict[str, Any]],
    fields: list[c.ColourField],
    nbrs: np.ndarray | None,
    have: set[str],
    thumbs_dir: str,
) -> dict[str, Any]:
    """Columns as little-endian typed arrays in base64: 1M points stay a few tens of MB."""
    if len(xy):
        centre = (xy.max(0) + xy.min(0)) / 2
        scale = float(np.abs(xy - centre).max()) or 1.0
        norm = ((xy - centre) / scale * 0.95).astype("<f4")
    else:
        norm = xy.astype("<f4")
    shas = sorted(have)
    sha_index = {s: k for k, s in enumerate(shas)}
    thumb = np.array([sha_index.get(c.sha_of(payloads.get(i, {})) or "", -1) for i in ids], dtype="<i4")
    return {
        "n": len(ids),
        "x": _b64(norm[:, 0]), "y": _b64(norm[:, 1]),
        "paths": [c.shown_path(payloads.get(i, {})) for i in ids],
        "fields": [{"name": f.name, "labels": f.labels, "colours": f.colours, "counts": f.counts(),
                    "codes": _b64(f.codes.astype("<u2"))} for f in fields],
        "thumbs": shas, "thumb": _b64(thumb), "thumbDir": thumbs_dir,
        "nbrs": None if nbrs is None else _b64(nbrs.astype("<i4")), "k": 0 if nbrs is None else int(nbrs.shape[1]),
    }
