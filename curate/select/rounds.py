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

Metadata layout (`store.get_meta(collection)["selection"]`):
    pending: {round, name, ids, manifests, export: {dir, mode} | null}
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


def resolve_pending(store: Store, collection: str, say: Callable[[str], None] | None = None,
                    export: Callable[[Any, Path, str], tuple[int, int]] | None = None) -> str | None:
    """Finish or roll back an interrupted round (see module doc). Returns what was done, or None."""
    sel = selection_meta(store, collection)
    p = sel.get("pending")
    if not p:
        return None
    ids, name, rnd = list(p["ids"]), p["name"], int(p["round"])
    found = {m: _manifest_ids(m) for m in p["manifests"]}
    if all(v == ids for v in found.values()):
        tag_round(store, collection, ids, rnd, name)
        exported = ""
        if p.get("export") and export is not None:
            rows = read_manifest(p["manifests"][0])
            n, _ = export(rows, Path(p["export"]["dir"]), p["export"]["mode"])
            exported = f", {n} files re-exported to {p['export']['dir']}"
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
