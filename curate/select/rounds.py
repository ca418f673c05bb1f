"""Selection rounds as all-or-nothing units, recorded in the store's collection metadata.

A round moves through: pending (recorded with its ids before anything is written) -> manifest
written -> picks tagged -> exported (when asked) -> complete. A process killed anywhere in
between leaves a pending record, and the next command that touches selection (select, labeled,
unselect, export) resolves it before doing anything else:

  - the manifest files were all written (their id column equals the recorded ids): the round is
    FINISHED: the recorded ids are tagged again (idempotent) and the export is redone;
  - otherwise nothing was tagged yet (tagging starts after the manifest): the round is ROLLED
    BACK: stray tags with its name are removed and manifest files naming its ids are deleted.

Either way the store and the manifest agree: every id of a round's manifest is tagged with that
round, and no other point is.

`unselect` (remove a round's tags, move its manifests into `archive/` beside them) uses the same
pending record (kind "unselect") and is always rolled forward: both of its steps are idempotent.

Metadata layout (`store.get_meta(collection)["selection"]`):
    pending: {kind: select | unselect, round, name, ids, manifests, export: {dir, mode} | null}
    rounds:  {name: {round, count, manifests, export, state: complete | unselected}}
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.store import Condition, Store

SELECTED_ROUND = "selected_round"
SELECTION_NAME = "selection_name"
TAG_BATCH = 2_000  # ids tagged per store call; each call is one durable write
META_KEY = "selection"


def pause_point(stage: str) -> None:
    """Test hook: with CURATE_TEST_PAUSE="STAGE:MARKER", create MARKER and sleep at STAGE, so a
    test can kill -9 the process at a known moment. No effect otherwise."""
    spec = os.environ.get("CURATE_TEST_PAUSE", "")
    want, _, marker = spec.partition(":")
    if want == stage and marker:
        Path(marker).touch()
        time.sleep(600)


def selection_meta(store: Store, collection: str) -> dict[str, Any]:
    return dict(store.get_meta(collection).get(META_KEY) or {})


def _save(store: Store, collection: str, sel: dict[str, Any]) -> None:
    meta = store.get_meta(collection)
    meta[META_KEY] = sel
    store.set_meta(collection, meta)


def begin_round(store: Store, collection: str, rnd: int, name: str, ids: list[str], manifests: list[Path],
                export: dict[str, str] | None) -> None:
    sel = selection_meta(store, collection)
    sel["pending"] = {"round": rnd, "name": name, "ids": list(ids), "export": export,
                      "manifests": [str(Path(p).resolve()) for p in manifests]}
    _save(store, collection, sel)


def complete_round(store: Store, collection: str) -> None:
    sel = selection_meta(store, collection)
    p = sel.pop("pending")
    rounds = dict(sel.get("rounds") or {})
    rounds[p["name"]] = {"round": p["round"], "count": len(p["ids"]), "manifests": p["manifests"],
                         "export": p["export"], "state": "complete"}
    sel["rounds"] = rounds
    _save(store, collection, sel)


def tag_round(store: Store, collection: str, ids: list[str], rnd: int, name: str) -> None:
    for start in range(0, len(ids), TAG_BATCH):
        store.set_payload(collection, ids[start:start + TAG_BATCH], {SELECTED_ROUND: rnd, SELECTION_NAME: name})
        store.flush()
        pause_point("tag")


def read_manifest(path: str | os.PathLike) -> Any:
    """A select manifest as a polars DataFrame (CSV read as text so ids stay exact)."""
    import polars as pl

    p = Path(path)
    if p.suffix.lower() == ".parquet":
        return pl.read_parquet(p)
    return pl.read_csv(p, infer_schema_length=0)


def _manifest_ids(path: str) -> list[str] | None:
    try:
        return [str(v) for v in read_manifest(path)["id"].to_list()]
    except Exception:  # missing, half-written or foreign file: not this round's manifest
        return None


def resolve_pending(store: Store, collection: str, say: Callable[[str], None] | None = None) -> str | None:
    """Finish or roll back an interrupted round (see module doc). Returns what was done, or None."""
    from curate.select.export import export_files

    sel = selection_meta(store, collection)
    p = sel.get("pending")
    if not p:
        return None
    ids, name, rnd = list(p["ids"]), p["name"], int(p["round"])
    if p.get("kind") == "unselect":
        _finish_unselect(store, collection, p)
        msg = f"finished the interrupted unselect of round {name!r}"
        if say:
            say(msg)
        return msg
    found = {m: _manifest_ids(m) for m in p["manifests"]}
    if all(v == ids for v in found.values()):
        tag_round(store, collection, ids, rnd, name)
        exported = ""
        if p.get("export"):
            rows = read_manifest(p["manifests"][0])
            try:
                n, _ = export_files(rows, Path(p["export"]["dir"]), p["export"]["mode"])
                exported = f", {n} files re-exported to {p['export']['dir']}"
            except OSError as e:  # never let a failing export block every later command
                exported = f"; its export failed again ({e}): run 'curate export {name} --to DIR'"
        complete_round(store, collection)
        msg = f"finished the interrupted selection round {name!r}: {len(ids)} images tagged{exported}"
    else:
        store.delete_payload_keys(collection, [SELECTED_ROUND, SELECTION_NAME],
                                  [Condition(SELECTION_NAME, "==", name)])
        store.flush()
        for m, got in found.items():
            if got == ids:  # only files this round wrote
                Path(m).unlink()
            Path(m + ".tmp").unlink(missing_ok=True)
        sel = selection_meta(store, collection)
        sel.pop("pending", None)
        _save(store, collection, sel)
        msg = f"rolled back the interrupted selection round {name!r} (killed before its manifest was written)"
    if say:
        say(msg)
    return msg


def pending_round(store: Store, collection: str) -> dict[str, Any] | None:
    return selection_meta(store, collection).get("pending")


def used_rounds(store: Store, collection: str) -> tuple[int, set[str]]:
    """(highest round number ever used in metadata, names of complete rounds)."""
    sel = selection_meta(store, collection)
    rounds = sel.get("rounds") or {}
    nums = [int(r["round"]) for r in rounds.values()]
    if sel.get("pending"):
        nums.append(int(sel["pending"]["round"]))
    names = {n for n, r in rounds.items() if r.get("state") == "complete"}
    return max(nums, default=0), names


class RoundError(ValueError):
    """A round that does not exist, or cannot be exported as asked (one line for the user)."""


def find_round(store: Store, collection: str, ref: str | int) -> tuple[str, int, list[str]]:
    """(name, round number, ids in id order) of the round named `ref` or numbered `ref`."""
    if not store.has_collection(collection):
        raise RoundError(f"collection {collection!r} not found in {store.location}")
    pay = store.payloads(collection, fields=[SELECTED_ROUND, SELECTION_NAME])
    rounds: dict[tuple[int, str], list[str]] = {}
    for pid, p in pay.items():
        if p.get(SELECTED_ROUND) is not None:
            rounds.setdefault((int(p[SELECTED_ROUND]), str(p.get(SELECTION_NAME))), []).append(pid)
    text = str(ref)
    hits = [k for k in rounds if k[1] == text] or [k for k in rounds if text.isdigit() and k[0] == int(text)]
    if not hits:
        known = ", ".join(f"{n} {name!r} ({len(v)} images)" for (n, name), v in sorted(rounds.items())) or "none"
        raise RoundError(f"no selection round {text!r} in {collection!r}; rounds: {known}")
    (rnd, name), = hits
    return name, rnd, sorted(rounds[(rnd, name)])


def round_manifests(store: Store, collection: str, name: str, out_dir: str | os.PathLike) -> list[Path]:
    """The round's manifest files that exist: as recorded in the metadata, else the default place."""
    rec = (selection_meta(store, collection).get("rounds") or {}).get(name) or {}
    paths = [Path(m) for m in rec.get("manifests", [])]
    if not paths:
        folder = Path(out_dir) / collection
        paths = [folder / f"{name}.parquet", folder / f"{name}.csv"]
    return [p for p in paths if p.is_file()]


