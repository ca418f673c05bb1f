"""A small progress file that a running `curate embed` keeps under the embedded store, so that
`curate info` can say what is running and how far it is while the store is locked by the writer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from curate.files import write_atomic

FILE = "embed-progress.json"


def write(store_dir: str | os.PathLike, **facts: Any) -> None:
    data = {"pid": os.getpid(), "updated": time.time(), **facts}
    text = json.dumps(data, sort_keys=True)
    write_atomic(Path(store_dir) / FILE, lambda tmp: tmp.write_text(text))


def clear(store_dir: str | os.PathLike) -> None:
    (Path(store_dir) / FILE).unlink(missing_ok=True)


def running(store_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The progress of the embed that holds the store now, or None (no file, or its process is
    gone: a killed run leaves a stale file behind)."""
    try:
        data = json.loads((Path(store_dir) / FILE).read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return data


def describe(data: dict[str, Any]) -> str:
    done, total = int(data.get("done", 0)), int(data.get("total", 0))
    share = f" ({100 * done / total:.0f}%)" if total else ""
    elapsed = time.time() - float(data.get("started", time.time()))
    return (
        f"curate embed (pid {data['pid']}) is writing collection {data.get('collection')!r} with "
        f"{data.get('encoder')}: {done} of {total} images to embed done{share}, "
        f"{int(data.get('stored', 0))} stored in all, running for {elapsed:.0f} s"
    )
