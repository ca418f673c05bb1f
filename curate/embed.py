"""The embedding pipeline: sources -> decode (worker processes) -> encoder -> store.

One implementation per stage (plan, Decoder, encode_batch, write_batch) and two drivers that
run them: the local one below (DataLoader processes decode, this process encodes) and the Ray one
(curate/embed_ray.py: Ray Data tasks decode, actors encode). embed_pool writes what the local
driver encodes, and what the Ray driver encodes for the embedded store (single-process); with a
server store the Ray actors run write_batch themselves and only the records of what they wrote
(ids, errors, sha256) come back. Resume, error records and Ctrl-C are the same for both.

- Decoding runs in DataLoader worker processes, each image under a time limit, so one
  pathological file cannot stall the run; every failure becomes a record, never an exception.
- On CUDA, JPEG bytes can be decoded on the GPU (nvJPEG via torchvision) instead of by PIL.
- Store writes run on a background thread, overlapped with the next batch's compute.
- Resumable: an image whose vector for this encoder is already stored is skipped, and payload is
  written before vectors, so a crash (even kill -9) at any point leaves a state the next run completes.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from curate import diskspace
from curate.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image, read_bytes, sha256_hex, time_limit
from curate.encoders import Encoder
from curate.sources import Pool
from curate.store import Condition, Store

JPEG_FORMATS = frozenset({"JPEG", "MPO"})


@dataclass
class EmbedOptions:
    batch_size: int = 256
    workers: int | None = None  # None: one per core, at most 16
    decode_timeout: float = 20.0  # seconds per image
    max_pixels: int = DEFAULT_MAX_PIXELS
    gpu_decode: str = "auto"  # auto | on | off: torchvision/nvJPEG decode of JPEGs on the encoder's device
    min_free_bytes: int = diskspace.DEFAULT_MARGIN  # the run stops before the store's disk has less free
    progress: bool = True
    engine: str = "local"  # local: DataLoader processes decode, this process encodes | ray: see embed_ray
    address: str | None = None  # ray: cluster to join (auto, host:port); None starts a private one
    actors: int | None = None  # ray: encoder actors (None: one per GPU, else half the CPUs)


@dataclass
class EmbedReport:
    collection: str
    encoder: str
    total: int = 0
    embedded: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of this run
    # Images of this run whose bytes equal an image stored under another id (the same files
    # ingested twice under other paths), and one example: (incoming path, relpath, sha256).
    same_bytes_stored: int = 0
    same_bytes_example: tuple[str, str, str] | None = None

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.embedded} embedded, {self.skipped} skipped (already stored), {self.failed} failed "
            f"of {self.total} images into {self.collection!r} with {self.encoder} "
            f"in {self.seconds:.1f} s ({self.rate:.0f} images/s)"
        )


class EmbedInterrupted(KeyboardInterrupt):
    """Ctrl-C during embed_pool, raised after every batch already computed was written."""

    def __init__(self, report: EmbedReport) -> None:
        super().__init__()
        self.report = report


@dataclass
class Decoder:
    """The decode stage, one image: path -> dict with `info` (payload facts) and either `pixels`
    (preprocessed CHW), `jpeg` (raw bytes for GPU decoding) or `error` (a one-line reason).
    Picklable (it holds only the transform, never the model), so both drivers ship it to their
    workers: DataLoader processes for the local engine, Ray tasks for --engine ray."""

    transform: Callable[[Image.Image], torch.Tensor]
    image_size: int
    timeout: float
    max_pixels: int
    jpeg_bytes: bool
    delay: float = 0.0  # test hook (CURATE_TEST_DECODE_DELAY): seconds of sleep per image, to kill runs mid-way

    def __call__(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = {}
        try:
            with time_limit(self.timeout):
                if self.delay:
                    time.sleep(self.delay)
                data = read_bytes(path)
                info = {"sha256": sha256_hex(data), "bytes": len(data)}
                if self.jpeg_bytes and data[:3] == b"\xff\xd8\xff":
                    header = _jpeg_header(data, self.max_pixels)
                    if header is not None:  # plain RGB/gray JPEG: the GPU decodes it
                        info.update(header)
                        return {"info": info, "jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
                draft = (self.image_size, self.image_size)
                img, facts = decode_image(data, draft=draft, max_pixels=self.max_pixels)
                info.update(facts)
                return {"info": info, "pixels": self.transform(img)}
        except DecodeError as e:
            return {"info": info, "error": e.reason}
        except Exception as e:  # noqa: BLE001 - any other failure is recorded, never fatal
            return {"info": info, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}


class DecodeDataset(Dataset):
    """Item i -> the decode stage's dict for paths[i], with its `index`."""

    def __init__(
        self,
        paths: list[str],
        preprocess: Callable[[Image.Image], torch.Tensor],
        image_size: int,
        timeout: float,
        max_pixels: int,
        jpeg_bytes: bool,
        delay: float = 0.0,
    ) -> None:
        self.paths = paths
        self.decoder = Decoder(preprocess, image_size, timeout, max_pixels, jpeg_bytes, delay)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, **self.decoder(self.paths[i])}