def _archive(path: Path) -> Path:
    folder = path.parent / "archive"
    folder.mkdir(exist_ok=True)
    target, k = folder / path.name, 1
    while target.exists():
        target, k = folder / f"{path.stem}.{k}{path.suffix}", k + 1
    os.replace(path, target)
    return target


def _finish_unselect(store: Store, collection: str, p: dict[str, Any]) -> list[Path]:
    store.delete_payload_keys(collection, [SELECTED_ROUND, SELECTION_NAME],
                              [Condition(SELECTION_NAME, "==", p["name"])])
    store.flush()
    pause_point("unselect")
    archived = [_archive(Path(m)) for m in p["manifests"] if Path(m).is_file()]
    sel = selection_meta(store, collection)
    sel.pop("pending", None)
    rounds = dict(sel.get("rounds") or {})
    rec = dict(rounds.get(p["name"]) or {"round": p["round"], "count": len(p["ids"])})
    rec.update(state="unselected", manifests=[], archived=[str(a) for a in archived])
    rounds[p["name"]] = rec
    sel["rounds"] = rounds
    _save(store, collection, sel)
    return archived


def unselect_round(store: Store, collection: str, ref: str | int, out_dir: str | os.PathLike,
                   say: Callable[[str], None] | None = None) -> tuple[str, int, list[Path]]:
    """Remove a round's tags and archive its manifests, all or nothing. Returns (name, images, archived)."""
    resolve_pending(store, collection, say)
    name, rnd, ids = find_round(store, collection, ref)
    manifests = [str(m.resolve()) for m in round_manifests(store, collection, name, out_dir)]
    sel = selection_meta(store, collection)
    sel["pending"] = {"kind": "unselect", "round": rnd, "name": name, "ids": ids, "manifests": manifests,
                      "export": None}
    _save(store, collection, sel)
    return name, len(ids), _finish_unselect(store, collection, sel["pending"])


