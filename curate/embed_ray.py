"""The Ray driver of the embedding pipeline (`curate embed --engine ray`).

The stages are curate.embed's (Decoder, encode_batch, write_batch); only where they run changes:
Ray Data reads the listing in blocks, decodes on CPU tasks and embeds on an actor pool (one actor
per GPU, else CPU actors; each loads the encoder once from its spec). Who writes depends on the store:

- a server store (qdrant-client, `--qdrant-url`): each actor opens its own client from the store's
  worker_spec() and runs write_batch on the batch it encoded (payload, then vectors, wait=True), so N
  actors write at once. Only small records (index, payload facts, error, whether it has a vector)
  come back; the driver counts them, draws the bar and writes no vector. "Has a vector" (the resume
  rule) is only true once the worker's upsert was acknowledged, so a killed run re-sends an
  interrupted batch; order no longer matters, so Ray Data may return batches as they finish.
- the embedded Qdrant Edge store, single-process: vectors stream back in order and embed_pool
  writes them, exactly as for the local engine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image

from curate.embed import Batch, Decoder, EmbedOptions, Encoded, WriteTarget, encode_batch, write_batch
from curate.encoders import Encoder, encoder_from_spec
from curate.ray_engine import ray_session

ERROR, PIXELS, JPEG = 0, 1, 2  # what the decode stage produced for a row


def pixel_shape(decoder: Decoder) -> tuple[int, ...]:
    """The transform's output shape, fixed for every image (the local driver stacks them too);
    every decoded block then carries a tensor column of one shape, even a block of only failures."""
    return tuple(decoder.transform(Image.new("RGB", (97, 61))).shape)


def decode_block(block: dict[str, np.ndarray], decoder: Decoder, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Ray task body: a block of the listing -> columns (index, kind, info, error, pixels, jpeg)."""
    torch.set_num_threads(1)  # one core per decode task, as the local workers
    n = len(block["index"])
    kind = np.full(n, ERROR, np.int8)
    info = np.empty(n, object)
    error = np.full(n, "", object)
    pixels = np.zeros((n, *shape), np.float32)
    jpeg = np.full(n, b"", object)
    for k, raw in enumerate(block["path"]):
        out = decoder(os.fsdecode(raw))
        info[k] = json.dumps(out["info"])
        if "pixels" in out:
            kind[k], pixels[k] = PIXELS, out["pixels"].numpy()
        elif "jpeg" in out:
            kind[k], jpeg[k] = JPEG, out["jpeg"].numpy().tobytes()
        else:
            error[k] = out["error"]
    out = {"index": block["index"], "kind": kind, "info": info, "error": error, "pixels": pixels, "jpeg": jpeg}
    return out | {k: block[k] for k in ("row", "merge") if k in block}  # the write stage's inputs


def _batch(cols: dict[str, np.ndarray]) -> Batch:
    """Decoded columns -> the local driver's Batch, so encode_batch is the one encode stage."""
    index = [int(i) for i in cols["index"]]
    kind = cols["kind"]
    items = [{"index": i, "info": json.loads(s)} | ({"error": e} if e else {})
             for i, s, e in zip(index, cols["info"], cols["error"], strict=True)]
    px = np.flatnonzero(kind == PIXELS)
    jp = np.flatnonzero(kind == JPEG)
    jpegs = [bytes(cols["jpeg"][k]) for k in jp]
    offsets = [0, *np.cumsum([len(b) for b in jpegs]).tolist()]
    return Batch(
        items=items,
        pixels=torch.from_numpy(np.ascontiguousarray(cols["pixels"][px])) if px.size else None,
        pixel_rows=[index[k] for k in px],
        jpeg=torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8) if jpegs else None,
        jpeg_offsets=offsets,
        jpeg_rows=[index[k] for k in jp],
    )


@dataclasses.dataclass(frozen=True)
class WorkerWrites:
    """The write stage's destination, for actors that write themselves (picklable)."""

    store: Any  # a store's worker_spec(): open() -> Store, exclusive (one process at a time)
    collection: str
    encoder: str


