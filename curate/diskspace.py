"""Free disk space checks for the embedded store.

Qdrant Edge writes through memory-mapped files: when the disk fills, the process dies with SIGBUS
("Bus error") and no message, and the store cannot be opened until space is freed. So the
pipeline stops itself, cleanly and resumably, while a margin is still free.
"""

from __future__ import annotations

import errno
import os
import shutil

from curate.store import StoreError

DEFAULT_MARGIN = 256 << 20  # room for the store's own housekeeping (WAL segments, segment merges)
# Measured on Edge: about 3.8 x the float32 vector per image (WAL, segment, raw-array cache),
# plus payload; rounded up.
_VECTOR_COPIES = 4
_PAYLOAD_BYTES = 4096


class DiskSpaceError(StoreError):
    """The store's disk is (nearly) full; the message says how much space is needed."""


def free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(path).free


def bytes_per_image(dim: int) -> int:
    return _VECTOR_COPIES * 4 * dim + _PAYLOAD_BYTES


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def is_disk_full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
