"""Output files that are never half-written."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path


class OutputError(ValueError):
    """An output file that could not be written (full disk, no permission), in one line."""


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary sibling, then rename it over `path`: a crash leaves the old
    file or the new one, never half of one. Creates the parent folder. A failed write (a full disk)
    removes the temporary file and raises OutputError naming the file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = _reason(e)
        if reason:
            raise OutputError(f"cannot write {path}: {reason}; free some space or write elsewhere (--out)") from e
        raise
    return path


_REASONS = {
    errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
}


def _reason(e: BaseException) -> str | None:
    """A full disk or a refused write, from an OSError or from a writer (polars, pyarrow) that only
    puts the OS error in its message."""
    if isinstance(e, OSError) and e.errno in _REASONS:
        return _REASONS[e.errno]
    text = str(e)
    for code, reason in _REASONS.items():
        if f"os error {code})" in text or os.strerror(code) in text:
            return reason
    return None
