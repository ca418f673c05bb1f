"""The Store interface: where vectors and payload live.

Layout, the same in both backends. A curate *collection* is:
  - one payload collection: one point per image (id, path, sha256, width, height, metadata,
    `failed`/`error` for images that could not be embedded, tags written by analyses);
  - one vector collection per encoder, holding that encoder's named vector under the same ids;
  - a small metadata record (encoder specs, so analyses can rebuild an encoder's text tower).
Neither Qdrant Edge nor a Qdrant server can add a named vector to existing segments, so a second
encoder gets its own vector collection instead of forcing a rewrite of every point.

Write order makes resume safe: payload first, vectors second; "already embedded" means
"has a vector for this encoder", so a crash between the two writes only costs a re-embed.

Ids are UUID strings (see sources.point_id). Matrices come back sorted by id, so analyses are
deterministic whatever order a backend scrolls in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from curate.store.filters import Condition

Payload = dict[str, Any]


class StoreError(RuntimeError):
    """A store problem with a one-line, actionable message."""


class StoreLockedError(StoreError):
    pass


class Store(ABC):
    """Backend-neutral access to collections of image points."""

    location: str  # human-readable: a path or a URL

    # ---- collections and metadata ------------------------------------------------------
    @abstractmethod
    def list_collections(self) -> list[str]: ...

    @abstractmethod
    def has_collection(self, collection: str) -> bool: ...

    @abstractmethod
    def ensure_collection(self, collection: str) -> None: ...

    @abstractmethod
    def drop_collection(self, collection: str) -> None: ...

    @abstractmethod
    def get_meta(self, collection: str) -> dict[str, Any]:
        """Collection metadata; `encoders` maps encoder name -> spec dict (with `dim`)."""

    @abstractmethod
    def set_meta(self, collection: str, meta: dict[str, Any]) -> None: ...

    def encoders(self, collection: str) -> dict[str, dict[str, Any]]:
        return dict(self.get_meta(collection).get("encoders", {}))

    def ensure_encoder(self, collection: str, name: str, spec: dict[str, Any]) -> None:
        """Register an encoder (spec must hold `dim`) and create its vector collection."""
        meta = self.get_meta(collection)
        known = meta.setdefault("encoders", {})
        if name in known and int(known[name]["dim"]) != int(spec["dim"]):
            raise StoreError(
                f"encoder {name!r} is stored with dim {known[name]['dim']}, not {spec['dim']}; "
                "use another --collection"
            )
        self._create_vector_collection(collection, name, int(spec["dim"]))
        if known.get(name) != spec:
            known[name] = spec
            self.set_meta(collection, meta)

    def require_encoder(self, collection: str, encoder: str | None) -> str:
        """Resolve an `--encoder` option: the given name, or the only one stored."""
        if not self.has_collection(collection):
            raise StoreError(
                f"collection {collection!r} not found in {self.location}; "
                f"run 'curate embed SOURCE --collection {collection}' first"
            )
        names = sorted(self.encoders(collection))
        if not names:
            raise StoreError(f"collection {collection!r} holds no vectors yet; run 'curate embed' first")
        if encoder is None:
            if len(names) > 1:
                raise StoreError(
                    f"collection {collection!r} has several encoders; pick one with --encoder: "
                    + ", ".join(names)
                )
            return names[0]
        if encoder not in names:
            raise StoreError(f"unknown encoder {encoder!r} in {collection!r}; stored: {', '.join(names)}")
        return encoder

    @abstractmethod
    def _create_vector_collection(self, collection: str, encoder: str, dim: int) -> None: ...

    # ---- writes ----------------------------------------------------------------------------
    @abstractmethod
    def upsert_points(self, collection: str, ids: list[str], payloads: list[Payload]) -> None:
        """Create points or replace their whole payload."""

    @abstractmethod
    def upsert_vectors(self, collection: str, encoder: str, ids: list[str], vectors: np.ndarray) -> None:
        """Write one encoder's vectors (float32, L2-normalized rows) for existing points."""

    @abstractmethod
    def set_payload(self, collection: str, ids: list[str], payload: Payload) -> None:
        """Merge the same fields into many points' payload (one call, not one per point)."""

    def set_payloads(self, collection: str, items: dict[str, Payload]) -> None:
        """Merge per-point fields. Points sharing identical fields are grouped into one call."""
        groups: dict[str, tuple[Payload, list[str]]] = {}
        for pid, fields in items.items():
            key = repr(sorted(fields.items()))
            groups.setdefault(key, (fields, []))[1].append(pid)
        for fields, ids in groups.values():
            self.set_payload(collection, ids, fields)

    @abstractmethod
    def delete_payload_keys(
        self, collection: str, keys: list[str], where: list[Condition] | None = None
    ) -> None:
        """Remove fields from every point matching `where` (all points when None)."""

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def build_index(self, collection: str, encoder: str) -> None:
        """Build the ANN index for one encoder (off by default: analyses scan vectors)."""

    # ---- reads -----------------------------------------------------------------------------
    @abstractmethod
    def count(self, collection: str, where: list[Condition] | None = None) -> int: ...

    @abstractmethod
    def count_vectors(self, collection: str, encoder: str) -> int: ...

    @abstractmethod
    def existing_ids(self, collection: str, ids: list[str], encoder: str | None = None) -> set[str]:
        """Which of `ids` exist: as points (encoder None) or with a vector for `encoder`."""

    @abstractmethod
    def scan_payload(
        self,
        collection: str,
        where: list[Condition] | None = None,
        fields: list[str] | None = None,
        batch: int = 10_000,
    ) -> Iterator[list[tuple[str, Payload]]]:
        """Yield batches of (id, payload) for points matching `where`; `fields` limits the payload."""

    @abstractmethod
    def iter_vectors(
        self, collection: str, encoder: str, batch: int = 10_000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield batches of (ids, float32 matrix) of one encoder's vectors, in backend order."""

    @abstractmethod
    def get_vectors(self, collection: str, encoder: str, ids: list[str]) -> np.ndarray:
        """Vectors for the given ids, in that order (KeyError naming a missing id)."""

    # ---- conveniences built on the primitives ------------------------------------------
    def payloads(
        self, collection: str, where: list[Condition] | None = None, fields: list[str] | None = None
    ) -> dict[str, Payload]:
        out: dict[str, Payload] = {}
        for batch in self.scan_payload(collection, where, fields):
            out.update(batch)
        return out

    def payloads_of(self, collection: str, ids: list[str], fields: list[str] | None = None) -> dict[str, Payload]:
        """Payloads of the given points (unknown ids are left out). This default scans the collection;
        the backends fetch by id, so a few picks never map every payload page of a large pool."""
        want = set(ids)
        return {pid: p for batch in self.scan_payload(collection, fields=fields) for pid, p in batch if pid in want}

    def ids_where(self, collection: str, where: list[Condition] | None) -> set[str]:
        """Ids of the points matching `where` (no payload fields are fetched)."""
        return {pid for batch in self.scan_payload(collection, where, fields=[]) for pid, _ in batch}

    def load_vectors(
        self,
        collection: str,
        encoder: str,
        where: list[Condition] | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> tuple[list[str], np.ndarray]:
        """All vectors of one encoder (optionally only points matching `where`), sorted by id.

        Streams in batches into one preallocated matrix; memory is the matrix itself."""
        keep = self.ids_where(collection, where) if where else None
        n = self.count_vectors(collection, encoder)
        dim = int(self.encoders(collection)[encoder]["dim"])
        mat = np.empty((n, dim), dtype=dtype)
        ids: list[str] = []
        row = 0
        for batch_ids, vecs in self.iter_vectors(collection, encoder):
            if keep is not None:
                mask = np.fromiter((i in keep for i in batch_ids), dtype=bool, count=len(batch_ids))
                batch_ids = [i for i, m in zip(batch_ids, mask, strict=True) if m]
                vecs = vecs[mask]
            if row + len(batch_ids) > mat.shape[0]:  # points added while we read: grow once
                mat = np.concatenate([mat, np.empty((row + len(batch_ids) - mat.shape[0], dim), dtype)])
            mat[row : row + len(batch_ids)] = vecs
            ids.extend(batch_ids)
            row += len(batch_ids)
        mat = mat[:row]
        order = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
        return [ids[i] for i in order], np.ascontiguousarray(mat[order])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
