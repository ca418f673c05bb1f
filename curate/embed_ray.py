"""The Ray driver of the embedding pipeline (`curate embed --engine ray`).

The stages are curate.embed's (Decoder, encode_batch, and the write stage in embed_pool); only
where they run changes: Ray Data reads the listing in blocks, decodes on CPU tasks and embeds on
an actor pool (one actor per GPU, else CPU actors; each loads the encoder once from its spec).
Vectors stream back to this process in order and embed_pool writes them, because the embedded
Qdrant Edge store is single-process; resume, error records and Ctrl-C are therefore the local
engine's own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from curate.embed import Batch, Decoder, EmbedOptions, Encoded, encode_batch
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
    return {"index": block["index"], "kind": kind, "info": info, "error": error, "pixels": pixels, "jpeg": jpeg}


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


class EncodeActor:
    """Ray actor: loads the encoder once, then encodes decoded blocks with curate.embed.encode_batch."""

    def __init__(self, spec: dict, device: str) -> None:
        torch.set_num_threads(1)  # one core per CPU actor (plan_actors); a GPU actor only feeds its GPU
        self.encoder = encoder_from_spec(spec, device)

    def __call__(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = encode_batch(self.encoder, _batch(cols))
        n = len(cols["index"])
        pos = {int(i): k for k, i in enumerate(cols["index"])}
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        good = np.zeros(n, bool)
        rows = [pos[i] for i in out.good]
        vectors[rows] = out.vectors
        good[rows] = True
        error = np.array([it.get("error", "") for it in out.items], dtype=object)  # GPU decode may add some
        return {"index": cols["index"], "info": cols["info"], "error": error, "vector": vectors, "good": good}


def _unpack(cols: dict[str, np.ndarray]) -> Encoded:
    items = [{"index": int(i), "info": json.loads(s)} | ({"error": str(e)} if e else {})
             for i, s, e in zip(cols["index"], cols["info"], cols["error"], strict=True)]
    good = np.flatnonzero(cols["good"])
    return Encoded(items, np.ascontiguousarray(cols["vector"][good], np.float32), [items[k]["index"] for k in good])


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


def _pipeline(ray: Any, paths: list[str], decoder: Decoder, spec: dict, opts: EmbedOptions) -> Any:
    """listing blocks -> decode tasks -> encoder actor pool, as a lazy Ray Dataset."""
    import pyarrow as pa

    n, resources, device = plan_actors(ray.cluster_resources(), opts.actors)
    if device == "cuda" and opts.gpu_decode == "auto":
        decoder = dataclasses.replace(decoder, jpeg_bytes=True)  # the actors have GPUs, this driver may not
    listing = pa.table({"index": np.arange(len(paths), dtype=np.int64),
                        "path": pa.array([os.fsencode(p) for p in paths], pa.binary())})  # exact bytes of any name
    batch_size = opts.batch_size
    blocks = max(1, min(math.ceil(len(paths) / batch_size), 10_000))
    with warnings.catch_warnings():  # max_restarts as a remote arg: deprecated in 2.60, no replacement yet
        warnings.simplefilter("ignore", DeprecationWarning)
        return (
            ray.data.from_arrow(listing, override_num_blocks=blocks)
            .map_batches(decode_block, fn_kwargs={"decoder": decoder, "shape": pixel_shape(decoder)},
                         batch_size=batch_size, batch_format="numpy", num_cpus=1)
            .map_batches(EncodeActor, fn_constructor_args=(spec, device), batch_size=batch_size,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n),
                         # A lost actor fails the run (re-running resumes it) rather than restart
                         # from args kept in the object store. Args that differ from the decode
                         # stage's also keep Ray Data from fusing decoding into the actors:
                         # decoding stays on CPU tasks that scale apart from the encoder.
                         max_restarts=0, **resources)
        )


def ray_batches(paths: list[str], decoder: Decoder, encoder: Encoder, opts: EmbedOptions) -> Iterator[Encoded]:
    """Encoded batches in listing order, computed on a Ray cluster (joined or started here)."""
    with ray_session(opts.address) as ray:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # same write order as the local engine
        ctx.enable_progress_bars = False  # curate draws its own bar from what comes back
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO/WARNING lines would break the bar
        ds = _pipeline(ray, paths, decoder, encoder.spec, opts)
        for cols in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            yield _unpack(cols)
