"""Qdrant Edge: the embedded default store, in-process, under ./.curate/ by default.

On disk:  ROOT/.lock                     held (POSIX lockf: per process, not inherited by forked workers)
          ROOT/<collection>/meta.json     encoder specs (written atomically)
          ROOT/<collection>/points/       Edge shard: payload only, one point per image
          ROOT/<collection>/vectors/<enc>/ Edge shard: that encoder's named vector
          ROOT/<collection>/vector_cache/<enc>/ raw-array copy for fast reads (derived, rebuildable)
Edge shards replay their WAL on load, so a process killed mid-run loses no acknowledged write.

A store this process may not write (a read-only mount, or a folder without write permission) is
opened read-only: Edge cannot load a shard it cannot write (it maps its payload storage
read-write), so each shard a command reads is copied to a temporary folder first, and every write
stops with a one-line error before anything is changed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from curate.files import write_atomic
from curate.store.base import Payload, Store, StoreError, StoreLockedError, chunks
from curate.store.filters import Condition
from curate.store.vector_cache import VectorCache, id_order, uuid_bytes, uuid_strings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_WRITE_BATCH = 2_000
# Edge vector storage is chunked mmap files. By default Edge reads every vector into memory when
# it loads a shard (2 GiB of RSS at 1M x 512, 20 GiB at 10M), and pages written stay mapped, so
# ingest RSS grew with N (3.35 GiB at 1M). New vector shards are created on disk (loaded without
# touching the vectors; analyses read the raw-array cache anyway), and after this many points
# written a shard is flushed and reopened, which unmaps what was written: bounded ingest memory.
# Shards created before keep their config (they still load into memory).
ON_DISK_VECTORS = True
REOPEN_AFTER_POINTS = 250_000
_OPEN_IN_THIS_PROCESS: set[str] = set()


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name) or "__" in name:
        raise StoreError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.' (no '__')")
    return name


def edge_filter(where: list[Condition] | None) -> qe.Filter | None:
    """Translate our conditions to an Edge filter (AND of all)."""
    if not where:
        return None
    must: list = []
    must_not: list = []
    for c in where:
        if c.op == "exists":
            must_not.append(qe.IsEmptyCondition(c.key))
        elif c.op == "missing":
            must.append(qe.IsEmptyCondition(c.key))
        elif c.op in ("==", "!="):
            if isinstance(c.value, float):
                cond = qe.FieldCondition(c.key, range=qe.RangeFloat(gte=c.value, lte=c.value))
            else:
                cond = qe.FieldCondition(c.key, match=qe.MatchValue(c.value))
            (must if c.op == "==" else must_not).append(cond)
        elif c.op in ("in", "not in"):
            cond = qe.FieldCondition(c.key, match=qe.MatchAny(list(c.value)))
            (must if c.op == "in" else must_not).append(cond)
        else:
            rng = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}[c.op]
            must.append(qe.FieldCondition(c.key, range=qe.RangeFloat(**{rng: float(c.value)})))
    return qe.Filter(must=must or None, must_not=must_not or None)


def _is_bool_condition(c: Condition) -> bool:
    """qdrant-edge-py 0.9 converts MatchValue(True) to the integer 1, so a bool payload never
    matches natively; such conditions are applied in Python on the scanned payload instead."""
    values = c.value if isinstance(c.value, list) else [c.value]
    return any(isinstance(v, bool) for v in values)


def split_conditions(where: list[Condition] | None) -> tuple[list[Condition], list[Condition]]:
    native = [c for c in where or [] if not _is_bool_condition(c)]
    local = [c for c in where or [] if _is_bool_condition(c)]
    return native, local


class EdgeStore(Store):
    def __init__(self, root: str | os.PathLike = ".curate", create: bool = True) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self._shards: dict[tuple[str, str], qe.EdgeShard] = {}
        self._caches: dict[tuple[str, str], VectorCache] = {}
        self._written: dict[tuple[str, str], int] = {}  # points written per shard since it was opened
        self._reseal: dict[tuple[str, str], bool] = {}  # vector caches written now: seal them on close?
        self._copies: Path | None = None  # read-only mode: where shard copies live
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store {self.root} is a file, not a folder; point --store / CURATE_STORE at a folder")
        if not self.root.exists():
            if not create:
                raise StoreError(f"no curate store: {self.root} not found; run 'curate embed SOURCE' first, "
                                 "or point --store / CURATE_STORE at an existing store")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store folder {self.root}: {e.strerror}") from None
        key = str(self.root.resolve())
        if key in _OPEN_IN_THIS_PROCESS:  # lockf does not conflict within one process
            raise StoreLockedError(f"the store {self.root} is already open in this process; close it first")
        self._key = key
        self.read_only = not os.access(self.root, os.W_OK)
        self._lock_file = None
        if not self.read_only:
            try:
                self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the store's life
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise StoreError(f"cannot open {self.root / '.lock'}: {e.strerror}") from None
                self.read_only = True
        if self._lock_file is not None:
            self._lock()
        _OPEN_IN_THIS_PROCESS.add(key)

    def _lock(self) -> None:
        try:
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN/EACCES: another process holds it
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise StoreLockedError(
                f"the store {self.root} is in use by {holder}; wait for it to finish, "
                "or point --store / CURATE_STORE elsewhere"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"curate process {os.getpid()}")
        self._lock_file.flush()

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(
                f"the store {self.root} is read-only, and this command writes to it ({what}); "
                "make it writable, or copy it and point --store at the copy"
            )

    def _readable_copy(self, path: Path) -> Path:
        """Read-only mode: a private, writable copy of one shard (or cache) folder."""
        if self._copies is None:
            self._copies = Path(tempfile.mkdtemp(prefix="curate-readonly-"))
        dst = self._copies / path.relative_to(self.root)
        if not dst.exists() and path.exists():
            shutil.copytree(path, dst)
        return dst

    # ---- shards ---------------------------------------------------------------------------
    def _dir(self, collection: str) -> Path:
        return self.root / check_name("collection", collection)

    def _open(self, path: Path, config: qe.EdgeConfig | None) -> qe.EdgeShard:
        for attempt in range(20):  # a process that just exited may hold the WAL lock for a moment
            try:
                return self._open_once(path, config)
            except StoreLockedError:
                if attempt == 19:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _open_once(self, path: Path, config: qe.EdgeConfig | None) -> qe.EdgeShard:
        try:
            if (path / "edge_config.json").exists():
                return qe.EdgeShard.load(str(self._readable_copy(path) if self.read_only else path))
            if config is None:
                raise StoreError(f"no shard at {path}")
            self._check_writable(f"create {path.relative_to(self.root)}")
            path.mkdir(parents=True, exist_ok=True)
            return qe.EdgeShard.create(str(path), config)
        except StoreError:
            raise
        except Exception as e:  # Edge raises plain Exception with a message
            if "WouldBlock" in str(e) or "WAL" in str(e):
                raise StoreLockedError(f"shard {path} is open elsewhere: {e}") from e
            raise StoreError(f"cannot open shard {path}: {e}") from e

    def _points(self, collection: str, create: bool = False) -> qe.EdgeShard:
        key = (collection, "")
        if key not in self._shards:
            path = self._dir(collection) / "points"
            if not create and not path.exists():
                raise StoreError(f"collection {collection!r} not found in {self.location}")
            # Edge requires at least one vector slot; the payload shard declares an unused sparse one.
            cfg = qe.EdgeConfig(sparse_vectors={"_": qe.EdgeSparseVectorParams()})
            self._shards[key] = self._open(path, cfg)
        return self._shards[key]

    def _vectors(self, collection: str, encoder: str, dim: int | None = None) -> qe.EdgeShard:
        key = (collection, encoder)
        if key not in self._shards:
            path = self._dir(collection) / "vectors" / check_name("encoder", encoder)
            cfg = None
            if dim is not None:
                params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=ON_DISK_VECTORS)
                cfg = qe.EdgeConfig(vectors={encoder: params})
            elif not path.exists():
                raise StoreError(f"encoder {encoder!r} has no vectors in collection {collection!r}")
            self._shards[key] = self._open(path, cfg)
        return self._shards[key]

    # ---- collections and metadata ------------------------------------------------------
    def list_collections(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "points").is_dir())

    def has_collection(self, collection: str) -> bool:
        return (self._dir(collection) / "points").is_dir()

    def ensure_collection(self, collection: str) -> None:
        self._points(collection, create=True)
        if not (self._dir(collection) / "meta.json").exists():
            self.set_meta(collection, {"encoders": {}})

    def drop_collection(self, collection: str) -> None:
        self._check_writable(f"drop {collection!r}")
        for key in [k for k in self._shards if k[0] == collection]:
            self._shards.pop(key).close()
        for key in [k for k in self._caches if k[0] == collection]:
            del self._caches[key]
        for key in [k for k in self._reseal if k[0] == collection]:
            del self._reseal[key]
        shutil.rmtree(self._dir(collection), ignore_errors=True)

    def get_meta(self, collection: str) -> dict[str, Any]:
        path = self._dir(collection) / "meta.json"
        if not path.exists():
            return {"encoders": {}}
        return json.loads(path.read_text())

    def set_meta(self, collection: str, meta: dict[str, Any]) -> None:
        self._check_writable(f"update {collection}/meta.json")
        text = json.dumps(meta, indent=1, sort_keys=True)
        write_atomic(self._dir(collection) / "meta.json", lambda tmp: tmp.write_text(text))

    def _create_vector_collection(self, collection: str, encoder: str, dim: int) -> None:
        new = not (self._dir(collection) / "vectors" / check_name("encoder", encoder)).exists()
        self._vectors(collection, encoder, dim)
        if new:  # an empty shard: an empty cache mirrors it
            cache = VectorCache(self._dir(collection) / "vector_cache" / encoder, dim)
            cache.clear()
            cache.seal(0)

    # ---- writes ----------------------------------------------------------------------------
    def upsert_points(self, collection: str, ids: list[str], payloads: list[Payload]) -> None:
        self._check_writable("add images")
        shard = self._points(collection, create=True)
        for lo in range(0, len(ids), _WRITE_BATCH):
            pts = [
                qe.Point(i, {}, p)
                for i, p in zip(ids[lo : lo + _WRITE_BATCH], payloads[lo : lo + _WRITE_BATCH], strict=True)
            ]
            shard.update(qe.UpdateOperation.upsert_points(pts))
        self._count_written((collection, ""), len(ids))

    def _count_written(self, key: tuple[str, str], n: int) -> None:
        """Flush and reopen a shard after REOPEN_AFTER_POINTS writes (see there): bounded ingest RSS."""
        self._written[key] = self._written.get(key, 0) + n
        if self._written[key] >= REOPEN_AFTER_POINTS:
            self._release(key)
            self._written[key] = 0

    def _release(self, key: tuple[str, str]) -> None:
        """Flush and close a shard, unmapping its pages; the next access reopens it (_points / _vectors)."""
        shard = self._shards.pop(key, None)
        if shard is not None:
            try:
                shard.flush()
            finally:
                shard.close()

    def upsert_vectors(self, collection: str, encoder: str, ids: list[str], vectors: np.ndarray) -> None:
        self._check_writable("add vectors")
        shard = self._vectors(collection, encoder)
        cache = self._cache(collection, encoder)
        key = (collection, encoder)
        if key not in self._reseal:  # first write of this session: break the seal
            self._reseal[key] = cache.sealed_count() is not None
            cache.unseal()
        reseal, self._reseal[key] = self._reseal[key], False  # a write that raises leaves it unsealed
        # Cosine shards normalize on insert; normalize here so the cache holds the same rows.
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        for lo in range(0, len(ids), _WRITE_BATCH):
            part = vectors[lo : lo + _WRITE_BATCH]
            pts = [qe.Point(i, {encoder: v}) for i, v in zip(ids[lo : lo + _WRITE_BATCH], part.tolist(), strict=True)]
            shard.update(qe.UpdateOperation.upsert_points(pts))
            cache.append(ids[lo : lo + _WRITE_BATCH], part)  # after the shard: the cache may lag, never lead
        self._reseal[key] = reseal
        self._count_written(key, len(ids))

    def _cache(self, collection: str, encoder: str) -> VectorCache:
        key = (collection, encoder)
        if key not in self._caches:  # the dim comes from meta.json: read it once, not per write batch
            dim = int(self.encoders(collection)[encoder]["dim"])
            folder = self._dir(collection) / "vector_cache" / check_name("encoder", encoder)
            if self.read_only:  # a stale cache is rebuilt: in the private copy, never in place
                folder = self._readable_copy(folder)
            self._caches[key] = VectorCache(folder, dim)
        return self._caches[key]

    def load_vectors(
        self,
        collection: str,
        encoder: str,
        where: list[Condition] | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> tuple[list[str], np.ndarray]:
        """Read through the validated raw-array cache (rebuilt from the shard when stale), out of core:
        only the wanted rows are copied, once, straight into the sorted matrix of `dtype`."""
        raw_ids, src, cache = self.sorted_cache_rows(collection, encoder, where)
        return uuid_strings(raw_ids), cache.gather(src, dtype)

    def sorted_cache_rows(
        self, collection: str, encoder: str, where: list[Condition] | None = None
    ) -> tuple[np.ndarray, np.ndarray, VectorCache]:
        """(16-byte ids [n,16] sorted as their strings sort, each id's row in the cache file, the cache):
        the read behind `load_vectors`, before any Python string is made. `where` keeps the matching
        points, found by sorted lookup batch by batch (no set of N ids)."""
        cache = self._cache(collection, encoder)
        sealed = None if (collection, encoder) in self._reseal else cache.load_sealed()
        raw_ids, src = sealed if sealed is not None else cache.load(
            self.count_vectors(collection, encoder),
            lambda ids: self.get_vectors(collection, encoder, ids),
            lambda: self.iter_vectors(collection, encoder),
        )
        order = id_order(raw_ids)
        raw_ids, src = raw_ids[order], src[order]
        if where:
            keys = raw_ids.view("S16").ravel()  # fixed-width bytes: memcmp order, the order just sorted
            keep = np.zeros(len(keys), dtype=bool)
            for batch in self.scan_payload(collection, where, fields=[]):
                want = uuid_bytes([pid for pid, _ in batch]).view("S16").ravel()
                pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
                keep[pos[keys[pos] == want] if len(keys) else pos[:0]] = True
            raw_ids, src = raw_ids[keep], src[keep]
        return raw_ids, src, cache

    def set_payload(self, collection: str, ids: list[str], payload: Payload) -> None:
        self._check_writable("set payload tags")
        shard = self._points(collection)
        for part in chunks(list(ids), 10_000):
            try:
                shard.update(qe.UpdateOperation.set_payload(part, payload))
            except Exception as e:
                raise StoreError(f"cannot set payload in {collection!r}: {e}") from e

    def delete_payload_keys(
        self, collection: str, keys: list[str], where: list[Condition] | None = None
    ) -> None:
        self._check_writable("remove payload tags")
        shard = self._points(collection)
        native, local = split_conditions(where)
        if not local:
            shard.update(qe.UpdateOperation.delete_payload_by_filter(edge_filter(native) or qe.Filter(), keys))
            return
        for batch in list(self.scan_payload(collection, where, fields=[])):
            shard = self._points(collection)  # a long scan may have closed it (scan_payload)
            shard.update(qe.UpdateOperation.delete_payload([pid for pid, _ in batch], keys))

    def flush(self) -> None:
        for shard in self._shards.values():
            shard.flush()

    def close(self) -> None:
        for shard in self._shards.values():
            try:
                shard.flush()
            finally:
                shard.close()
        self._shards.clear()
        for key, was_sealed in self._reseal.items():  # a clean close: the caches mirror the shards
            if was_sealed:
                cache = self._cache(*key)
                cache.seal(cache.unique_count())
        self._reseal.clear()
        if self._lock_file is not None and not self._lock_file.closed:
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
        _OPEN_IN_THIS_PROCESS.discard(self._key)
        if self._copies is not None:
            shutil.rmtree(self._copies, ignore_errors=True)
            self._copies = None

    def build_index(self, collection: str, encoder: str) -> None:
        self._check_writable("build an index")
        dim = int(self.encoders(collection)[encoder]["dim"])
        key = (collection, encoder)
        if key in self._shards:
            self._shards.pop(key).close()
        path = self._dir(collection) / "vectors" / encoder
        cfg = qe.EdgeConfig(
            vectors={encoder: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=ON_DISK_VECTORS)},
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )
        shard = qe.EdgeShard.load(str(path), cfg)
        shard.optimize()
        self._shards[key] = shard

    # ---- reads -----------------------------------------------------------------------------
    def count(self, collection: str, where: list[Condition] | None = None) -> int:
        native, local = split_conditions(where)
        if local:
            return len(self.ids_where(collection, where))
        return int(self._points(collection).count(qe.CountRequest(exact=True, filter=edge_filter(native))))

    def count_vectors(self, collection: str, encoder: str) -> int:
        key = (collection, encoder)
        cached = (self._dir(collection) / "vector_cache" / check_name("encoder", encoder)).is_dir()
        if key not in self._shards and key not in self._reseal and cached:
            sealed = self._cache(collection, encoder).sealed_count()  # no need to open (map) the shard
            if sealed is not None:
                return sealed
        return int(self._vectors(collection, encoder).count(qe.CountRequest(exact=True)))

    def existing_ids(self, collection: str, ids: list[str], encoder: str | None = None) -> set[str]:
        if encoder is None:
            if not self.has_collection(collection):
                return set()
            shard = self._points(collection)
        else:
            if not (self._dir(collection) / "vectors" / encoder).exists():
                return set()
            shard = self._vectors(collection, encoder)
        found: set[str] = set()
        for part in chunks(list(ids), 10_000):
            found.update(str(r.id) for r in shard.retrieve(part, with_payload=False, with_vector=False))
        return found

    def payloads_of(self, collection: str, ids: list[str], fields: list[str] | None = None) -> dict[str, Payload]:
        shard = self._points(collection)
        with_payload: bool | list[str] = True if fields is None else (list(fields) or False)
        out: dict[str, Payload] = {}
        for part in chunks(list(ids), 10_000):
            out.update((str(r.id), dict(r.payload or {}))
                       for r in shard.retrieve(part, with_payload=with_payload, with_vector=False))
        return out

    def scan_payload(
        self,
        collection: str,
        where: list[Condition] | None = None,
        fields: list[str] | None = None,
        batch: int = 10_000,
    ) -> Iterator[list[tuple[str, Payload]]]:
        self._points(collection)  # a missing collection fails here, before the first batch
        native, local = split_conditions(where)
        wanted = None if fields is None else list(dict.fromkeys([*fields, *(c.key for c in local)]))
        with_payload: bool | list[str] = True if wanted is None else (wanted or False)
        flt = edge_filter(native)
        offset = None
        seen = 0
        while True:
            req = qe.ScrollRequest(offset=offset, limit=batch, filter=flt, with_payload=with_payload, with_vector=False)
            records, offset = self._points(collection).scroll(req)  # reopened if a nested scan released it
            out = [(str(r.id), dict(r.payload or {})) for r in records]
            if local:
                out = [(pid, p) for pid, p in out if all(c.matches(p) for c in local)]
                if fields is not None:
                    out = [(pid, {k: v for k, v in p.items() if k in fields}) for pid, p in out]
            if out:
                yield out
            seen += len(records)
            if offset is None:
                if seen >= REOPEN_AFTER_POINTS:  # a whole-pool scan touched every payload page:
                    self._release((collection, ""))  # unmap them before the caller reads vectors
                return

    def iter_vectors(
        self, collection: str, encoder: str, batch: int = 10_000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        shard = self._vectors(collection, encoder)
        offset = None
        while True:
            req = qe.ScrollRequest(offset=offset, limit=batch, with_payload=False, with_vector=[encoder])
            records, offset = shard.scroll(req)
            if records:
                ids = [str(r.id) for r in records]
                yield ids, np.asarray([r.vector[encoder] for r in records], dtype=np.float32)
            if offset is None:
                return

    def get_vectors(self, collection: str, encoder: str, ids: list[str]) -> np.ndarray:
        shard = self._vectors(collection, encoder)
        dim = int(self.encoders(collection)[encoder]["dim"])
        out = np.empty((len(ids), dim), dtype=np.float32)
        for lo in range(0, len(ids), 10_000):
            part = ids[lo : lo + 10_000]
            got = {
                str(r.id): r.vector[encoder]
                for r in shard.retrieve(part, with_payload=False, with_vector=[encoder])
            }
            for j, pid in enumerate(part):
                if pid not in got:
                    raise KeyError(f"no {encoder!r} vector for point {pid}")
                out[lo + j] = got[pid]
        return out