def export_round(store: Store, collection: str, ref: str | int, dest: str | os.PathLike, mode: str,
                 out_dir: str | os.PathLike, url_prefix: str | None = None,
                 say: Callable[[str], None] | None = None) -> tuple[str, int, int, list[str]]:
    """Export a round again from its tags (which images) and manifest (their order and scores).
    Returns (name, exported, missing sources, notes)."""
    from curate.select.export import MODES, export_files, write_cvat, write_labelstudio

    if mode not in MODES:
        raise RoundError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    resolve_pending(store, collection, say)
    name, rnd, ids = find_round(store, collection, ref)
    notes: list[str] = []
    cols: dict[str, list[Any]] | None = None
    for m in round_manifests(store, collection, name, out_dir):
        df = read_manifest(m)
        if sorted(str(v) for v in df["id"].to_list()) == ids:
            cols = df.with_columns(df["rank"].cast(int)).sort("rank").to_dict(as_series=False)
            break
    pay = store.payloads(collection, fields=["path", "width", "height"])
    if cols is None:  # no manifest that matches the store: the tags decide, in id order, without scores
        notes.append(f"no manifest of round {name!r} matches its tags; exported in id order without scores")
        cols = {"rank": list(range(1, len(ids) + 1)), "id": ids, "path": [pay[i].get("path") for i in ids],
                "strategy": [None] * len(ids), "round": [rnd] * len(ids), "selection_name": [name] * len(ids)}
    out = Path(dest)
    if mode in ("symlink", "copy"):
        done, missing = export_files(cols, out, mode)
    elif mode == "labelstudio":
        path = write_labelstudio(cols, out, name, url_prefix)
        done, missing = len(ids), 0
        notes.append(f"Label Studio tasks: {path}")
    else:
        sizes = {i: (int(p["width"]), int(p["height"])) for i, p in pay.items()
                 if p.get("width") is not None and p.get("height") is not None}
        done, missing, path = write_cvat(cols, out, sizes)
        notes.append(f"CVAT manifest: {path}")
    return name, done, missing, notes