class EncodeActor:
    """Ray actor: loads the encoder once, then encodes decoded blocks with curate.embed.encode_batch;
    with `writes`, also writes them with curate.embed.write_batch and returns no vectors."""

    def __init__(self, spec: dict, device: str, writes: WorkerWrites | None = None) -> None:
        torch.set_num_threads(1)  # one core per CPU actor (plan_actors); a GPU actor only feeds its GPU
        self.encoder = encoder_from_spec(spec, device)
        self.writes = writes
        self.store: Any = None  # opened on the first write, kept (a server takes every actor's client)

    def __call__(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = encode_batch(self.encoder, _batch(cols))
        n = len(cols["index"])
        pos = {int(i): k for k, i in enumerate(cols["index"])}
        good = np.zeros(n, bool)
        rows = [pos[i] for i in out.good]
        good[rows] = True
        error = np.array([it.get("error", "") for it in out.items], dtype=object)  # GPU decode may add some
        small = {"index": cols["index"], "info": cols["info"], "error": error, "good": good}
        if self.writes is None:
            vectors = np.zeros((n, self.encoder.dim), np.float32)
            vectors[rows] = out.vectors
            return small | {"vector": vectors}
        self._write(self.writes, out, cols)
        return small  # written (acknowledged): the driver gets no vectors

    def _write(self, w: WorkerWrites, encoded: Encoded, cols: dict[str, np.ndarray]) -> None:
        rows = {int(i): pickle.loads(r) for i, r in zip(cols["index"], cols["row"], strict=True)}
        merge_ids = {rows[int(i)]["id"] for i, m in zip(cols["index"], cols["merge"], strict=True) if m}
        if w.store.exclusive:  # local mode on a folder (tests): hold its lock only while writing
            with w.store.open() as store:
                write_batch(store, w.collection, w.encoder, encoded, rows, merge_ids)
            return
        if self.store is None:
            self.store = w.store.open()
        write_batch(self.store, w.collection, w.encoder, encoded, rows, merge_ids)


def _unpack(cols: dict[str, np.ndarray]) -> Encoded:
    items = [{"index": int(i), "info": json.loads(s)} | ({"error": str(e)} if e else {})
             for i, s, e in zip(cols["index"], cols["info"], cols["error"], strict=True)]
    good = np.flatnonzero(cols["good"])
    rows = [items[k]["index"] for k in good]
    if "vector" not in cols:  # an actor wrote this batch
        return Encoded(items, np.empty((0, 0), np.float32), rows, written=True)
    return Encoded(items, np.ascontiguousarray(cols["vector"][good], np.float32), rows)


def plan_actors(resources: dict[str, float], wanted: int | None) -> tuple[int, dict[str, Any], str]:
    """(actors, Ray resources per actor, device) for a cluster.

    GPUs: one actor per GPU. CPUs only: `wanted` single-threaded actors (default half the CPUs)
    sharing all but one CPU, which stays for the decode tasks (else a 2-CPU cluster running 2
    actors would never schedule a decode task)."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        return min(wanted or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}, "cuda"
    n = wanted or max(1, cpus // 2)
    share = max(0.1, min(1.0, (cpus - 1) / n)) if cpus > 1 else 0.5 / n
    return n, {"num_cpus": share}, "cpu"


def listing(paths: list[str], target: WriteTarget | None = None) -> Any:
    """The source listing as an Arrow table: index, path; with `target` (workers write), also each
    todo row pickled (exact payload types) and whether its point exists (merge, not replace)."""
    import pyarrow as pa

    cols = {"index": np.arange(len(paths), dtype=np.int64),
            "path": pa.array([os.fsencode(p) for p in paths], pa.binary())}  # exact bytes of any name
    if target is not None:
        cols["row"] = pa.array([pickle.dumps(r) for r in target.rows], pa.binary())
        cols["merge"] = pa.array([r["id"] in target.merge_ids for r in target.rows], pa.bool_())
    return pa.table(cols)


def _pipeline(ray: Any, table: Any, decoder: Decoder, spec: dict, opts: EmbedOptions,
              writes: WorkerWrites | None = None) -> Any:
    """listing blocks -> decode tasks -> encoder actor pool (-> store, with `writes`), as a lazy Ray Dataset."""
    n, resources, device = plan_actors(ray.cluster_resources(), opts.actors)
    if device == "cuda" and opts.gpu_decode == "auto":
        decoder = dataclasses.replace(decoder, jpeg_bytes=True)  # the actors have GPUs, this driver may not
    batch_size = opts.batch_size
    blocks = max(1, min(math.ceil(table.num_rows / batch_size), 10_000))
    with warnings.catch_warnings():  # max_restarts as a remote arg: deprecated in 2.60, no replacement yet
        warnings.simplefilter("ignore", DeprecationWarning)
        return (
            ray.data.from_arrow(table, override_num_blocks=blocks)
            .map_batches(decode_block, fn_kwargs={"decoder": decoder, "shape": pixel_shape(decoder)},
                         batch_size=batch_size, batch_format="numpy", num_cpus=1)
            .map_batches(EncodeActor, fn_constructor_args=(spec, device, writes), batch_size=batch_size,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n),
                         # A lost actor fails the run (re-running resumes it) rather than restart
                         # from args kept in the object store. Args that differ from the decode
                         # stage's also keep Ray Data from fusing decoding into the actors:
                         # decoding stays on CPU tasks that scale apart from the encoder.
                         max_restarts=0, **resources)
        )


def worker_writes(target: WriteTarget | None) -> WorkerWrites | None:
    """Workers write when the store can be opened from another process (a server); else None."""
    spec_of = getattr(target.store, "worker_spec", None) if target is not None else None
    spec = spec_of() if spec_of is not None else None
    return None if spec is None else WorkerWrites(spec, target.collection, target.encoder)


def ray_batches(paths: list[str], decoder: Decoder, encoder: Encoder, opts: EmbedOptions,
                target: WriteTarget | None = None) -> Iterator[Encoded]:
    """Encoded batches computed on a Ray cluster (joined or started here): in listing order with
    their vectors, or, when the actors write to `target`'s store themselves, as they finish and
    marked written."""
    writes = worker_writes(target)
    with ray_session(opts.address) as ray:
        ctx = ray.data.DataContext.get_current()
        # The driver writes in listing order, as the local engine; worker writes need no order.
        ctx.execution_options.preserve_order = writes is None
        ctx.enable_progress_bars = False  # curate draws its own bar from what comes back
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO/WARNING lines would break the bar
        ds = _pipeline(ray, listing(paths, target if writes else None), decoder, encoder.spec, opts, writes)
        # The driver's own client steps aside while the workers write, where the store needs it.
        with target.store.lent_to_workers() if writes is not None and target is not None else nullcontext():
            for cols in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                yield _unpack(cols)
