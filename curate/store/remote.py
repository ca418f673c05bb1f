"""A Qdrant server through qdrant-client (also its ":memory:" local mode, which the tests use).

Server collections:  <collection>               payload only (no dense vectors)
                     <collection>__v__<encoder>  one named vector, indexing off until build_index
                     <collection>__meta          one point holding the metadata JSON

Cluster options (ServerOptions: shards, replicas, write consistency, on-disk storage) apply when a
collection is created, and the payload collection gets indexes on the fields curate filters by.
Every request goes through `_retry`: transient failures (connection, timeout, 5xx, 429) are retried
with exponential backoff; anything else (a 4xx: bad request, auth) fails at once. Writes are upserts
by deterministic point id with wait=True, so re-sending a batch whose acknowledgement was lost (say,
a node restarted mid-request) overwrites the same points: nothing is counted twice or half.

`worker_spec()` is what a Ray worker needs to open its own client to the same store, so
`embed --engine ray` upserts from the workers (curate/embed_ray.py). qdrant-client's local mode on a
folder (`path=`) is one process at a time (a file lock): the tests use it to prove the workers
write, with the driver's client closed meanwhile (`lent_to_workers`) and one writer at a time.
"""

from __future__ import annotations

import json
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from curate.store.base import Payload, Store, StoreError, chunks
from curate.store.edge import check_name
from curate.store.filters import Condition
from curate.store.server_options import PAYLOAD_INDEXES, ServerOptions

_META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "curate:meta"))
_WRITE_BATCH = 1_000
T = TypeVar("T")
_GRPC_TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL"}


def is_transient(e: BaseException) -> bool:
    """Worth retrying: the request may succeed unchanged later (node restart, overload, network)."""
    if isinstance(e, UnexpectedResponse):
        return e.status_code is not None and (e.status_code >= 500 or e.status_code == 429)
    if isinstance(e, ResponseHandlingException | httpx.TransportError | ConnectionError | TimeoutError):
        return True
    code = getattr(e, "code", None)  # grpc.RpcError, without importing grpc
    return callable(code) and getattr(code(), "name", None) in _GRPC_TRANSIENT


def qdrant_filter(where: list[Condition] | None) -> qm.Filter | None:
    if not where:
        return None
    must: list = []
    must_not: list = []
    for c in where:
        if c.op == "exists":
            must_not.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key=c.key)))
        elif c.op == "missing":
            must.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key=c.key)))
        elif c.op in ("==", "!="):
            if isinstance(c.value, float):
                cond = qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value, lte=c.value))
            else:
                cond = qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value))
            (must if c.op == "==" else must_not).append(cond)
        elif c.op in ("in", "not in"):
            cond = qm.FieldCondition(key=c.key, match=qm.MatchAny(any=list(c.value)))
            (must if c.op == "in" else must_not).append(cond)
        else:
            rng = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}[c.op]
            must.append(qm.FieldCondition(key=c.key, range=qm.Range(**{rng: float(c.value)})))
    return qm.Filter(must=must or None, must_not=must_not or None)


@dataclass(frozen=True)
class RemoteSpec:
    """How to open a client to the same store from another process (picklable: Ray ships it)."""

    url: str | None
    api_key: str | None
    timeout: int
    options: ServerOptions
    path: str | None = None

    @property
    def exclusive(self) -> bool:
        """Local mode on a folder: one process at a time, so a worker opens it per batch and closes it."""
        return self.path is not None

    def open(self) -> RemoteStore:
        return RemoteStore(self.url, api_key=self.api_key, timeout=self.timeout, options=self.options, path=self.path)


