"""A derived, rebuildable copy of one encoder's vectors as raw arrays, beside its Edge shard.

Why: qdrant-edge-py hands vectors back as Python lists of floats; 100k x 512 takes ~15 s to read
that way, so every analysis would pay minutes at 1M images. This cache reads at disk speed.

Files (append-only):  ids.bin   16 bytes per row: the point's UUID
                      rows.f32  dim float32 per row
The shard stays the source of truth. Vectors are written once per (point, encoder) and the shard
is written before the cache, so the cache can only lag the shard; `load` checks the count and a
sample of vectors against the shard and rebuilds from the shard on any mismatch.

A seal (seal.json: the shard's count and the two files' sizes) says the cache mirrored the shard
exactly when the writing process closed the store; a sealed cache is read without opening the
shard at all (opening an Edge vector shard maps and touches all its vectors: 2 GiB of RSS at
1M x 512). Writers break the seal before their first shard write and seal again only on a clean
close of a cache that was sealed (or new) before, so a process killed mid-write leaves no seal and
the next read validates against the shard as above.

Reads are out of core: `load` keeps only the ids in memory (16 bytes per row) and maps the rows
file; `gather` then copies the wanted rows, in the wanted order and dtype, into the one matrix the
analysis gets, reading the file in blocks. Peak memory is that matrix plus one block, not two full
copies (read everything, then reorder).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

SAMPLE_CHECKS = 32
GATHER_BLOCK_ROWS = 32_768  # 64 MiB of float32 at d=512


def uuid_bytes(ids: list[str]) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(ids).replace("-", "")), dtype=np.uint8).reshape(-1, 16)


def uuid_strings(raw: np.ndarray) -> list[str]:
    """Canonical UUID strings of 16-byte rows (one hex pass; ~10x faster than uuid.UUID per row)."""
    h = np.ascontiguousarray(raw, dtype=np.uint8).tobytes().hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, len(h), 32)]


def id_order(raw: np.ndarray) -> np.ndarray:
    """Row order that sorts ids as their string form sorts (hex of the bytes, big-endian)."""
    hi = raw[:, :8].copy().view(">u8").ravel()
    lo = raw[:, 8:].copy().view(">u8").ravel()
    return np.lexsort((lo, hi))


class VectorCache:
    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim

    @property
    def _ids(self) -> Path:
        return self.folder / "ids.bin"

    @property
    def _rows(self) -> Path:
        return self.folder / "rows.f32"

    @property
    def _seal(self) -> Path:
        return self.folder / "seal.json"

    def _sizes(self) -> list[int]:
        return [p.stat().st_size if p.exists() else 0 for p in (self._ids, self._rows)]

    def sealed_count(self) -> int | None:
        """The shard's vector count recorded by the last clean close, if the files are unchanged since."""
        try:
            seal = json.loads(self._seal.read_text())
            return int(seal["count"]) if seal.get("sizes") == self._sizes() else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def seal(self, count: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._seal.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": int(count), "sizes": self._sizes()}))
        os.replace(tmp, self._seal)

    def unseal(self) -> None:
        self._seal.unlink(missing_ok=True)

    def unique_count(self) -> int:
        return len(self._read()[0])

    def load_sealed(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, src) like `load`, without the shard, when the seal holds; else None."""
        count = self.sealed_count()
        if count is None:
            return None
        ids, _, src = self._read()
        return (ids, src) if len(ids) == count else None

    def append(self, ids: list[str], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._ids, "ab") as f:
            f.write(uuid_bytes(ids).tobytes())
        with open(self._rows, "ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

    def _read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids uint8 [n,16], rows [m,dim] float32 memory-mapped, src [n]: the row of each id).
        A torn last write is ignored, and for an id written twice the last row wins."""
        if not self._ids.exists() or not self._rows.exists():
            return np.empty((0, 16), np.uint8), np.empty((0, self.dim), np.float32), np.empty(0, np.int64)
        n = min(self._ids.stat().st_size // 16, self._rows.stat().st_size // (4 * self.dim))
        ids = np.fromfile(self._ids, dtype=np.uint8, count=n * 16).reshape(n, 16)
        rows = (np.memmap(self._rows, dtype=np.float32, mode="r", shape=(n, self.dim)) if n
                else np.empty((0, self.dim), np.float32))
        src = np.arange(n)
        _, last = np.unique(ids[::-1], axis=0, return_index=True)
        if len(last) != n:
            src = np.sort(n - 1 - last)
            ids = ids[src]
        return ids, rows, src

    def load(
        self,
        shard_count: int,
        shard_vectors: Callable[[list[str]], np.ndarray],
        shard_iter: Callable[[], Iterator[tuple[list[str], np.ndarray]]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validated (ids, src): each id and its row in the rows file (read them with `gather`);
        rebuilt from the shard when the cache is missing or stale."""
        ids, rows, src = self._read()
        if not (len(ids) == shard_count and self._sample_matches(ids, rows, src, shard_vectors)):
            ids, src = self.rebuild(shard_iter)
        self.seal(shard_count)  # checked against the shard just now: later reads need not open it
        return ids, src

    def _sample_matches(self, ids: np.ndarray, rows: np.ndarray, src: np.ndarray, shard_vectors) -> bool:
        if len(ids) == 0:
            return True
        pick = np.random.default_rng(len(ids)).choice(len(ids), size=min(SAMPLE_CHECKS, len(ids)), replace=False)
        try:
            want = shard_vectors(uuid_strings(ids[pick]))
        except KeyError:
            return False
        return bool(np.allclose(want, rows[src[pick]], atol=1e-6))

    def gather(self, src: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Rows `src` of the rows file, in that order, as one new [len(src), dim] matrix of `dtype`.

        The file is read in ascending blocks (sequential I/O, one block in memory at a time) and each
        block's rows are scattered to their places in the output."""
        out = np.empty((len(src), self.dim), dtype=dtype)
        if len(src) == 0:
            return out
        by_row = np.argsort(src, kind="stable")  # output positions in file order
        rows_sorted = src[by_row]
        with open(self._rows, "rb") as f:
            lo = 0
            while lo < len(rows_sorted):
                first = int(rows_sorted[lo])
                hi = int(np.searchsorted(rows_sorted, first + GATHER_BLOCK_ROWS, side="left"))
                count = int(rows_sorted[hi - 1]) - first + 1
                f.seek(first * 4 * self.dim)
                block = np.fromfile(f, dtype=np.float32, count=count * self.dim).reshape(count, self.dim)
                out[by_row[lo:hi]] = block[rows_sorted[lo:hi] - first]
                lo = hi
        return out

    def rebuild(self, shard_iter) -> tuple[np.ndarray, np.ndarray]:
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        fresh = VectorCache(tmp, self.dim)
        fresh.folder.mkdir(parents=True)
        fresh._ids.touch()
        fresh._rows.touch()
        for batch_ids, vecs in shard_iter():
            fresh.append(batch_ids, vecs)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(tmp, self.folder)
        ids, _, src = self._read()
        return ids, src

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