def _jpeg_header(data: bytes, max_pixels: int) -> dict[str, Any] | None:
    """Size and format from the JPEG header (no decode). None for JPEGs the GPU path should not
    take: CMYK/YCCK, EXIF-rotated (PIL applies the rotation), or larger than max_pixels."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("RGB", "L") or im.width * im.height > max_pixels:
            return None
        if im.getexif().get(0x0112, 1) != 1:
            return None
        return {"width": im.width, "height": im.height, "format": "JPEG"}


@dataclass
class Batch:
    """One decoded batch, collated inside the worker so it crosses the process boundary as a few
    large tensors (one shared-memory segment each), not one per image."""

    items: list[dict[str, Any]]  # index, info, error (tensors removed)
    pixels: torch.Tensor | None  # stacked preprocessed images
    pixel_rows: list[int]  # dataset indices of `pixels` rows
    jpeg: torch.Tensor | None  # concatenated JPEG bytes for the GPU decode path
    jpeg_offsets: list[int]  # len(jpeg_rows) + 1 boundaries into `jpeg`
    jpeg_rows: list[int]

    def pin_memory(self) -> Batch:  # DataLoader calls this when pin_memory=True
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(items: list[dict[str, Any]]) -> Batch:
    pixel_rows = [it["index"] for it in items if "pixels" in it]
    jpeg_rows = [it["index"] for it in items if "jpeg" in it]
    pixels = [it.pop("pixels") for it in items if "pixels" in it]
    jpegs = [it.pop("jpeg") for it in items if "jpeg" in it]
    offsets = [0]
    for j in jpegs:
        offsets.append(offsets[-1] + j.numel())
    return Batch(
        items=items,
        pixels=torch.stack(pixels) if pixels else None,
        pixel_rows=pixel_rows,
        jpeg=torch.cat(jpegs) if jpegs else None,
        jpeg_offsets=offsets,
        jpeg_rows=jpeg_rows,
    )


def _worker_init(main_pid: int, _worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode; the model's threads live in the main process
    # Ctrl-C reaches the whole process group: the main process stops the run between batches
    # and shuts the workers down; a worker dying on its own mid-transfer would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker's parent is the forkserver, not curate, and the forkserver lives as long as any
    # worker holds its "alive" pipe: after a kill -9 of curate both would wait on each other
    # forever. So workers watch curate's main process itself and exit the moment it is gone;
    # the forkserver then sees its last client leave and exits too.
    exit_with(main_pid)
    try:  # and die with the forkserver, should it go first
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux
        pass


def exit_with(pid: int) -> None:
    """End this process as soon as process `pid` ends, whatever ends it (kill -9 included)."""
    try:
        fd: int | None = os.pidfd_open(pid)  # readable once the process has exited
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): poll instead
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _pid_alive(pid):
                time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="curate-exit-with-main", daemon=True).start()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _until_ctrl_c(batches: Iterator[Batch], pressed: list[bool]) -> Iterator[Batch]:
    """Yield batches until Ctrl-C, which ends the loop between batches (no half-received batch,
    no worker interrupted mid-transfer); a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread
        yield from batches
        return
    previous = signal.getsignal(signal.SIGINT)

    def first_ctrl_c(_signum, _frame) -> None:  # noqa: ANN001 - signal handler signature
        pressed.append(True)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        for batch in batches:
            yield batch
            if pressed:
                return
    finally:
        signal.signal(signal.SIGINT, previous)


