"""Hand a selection round to a labeling tool: links or copies of the images, or a task file.

  symlink / copy   `<rank>_<file name>` in a folder (rank order, so a tool that sorts by name
                   shows the picks top-down); names over 255 bytes are cut, keeping rank and extension
  labelstudio      `<name>.labelstudio.json`: a list of Label Studio tasks, one per image:
                   {"data": {"image": PATH_OR_URL, "curate_id", "rank", "round", "selection_name",
                   and every score column of the manifest (distance, density, group, ...)}}
  cvat             the symlinks plus CVAT's dataset manifest `manifest.jsonl` (version 1.1, type
                   images, one line per image: name without extension, extension, width, height,
                   and the scores under "meta"), so the folder can be attached as a CVAT share
                   or cloud storage, or its files uploaded in rank order.

Every writer replaces what an earlier, possibly interrupted, export of the same round left.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from curate.files import write_atomic
from curate.select.rounds import pause_point

MODES = ("symlink", "copy", "labelstudio", "cvat")
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_BASE = ("rank", "id", "path", "strategy", "round", "selection_name")


def link_name(rank: int, width: int, name: str) -> str:
    """`<rank>_<name>`, shortened to NAME_MAX bytes when needed: the stem is cut (on a character
    boundary) and marked with '~', the extension kept. The rank prefix keeps names unique."""
    prefix = f"{rank:0{width}d}_".encode()
    raw = os.fsencode(name)
    if len(prefix) + len(raw) <= NAME_MAX:
        return os.fsdecode(prefix + raw)
    suffix = os.fsencode(Path(name).suffix)
    if len(suffix) > 16:
        suffix = b""
    cut = NAME_MAX - len(prefix) - len(suffix) - 1
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # do not split a UTF-8 character
        cut -= 1
    return os.fsdecode(prefix + raw[:cut] + b"~" + suffix)


def _width(n: int) -> int:
    return max(5, len(str(n)))


def export_files(cols: Any, dest: Path, mode: str = "symlink") -> tuple[int, int]:
    """Symlink (default, no copies of the pool) or copy the picks as `<rank>_<name>`; returns
    (exported, missing sources). `cols`: manifest columns (a mapping or a DataFrame). Redoing an
    export replaces its links, so an interrupted export can simply be run again."""
    dest.mkdir(parents=True, exist_ok=True)
    done = missing = 0
    ranks = [int(r) for r in cols["rank"]]
    width = _width(len(ranks))
    for rank, src in zip(ranks, cols["path"], strict=True):
        if not src or not Path(src).is_file():
            missing += 1
            continue
        target = dest / link_name(rank, width, Path(src).name)
        if target.is_symlink() or target.exists():
            target.unlink()
        if mode == "copy":
            shutil.copy2(src, target)
        else:
            target.symlink_to(Path(src).resolve())
        done += 1
        if done == 1:
            pause_point("export")
    return done, missing


def _plain(v: Any) -> Any:
    """A JSON value: numbers stay numbers (text from a CSV manifest is parsed), NaN becomes null."""
    if isinstance(v, str):
        try:
            v = float(v) if any(c in v for c in ".eE") or v.lower() in ("nan", "inf", "-inf") else int(v)
        except ValueError:
            return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def _scores(cols: dict[str, list[Any]], r: int) -> dict[str, Any]:
    return {k: _plain(cols[k][r]) for k in cols if k not in _BASE}


def write_labelstudio(cols: dict[str, list[Any]], dest: Path, name: str, url_prefix: str | None = None) -> Path:
    """Label Studio tasks (see module doc). `url_prefix` turns paths into URLs Label Studio can
    load, e.g. "/data/local-files/?d=" with LOCAL_FILES_DOCUMENT_ROOT=/ (the leading '/' of each
    absolute path is dropped after a prefix)."""
    tasks = []
    for r in range(len(cols["id"])):
        path = str(cols["path"][r] or "")
        image = url_prefix + path.lstrip("/") if url_prefix else path
        data = {"image": image, "curate_id": str(cols["id"][r]), "rank": int(cols["rank"][r]),
                "round": _plain(cols["round"][r]), "selection_name": str(cols["selection_name"][r]),
                **_scores(cols, r)}
        tasks.append({"data": data})
    text = json.dumps(tasks, indent=1, ensure_ascii=False)
    return write_atomic(dest / f"{name}.labelstudio.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_cvat(cols: dict[str, list[Any]], dest: Path, sizes: dict[str, tuple[int, int]]) -> tuple[int, int, Path]:
    """Links in rank order plus CVAT's `manifest.jsonl` naming them (see module doc)."""
    done, missing = export_files(cols, dest, "symlink")
    width = _width(len(cols["rank"]))
    lines = [json.dumps({"version": "1.1"}), json.dumps({"type": "images"})]
    for r in range(len(cols["id"])):
        src = cols["path"][r]
        if not src or not (dest / link_name(int(cols["rank"][r]), width, Path(src).name)).exists():
            continue
        link = Path(link_name(int(cols["rank"][r]), width, Path(src).name))
        item: dict[str, Any] = {"name": link.stem, "extension": link.suffix}
        size = sizes.get(str(cols["id"][r]))
        if size:
            item["width"], item["height"] = size
        item["meta"] = {"curate_id": str(cols["id"][r]), **_scores(cols, r)}
        lines.append(json.dumps(item, ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    path = write_atomic(dest / "manifest.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return done, missing, path
