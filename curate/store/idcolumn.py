"""Point ids as one sorted column of fixed-width UTF-8 bytes (numpy 'S'), not a list of Python strings.

Why: a list of N str costs ~90 bytes per id (the object, its text, the list slot): 0.9 GiB at 10M
points, held beside the matrix while an analysis runs. The 'S' column costs its width per id (36
bytes for a UUID) and makes Python strings only for the rows asked for (the picks, the slice).

Sorted ascending: UTF-8 bytes sort as their strings sort (code point order), so the column's order is
the order `load_vectors` gives and lookups are a binary search on the bytes. Never use searchsorted
on numpy's StringDType instead: in numpy 2.4 it gives wrong rows (or crashes) on strings longer than
15 bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

DECODE_BLOCK = 65_536
LOOKUP_BLOCK = 65_536


def encode_ids(ids: Iterable[str]) -> np.ndarray:
    """UTF-8 bytes of `ids` as an 'S' array as wide as the longest (never truncated)."""
    out = np.array([str(i).encode("utf-8") for i in ids], dtype=bytes)
    return out if len(out) else np.empty(0, dtype="S1")


class IdColumn(Sequence[str]):
    """Unique ids, sorted ascending, in one 'S' array; reads as a sequence of str (decoded per access)."""

    def __init__(self, raw: np.ndarray, *, check: bool = True) -> None:
        if raw.dtype.kind != "S" or raw.ndim != 1:
            raise TypeError(f"an id column is a 1-D bytes ('S') array, not {raw.dtype} x {raw.ndim}-D")
        if check and len(raw) > 1 and not bool((raw[1:] > raw[:-1]).all()):
            raise ValueError("ids must be unique and sorted ascending")
        self.raw = raw

    @classmethod
    def from_strings(cls, ids: Iterable[str]) -> IdColumn:
        """From sorted unique strings (what `Store.load_vectors` returns); checked."""
        return cls(encode_ids(ids))

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> IdColumn: ...

    def __getitem__(self, i: int | slice) -> str | IdColumn:
        if isinstance(i, slice):
            if i.step is not None and i.step < 0:
                raise ValueError("an id column stays ascending: no negative step")
            return IdColumn(self.raw[i], check=False)
        return bytes(self.raw[i]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self.raw), DECODE_BLOCK):  # one block of str alive at a time
            yield from (b.decode("utf-8") for b in self.raw[lo : lo + DECODE_BLOCK].tolist())

    def take(self, keep: np.ndarray) -> IdColumn:
        """The ids of a boolean row mask, or of ascending row numbers (checked), still sorted."""
        keep = np.asarray(keep)
        return IdColumn(self.raw[keep], check=keep.dtype != bool)

    def strings(self, rows: Iterable[int] | np.ndarray) -> list[str]:
        """Python strings of the given rows, in that order (only these are made)."""
        return [b.decode("utf-8") for b in self.raw[np.asarray(rows, dtype=np.int64)].tolist()]

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Row of each id (int64), -1 for an id not in the column; encoded a block at a time."""
        it = iter(ids)
        parts = []
        while len(want := encode_ids(itertools.islice(it, LOOKUP_BLOCK))):
            parts.append(self._rows(want))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _rows(self, want: np.ndarray) -> np.ndarray:
        if not len(self.raw):
            return np.full(len(want), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.raw, want), len(self.raw) - 1)
        return np.where(self.raw[pos] == want, pos, -1).astype(np.int64)

    def mask(self, ids: Iterable[str]) -> np.ndarray:
        """Boolean row mask of the ids present in the column (others are ignored)."""
        out = np.zeros(len(self.raw), dtype=bool)
        it = iter(ids)
        while len(want := encode_ids(itertools.islice(it, LOOKUP_BLOCK))):
            r = self._rows(want)
            out[r[r >= 0]] = True
        return out