def _transform_modules(transform: Any) -> list[str]:
    """Modules a worker needs to unpickle the image transform (e.g. torchvision.transforms,
    open_clip.transform): preloading them in the forkserver saves every worker seconds of imports."""
    parts = [transform, *getattr(transform, "transforms", [])]
    mods = {getattr(t, "__module__", None) or type(t).__module__ for t in parts}
    mods |= {type(t).__module__ for t in parts}
    return sorted(m for m in mods if m and m not in ("builtins", "__main__"))


def _worker_context(transform: Any):
    """A forkserver started now, preloading what workers import, so it warms up while the caller
    checks what is already stored. The preload list applies when this process's server first starts."""
    import multiprocessing
    from multiprocessing import forkserver

    from curate import forkserver_guard

    ctx = multiprocessing.get_context("forkserver")
    modules = ["curate.forkserver_guard", "torch", "PIL.Image", "curate.decode", "curate.embed"]
    ctx.set_forkserver_preload([*modules, *_transform_modules(transform)])
    # The guard ties the forkserver to this process with PR_SET_PDEATHSIG, which fires when the
    # *thread* that started it ends: only tie it to the main thread.
    if threading.current_thread() is threading.main_thread():
        os.environ[forkserver_guard.PARENT_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(forkserver_guard.PARENT_ENV, None)  # the forkserver has its copy
    return ctx


def _default_workers() -> int:
    return max(1, min(16, len(os.sched_getaffinity(0))))


def _payload(row: dict[str, Any], info: dict[str, Any], error: str | None) -> dict[str, Any]:
    payload = {k: v for k, v in row.items() if k != "id" and v is not None}
    payload.update(info)
    if error is not None:
        payload["failed"] = True
        payload["error"] = error
    return payload


class _Writer:
    """One background thread for store writes; at most `depth` batches in flight, so memory is
    bounded and errors surface within two batches."""

    def __init__(self, depth: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-writer")
        self.pending: list[Future] = []
        self.depth = depth

    def submit(self, fn: Callable[[], None]) -> None:
        while len(self.pending) >= self.depth:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(fn))

    def drain(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)


def _gpu_decode(encoder: Encoder, jpegs: list[torch.Tensor]) -> list[torch.Tensor | str]:
    """Decode a batch of JPEG byte tensors on the encoder's GPU; per-image fallback on failure."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=encoder.device))
    except RuntimeError:
        out: list[torch.Tensor | str] = []
        for data in jpegs:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=encoder.device))
            except RuntimeError as e:
                out.append(f"JPEG decode failed: {str(e).splitlines()[0][:200]}")
        return out


@dataclass
class Encoded:
    """The encode stage's output for one batch: what both drivers hand to the write stage."""

    items: list[dict[str, Any]]  # index (into the todo rows), info, error (absent when fine)
    vectors: np.ndarray  # len(good) x dim float32 (0 rows once `written`)
    good: list[int]  # indexes of the rows of `vectors`
    written: bool = False  # a worker already ran the write stage for this batch (durably: wait=True)


@dataclass
class WriteTarget:
    """Where a run's batches go, with what a worker needs to write them itself (embed_ray)."""

    store: Store
    collection: str
    encoder: str
    rows: list[dict[str, Any]]  # the todo rows; Encoded item indexes point into them
    merge_ids: set[str]  # points that exist and are fine: their payload is merged, not replaced


def encode_batch(encoder: Encoder, batch: Batch) -> Encoded:
    """The encode stage: a decoded batch -> unit vectors; GPU-decode failures become errors."""
    items = batch.items
    vectors: list[torch.Tensor] = []
    good: list[int] = []
    if batch.pixels is not None:
        pixels = batch.pixels
        if encoder.device.type == "cuda":
            pixels = pixels.to(encoder.device, non_blocking=True)
        vectors.append(encoder.encode_images(pixels))
        good.extend(batch.pixel_rows)
    if batch.jpeg is not None:
        o = batch.jpeg_offsets
        decoded = _gpu_decode(encoder, [batch.jpeg[o[k] : o[k + 1]] for k in range(len(batch.jpeg_rows))])
        by_index = {it["index"]: it for it in items}
        ok = []
        for row, img in zip(batch.jpeg_rows, decoded, strict=True):
            if isinstance(img, str):
                by_index[row]["error"] = img
            else:
                ok.append((row, img))
        if ok:
            vectors.append(encoder.encode_images(encoder.preprocess_uint8([img for _, img in ok])))
            good.extend(row for row, _ in ok)
    matrix = torch.cat(vectors).numpy() if vectors else np.empty((0, encoder.dim), np.float32)
    return Encoded(items, matrix, good)


@dataclass
class Records:
    """One batch as store writes: new points, payload merges for existing ones, vectors."""

    new_ids: list[str]
    new_payloads: list[dict[str, Any]]
    merges: dict[str, dict[str, Any]]
    good_ids: list[str]
    vectors: np.ndarray
    failures: list[tuple[str, str]]  # (path, reason)
    hashes: list[tuple[str, dict[str, Any]]]  # (sha256, row) of every image read


def _records(batch: Encoded, rows: Sequence[dict[str, Any]] | Mapping[int, dict[str, Any]],
             merge_ids: set[str]) -> Records:
    out = Records([], [], {}, [rows[i]["id"] for i in batch.good], batch.vectors, [], [])
    for it in batch.items:
        row = rows[it["index"]]
        error = it.get("error")
        if it["info"].get("sha256"):
            out.hashes.append((it["info"]["sha256"], row))
        if error is not None:
            out.failures.append((row["path"], error))
        payload = _payload(row, it["info"], error)
        if row["id"] in merge_ids:  # keeps tags; a failure here only adds failed/error
            out.merges[row["id"]] = payload
        else:
            out.new_ids.append(row["id"])
            out.new_payloads.append(payload)
    return out


def write_records(store: Store, collection: str, encoder: str, r: Records) -> None:
    """The write stage. Payload first, vectors last: "has a vector" is what resume trusts."""
    if r.new_ids:
        store.upsert_points(collection, r.new_ids, r.new_payloads)
    if r.merges:
        store.set_payloads(collection, r.merges)
    if r.good_ids:
        store.upsert_vectors(collection, encoder, r.good_ids, r.vectors)


def write_batch(store: Store, collection: str, encoder: str, batch: Encoded,
                rows: Sequence[dict[str, Any]] | Mapping[int, dict[str, Any]], merge_ids: set[str]) -> Records:
    """The write stage for one encoded batch, as a Ray worker runs it (embed_pool does the same in
    two steps, records then a background write). Returns the records, vectors written."""
    records = _records(batch, rows, merge_ids)
    write_records(store, collection, encoder, records)
    return records


def decode_loader(paths: list[str], decoder: Decoder, encoder: Encoder, batch_size: int, workers: int,
                  context: Any) -> DataLoader:
    """The DataLoader of the local driver (benchmarks/embed.py times the same one): `workers`
    processes run `decoder` on `paths` and collate batches for `encoder`'s device."""
    dataset = DecodeDataset(paths, decoder.transform, decoder.image_size, decoder.timeout, decoder.max_pixels,
                            decoder.jpeg_bytes, decoder.delay)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        worker_init_fn=functools.partial(_worker_init, os.getpid()) if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        # forkserver: workers inherit none of the open store's file descriptors or locks, so a
        # killed run's orphans can never block the run that resumes it.
        multiprocessing_context=context,
    )