def _open_local(path: str, wait_s: float) -> QdrantClient:
    """qdrant-client's local mode on a folder, waiting up to wait_s for another process's lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return QdrantClient(path=path)
        except RuntimeError as e:
            if "already accessed" not in str(e) or time.monotonic() > deadline:
                raise StoreError(f"the qdrant-client folder {path} is in use by another process; "
                                 "local mode is one process at a time (use a Qdrant server)") from e
            time.sleep(0.05)


class RemoteStore(Store):
    attempts = 6  # 0.5 + 1 + 2 + 4 + 8 s of backoff: rides out a node restart
    backoff_s = 0.5
    lock_wait_s = 30.0  # local mode on a folder: how long to wait for another process to close it

    def __init__(
        self,
        url: str | None,
        api_key: str | None = None,
        timeout: int = 60,
        options: ServerOptions | None = None,
        path: str | None = None,
    ) -> None:
        """A server at `url`, ":memory:" (local mode, this process only), or local mode on the
        folder `path` (url None; one process at a time)."""
        self.location = path or url or ""
        self.options = options or ServerOptions()
        self._sleep = time.sleep  # tests replace it
        self._spec = RemoteSpec(url, api_key, timeout, self.options, path)
        if path is not None:
            self.client = _open_local(path, self.lock_wait_s)
        elif url == ":memory:":
            self.client = QdrantClient(":memory:")
        else:
            self.client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
            try:
                self.client.get_collections()
            except Exception as e:
                raise StoreError(
                    f"cannot reach Qdrant at {url}: {e}; is the server running "
                    "(see docker/) and is CURATE_QDRANT_API_KEY right?"
                ) from e

    def _retry(self, fn: Callable[[], T]) -> T:
        """Retry transient errors with exponential backoff (jittered); fail at once on the rest."""
        for i in range(self.attempts):
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    if isinstance(e, UnexpectedResponse):
                        raise StoreError(f"Qdrant at {self.location} refused the request: "
                                         f"{e.status_code} {e.reason_phrase} {e.content[:200]!r}") from e
                    raise
                if i == self.attempts - 1:
                    raise StoreError(f"Qdrant at {self.location} failed {self.attempts} times: {e}") from e
                self._sleep(self.backoff_s * 2**i * random.uniform(0.75, 1.0))
        raise AssertionError("unreachable")

    def _cluster_kwargs(self, shards: int | None) -> dict[str, Any]:
        """create_collection arguments for the options that are set (unset: the server's default)."""
        o = self.options
        given = {"shard_number": shards, "replication_factor": o.replicas,
                 "write_consistency_factor": o.write_consistency, "on_disk_payload": o.on_disk or None}
        return {k: v for k, v in given.items() if v is not None}

    @staticmethod
    def _vec_name(collection: str, encoder: str) -> str:
        return f"{collection}__v__{check_name('encoder', encoder)}"

    # ---- collections and metadata ------------------------------------------------------
    def list_collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections if "__" not in c.name)

    def has_collection(self, collection: str) -> bool:
        return self.client.collection_exists(check_name("collection", collection))

    def ensure_collection(self, collection: str) -> None:
        if not self.has_collection(collection):
            self.client.create_collection(collection, vectors_config={}, **self._cluster_kwargs(self.options.shards))
            with warnings.catch_warnings():  # local mode (":memory:") warns that it has no indexes
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field, schema in PAYLOAD_INDEXES.items():
                    self._retry(lambda f=field, t=schema: self.client.create_payload_index(
                        collection, f, field_schema=qm.PayloadSchemaType(t), wait=True))
            # one point: one shard, but replicated like the data so it survives the same node losses
            meta_shards = 1 if self.options.shards else None
            self.client.create_collection(f"{collection}__meta", vectors_config={}, **self._cluster_kwargs(meta_shards))
            self.set_meta(collection, {"encoders": {}})

    def drop_collection(self, collection: str) -> None:
        for c in self.client.get_collections().collections:
            if c.name == collection or c.name.startswith(f"{collection}__"):
                self.client.delete_collection(c.name)

    def get_meta(self, collection: str) -> dict[str, Any]:
        if not self.client.collection_exists(f"{collection}__meta"):
            return {"encoders": {}}
        recs = self._retry(lambda: self.client.retrieve(f"{collection}__meta", ids=[_META_ID], with_payload=True))
        return json.loads(recs[0].payload["json"]) if recs else {"encoders": {}}

    def set_meta(self, collection: str, meta: dict[str, Any]) -> None:
        point = qm.PointStruct(id=_META_ID, vector={}, payload={"json": json.dumps(meta, sort_keys=True)})
        self._retry(lambda: self.client.upsert(f"{collection}__meta", [point], wait=True))

    def _create_vector_collection(self, collection: str, encoder: str, dim: int) -> None:
        name = self._vec_name(collection, encoder)
        if not self.client.collection_exists(name):
            self.client.create_collection(
                name,
                vectors_config={encoder: qm.VectorParams(
                    size=dim, distance=qm.Distance.COSINE, on_disk=self.options.on_disk or None)},
                # Analyses scan vectors; HNSW is built only on request (build_index).
                optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=0),
                **self._cluster_kwargs(self.options.shards),
            )

    # ---- writes ----------------------------------------------------------------------------
    def upsert_points(self, collection: str, ids: list[str], payloads: list[Payload]) -> None:
        for lo in range(0, len(ids), _WRITE_BATCH):
            batch = qm.Batch(
                ids=ids[lo : lo + _WRITE_BATCH], vectors={}, payloads=payloads[lo : lo + _WRITE_BATCH]
            )
            self._retry(lambda b=batch: self.client.upsert(collection, b, wait=True))

    def upsert_vectors(self, collection: str, encoder: str, ids: list[str], vectors: np.ndarray) -> None:
        name = self._vec_name(collection, encoder)
        vectors = np.asarray(vectors, dtype=np.float32)
        for lo in range(0, len(ids), _WRITE_BATCH):
            batch = qm.Batch(
                ids=ids[lo : lo + _WRITE_BATCH], vectors={encoder: vectors[lo : lo + _WRITE_BATCH].tolist()}
            )
            self._retry(lambda b=batch: self.client.upsert(name, b, wait=True))

    def set_payload(self, collection: str, ids: list[str], payload: Payload) -> None:
        for part in chunks(list(ids), 10_000):
            self._retry(
                lambda p=part: self.client.set_payload(collection, payload=payload, points=p, wait=True)
            )

    def set_payloads(self, collection: str, items: dict[str, Payload]) -> None:
        """Per-point fields as batched operations: one request per 512 points, not one per point."""
        ops = [
            qm.SetPayloadOperation(set_payload=qm.SetPayload(payload=fields, points=[pid]))
            for pid, fields in items.items()
        ]
        for part in chunks(ops, 512):
            self._retry(lambda p=part: self.client.batch_update_points(collection, p, wait=True))

    def delete_payload_keys(
        self, collection: str, keys: list[str], where: list[Condition] | None = None
    ) -> None:
        selector = qm.FilterSelector(filter=qdrant_filter(where) or qm.Filter())
        self._retry(lambda: self.client.delete_payload(collection, keys=keys, points=selector, wait=True))

    def flush(self) -> None:
        """Writes are acknowledged with wait=True; nothing is buffered client-side."""

    def close(self) -> None:
        self.client.close()

    def worker_spec(self) -> RemoteSpec | None:
        """What a worker process opens to write here itself; None for ":memory:" (this process's only)."""
        return None if self._spec.url == ":memory:" else self._spec

    @contextmanager
    def lent_to_workers(self) -> Iterator[None]:
        """While workers write: local mode on a folder closes this client (its lock would keep them
        out) and reopens it after; a server takes every client at once, so nothing changes."""
        if self._spec.path is None:
            yield
            return
        self.client.close()
        try:
            yield
        finally:
            self.client = _open_local(self._spec.path, self.lock_wait_s)

    def build_index(self, collection: str, encoder: str) -> None:
        self.client.update_collection(
            self._vec_name(collection, encoder),
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=20_000),
        )

    # ---- reads -----------------------------------------------------------------------------
    def count(self, collection: str, where: list[Condition] | None = None) -> int:
        if not self.has_collection(collection):
            raise StoreError(f"collection {collection!r} not found in {self.location}")
        return self._retry(lambda: self.client.count(collection, count_filter=qdrant_filter(where), exact=True)).count

    def count_vectors(self, collection: str, encoder: str) -> int:
        return self._retry(lambda: self.client.count(self._vec_name(collection, encoder), exact=True)).count

    def existing_ids(self, collection: str, ids: list[str], encoder: str | None = None) -> set[str]:
        name = collection if encoder is None else self._vec_name(collection, encoder)
        if not self.client.collection_exists(name):
            return set()
        found: set[str] = set()
        for part in chunks(list(ids), 5_000):
            recs = self._retry(lambda p=part: self.client.retrieve(name, ids=p, with_payload=False, with_vectors=False))
            found.update(str(r.id) for r in recs)
        return found

    def payloads_of(self, collection: str, ids: list[str], fields: list[str] | None = None) -> dict[str, Payload]:
        with_payload: bool | list[str] = True if fields is None else (list(fields) or False)
        out: dict[str, Payload] = {}
        for part in chunks(list(ids), 5_000):
            recs = self._retry(lambda p=part: self.client.retrieve(collection, ids=p, with_payload=with_payload,
                                                                   with_vectors=False))
            out.update((str(r.id), dict(r.payload or {})) for r in recs)
        return out

    def scan_payload(
        self,
        collection: str,
        where: list[Condition] | None = None,
        fields: list[str] | None = None,
        batch: int = 10_000,
    ) -> Iterator[list[tuple[str, Payload]]]:
        with_payload: bool | list[str] = True if fields is None else (list(fields) if fields else False)
        flt = qdrant_filter(where)
        offset = None
        while True:
            records, offset = self._retry(lambda o=offset: self.client.scroll(
                collection, scroll_filter=flt, limit=batch, offset=o, with_payload=with_payload, with_vectors=False
            ))
            if records:
                yield [(str(r.id), dict(r.payload or {})) for r in records]
            if offset is None:
                return

    def iter_vectors(
        self, collection: str, encoder: str, batch: int = 10_000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        name = self._vec_name(collection, encoder)
        offset = None
        while True:
            records, offset = self._retry(lambda o=offset: self.client.scroll(
                name, limit=batch, offset=o, with_payload=False, with_vectors=[encoder]
            ))
            if records:
                yield (
                    [str(r.id) for r in records],
                    np.asarray([r.vector[encoder] for r in records], np.float32),
                )
            if offset is None:
                return

    def get_vectors(self, collection: str, encoder: str, ids: list[str]) -> np.ndarray:
        name = self._vec_name(collection, encoder)
        dim = int(self.encoders(collection)[encoder]["dim"])
        out = np.empty((len(ids), dim), dtype=np.float32)
        for lo in range(0, len(ids), 5_000):
            part = ids[lo : lo + 5_000]
            recs = self._retry(
                lambda p=part: self.client.retrieve(name, ids=p, with_payload=False, with_vectors=[encoder])
            )
            got = {str(r.id): r.vector[encoder] for r in recs}
            for j, pid in enumerate(part):
                if pid not in got:
                    raise KeyError(f"no {encoder!r} vector for point {pid}")
                out[lo + j] = got[pid]
        return out