def _local_batches(
    paths: list[str], decoder: Decoder, encoder: Encoder, batch_size: int, workers: int, context: Any
) -> Iterator[Encoded]:
    """The local driver: DataLoader worker processes decode, this process encodes."""
    batches = iter(decode_loader(paths, decoder, encoder, batch_size, workers, context))
    try:
        for batch in batches:
            yield encode_batch(encoder, batch)
    finally:
        _shutdown = getattr(batches, "_shutdown_workers", None)
        if _shutdown is not None:  # now, not whenever the iterator is garbage-collected
            _shutdown()


def plan(pool: Pool, store: Store, collection: str, encoder: str) -> tuple[pl.DataFrame, int, set[str]]:
    """Split the pool into rows still to embed; checked in batches, not one id at a time.

    Returns (todo rows, number already stored, ids of points that exist already)."""
    ids = pool.table["id"].to_list()
    done: set[str] = set()
    exists: set[str] = set()
    for lo in range(0, len(ids), 20_000):
        part = ids[lo : lo + 20_000]
        done |= store.existing_ids(collection, part, encoder=encoder)
        exists |= store.existing_ids(collection, part)
    todo = pool.table.filter(~pl.col("id").is_in(list(done)))
    return todo, len(done), exists


def embed_pool(
    pool: Pool,
    store: Store,
    collection: str,
    encoder: Encoder,
    options: EmbedOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed every image of `pool` not yet stored for `encoder`. `on_progress(done, total)` is
    called after each batch (the CLI draws its progress bar from it)."""
    opts = options or EmbedOptions()
    report = EmbedReport(collection=collection, encoder=encoder.name, total=len(pool))
    workers = _default_workers() if opts.workers is None else opts.workers
    local = opts.engine == "local"
    context = _worker_context(encoder.image_transform) if workers and local else None  # warms up during plan()
    store.ensure_collection(collection)
    store.ensure_encoder(collection, encoder.name, encoder.spec)
    todo, report.skipped, exists = plan(pool, store, collection, encoder.name)
    previously_failed = store.ids_where(collection, [Condition("failed", "==", True)])
    # Points that exist and are fine keep their payload (tags from analyses); only facts are merged.
    merge_ids = exists - previously_failed
    start = time.perf_counter()
    if todo.height == 0:
        report.seconds = time.perf_counter() - start
        return report
    # Stored images outside this pool: a file with the same bytes is likely the same image twice.
    stored_elsewhere = _stored_hashes(store, collection, exists) if store.count(collection) > len(exists) else None
    disk = _DiskWatch(store, encoder.dim, opts.min_free_bytes)
    disk.check_start(todo.height)

    # "on" forces the torchvision decode path on any device (that is how CPU-only CI tests it).
    use_gpu_decode = opts.gpu_decode == "on" or (opts.gpu_decode == "auto" and encoder.device.type == "cuda")
    decoder = Decoder(
        # image_transform, not the bound preprocess: workers get only the transform, never the model
        encoder.image_transform,
        encoder.image_size,
        opts.decode_timeout,
        opts.max_pixels,
        jpeg_bytes=use_gpu_decode,
        delay=float(os.environ.get("CURATE_TEST_DECODE_DELAY") or 0),
    )
    paths = [pool.raw_paths.get(p, p) for p in todo["path"].to_list()]  # names that are not UTF-8: real bytes
    rows = todo.to_dicts()
    if opts.engine == "ray":
        from curate.embed_ray import ray_batches

        target = WriteTarget(store, collection, encoder.name, rows, merge_ids)
        source = ray_batches(paths, decoder, encoder, opts, target)
    else:
        source = _local_batches(paths, decoder, encoder, opts.batch_size, workers, context)
    writer = _Writer()
    done = 0
    interrupted = False
    ctrl_c: list[bool] = []
    stream = _until_ctrl_c(source, ctrl_c)
    try:
        for batch in stream:
            records = _records(batch, rows, merge_ids)
            for sha, row in records.hashes:
                if stored_elsewhere is not None and _has_hash(stored_elsewhere, sha):
                    report.same_bytes_stored += 1
                    report.same_bytes_example = report.same_bytes_example or (row["path"], row["relpath"], sha)
            if batch.written:  # a Ray worker wrote it to the server store (wait=True): only count it
                pass
            elif not disk.room_for(len(batch.items) * (writer.depth + 1)):
                break  # this batch is not written; the next run redoes it
            else:
                writer.submit(functools.partial(write_records, store, collection, encoder.name, records))
            report.embedded += len(records.good_ids)
            report.failed += len(records.failures)
            report.failures.extend(records.failures)
            done += len(batch.items)
            if on_progress:
                on_progress(done, todo.height)
        interrupted = bool(ctrl_c)
    except KeyboardInterrupt:  # a second Ctrl-C, or not on the main thread
        interrupted = True
    except Exception as e:
        if diskspace.is_disk_full(e):
            raise disk.error_after_enospc(pool, collection, encoder.name) from e
        raise
    finally:
        stream.close()  # gives Ctrl-C back to its previous handler
        source.close()  # stops the driver's workers now, not whenever the generator is garbage-collected
        try:
            writer.drain()  # what was computed is kept: the next run resumes after it
            store.flush()
        except Exception as e:
            if diskspace.is_disk_full(e):
                raise disk.error_after_enospc(pool, collection, encoder.name) from e
            raise
        report.seconds = time.perf_counter() - start
    if interrupted:
        raise EmbedInterrupted(report)
    if disk.low:
        stored = report.skipped + report.embedded
        raise disk.error(report.total - stored, stored, report.total)
    return report


def _stored_hashes(store: Store, collection: str, skip: set[str]) -> np.ndarray:
    """Sorted 64-bit prefixes of the sha256 of every stored image not in `skip` (8 bytes each)."""
    parts = [
        np.fromiter((int(p["sha256"][:16], 16) for pid, p in batch if pid not in skip and p.get("sha256")),
                    dtype=np.uint64)
        for batch in store.scan_payload(collection, fields=["sha256"])
    ]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)


def _has_hash(sorted_prefixes: np.ndarray, sha: str | None) -> bool:
    if not sha or not sorted_prefixes.size:
        return False
    key = np.uint64(int(sha[:16], 16))
    i = int(np.searchsorted(sorted_prefixes, key))
    return i < sorted_prefixes.size and sorted_prefixes[i] == key


def same_bytes_advice(store: Store, collection: str, report: EmbedReport) -> str | None:
    """One warning line when this run stored images that were already stored under other ids."""
    if not report.same_bytes_stored or report.same_bytes_example is None:
        return None
    path, relpath, sha = report.same_bytes_example
    twins = store.payloads(collection, [Condition("sha256", "==", sha)], ["path", "relpath"])
    stored = next((p for p in twins.values() if p.get("relpath") != relpath), {})
    rel = str(stored.get("relpath") or "")
    root = path[: -len(rel) - 1] if rel and path.endswith("/" + rel) else None
    how = (f"re-run with --root {root} so ids match the stored ones" if root else
           "use --root FOLDER (ids are paths relative to it) so ids match the stored ones")
    return (
        f"warning: {report.same_bytes_stored} image(s) of this run are byte-identical (sha256) to images "
        f"already stored under other ids, e.g. {path} = stored {rel or stored.get('path')!r}; they were added "
        f"as new points. If this is the same pool listed another way (absolute paths, another folder), {how}"
    )


class _DiskWatch:
    """Free space on the embedded store's disk, checked before the run and before each write."""

    def __init__(self, store: Store, dim: int, margin: int) -> None:
        self.store = store
        root = getattr(store, "root", None)  # the embedded store's folder; a server manages its own disk
        self.folder = root if isinstance(root, Path) else None
        self.per_image = diskspace.bytes_per_image(dim)
        self.margin = margin
        self.low = False
        self.free = 0

    def check_start(self, images: int) -> None:
        if self.folder is None:
            return
        self.free = diskspace.free_bytes(self.folder)
        need = images * self.per_image + self.margin
        if self.free < need:
            raise diskspace.DiskSpaceError(
                f"not enough disk space for the store {self.folder}: {images} images need about "
                f"{diskspace.human(need)} (with a {diskspace.human(self.margin)} margin), "
                f"{diskspace.human(self.free)} free; free space or use --store on another disk"
            )

    def room_for(self, images: int) -> bool:
        """False (and remembered) when writing `images` more would eat into the margin."""
        if self.folder is None:
            return True
        self.free = diskspace.free_bytes(self.folder)
        self.low = self.free < self.margin + images * self.per_image
        return not self.low

    def error(self, left: int, stored: int, total: int) -> diskspace.DiskSpaceError:
        need = left * self.per_image + self.margin
        return diskspace.DiskSpaceError(
            f"stopped: the disk of the store {self.folder or ''} is nearly full ({diskspace.human(self.free)} free); "
            f"about {diskspace.human(need)} is needed for the {left} images left; "
            f"{stored} of {total} stored; free space and re-run to resume"
        )

    def error_after_enospc(self, pool: Pool, collection: str, encoder: str) -> diskspace.DiskSpaceError:
        """A write failed for lack of space: count what really landed (some writes were in flight)."""
        if self.folder is not None:
            self.free = diskspace.free_bytes(self.folder)
        ids = pool.table["id"].to_list()
        stored = len(self.store.existing_ids(collection, ids, encoder=encoder))
        return self.error(len(ids) - stored, stored, len(ids))


def failures_table(store: Store, collection: str) -> pl.DataFrame:
    """Every image of a collection that could not be embedded, with its reason."""
    rows = [
        {"id": pid, "path": p.get("path"), "relpath": p.get("relpath"), "error": p.get("error")}
        for pid, p in store.payloads(
            collection, [Condition("failed", "==", True)], ["path", "relpath", "error"]
        ).items()
    ]
    schema = {"id": pl.Utf8, "path": pl.Utf8, "relpath": pl.Utf8, "error": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).sort("relpath")
