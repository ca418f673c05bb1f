"""`embed --engine ray` with a server store: the encoder actors write (curate.embed.write_batch) and
the driver gets no vectors; with the embedded store the driver writes, as before.

No Qdrant server runs here, so the server is qdrant-client's local mode on a folder: one process at a
time (a file lock), hence ONE actor, and the driver's client closed while it writes (a real server
takes all actors' clients at once). That the driver's client is closed during the run is itself a
proof that the workers wrote: a driver write would fail on the closed client."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curate.embed import EmbedInterrupted, EmbedOptions, WriteTarget, embed_pool, failures_table, plan
from curate.embed_ray import EncodeActor, decode_block, listing, pixel_shape, worker_writes
from curate.encoders import load_encoder
from curate.sources import discover
from curate.store import StoreError, open_store
from curate.store.remote import RemoteStore

ENC = "pixels16"


def _opts(engine: str, **kw) -> EmbedOptions:
    return EmbedOptions(batch_size=4, workers=0, decode_timeout=5, progress=False, engine=engine, actors=1, **kw)


def _stored(store) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, str]]:
    ids, mat = store.load_vectors("p", ENC)
    failures = failures_table(store, "p")
    return (dict(zip(ids, mat, strict=True)), store.payloads("p", []),
            dict(zip(failures["relpath"], failures["error"], strict=True)))


def _write_pool(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_workers_write_to_a_server_store_what_the_local_engine_writes(ray_cluster, tmp_path, monkeypatch):
    from make_bad_images import write_bad_images

    import curate.embed_ray

    received: set[str] = set()
    unpack = curate.embed_ray._unpack
    monkeypatch.setattr(curate.embed_ray, "_unpack", lambda cols: received.update(cols) or unpack(cols))

    expected = write_bad_images(tmp_path / "pool")
    pool = discover(tmp_path / "pool")
    enc = load_encoder("pixels", device="cpu")
    got, reports = {}, {}
    for engine in ("local", "ray"):
        store = RemoteStore(None, path=str(tmp_path / engine))
        reports[engine] = embed_pool(pool, store, "p", enc, _opts(engine))
        got[engine] = _stored(store)
        store.close()
    local, ray = got["local"], got["ray"]
    bad = {name for name, kind in expected.items() if kind != "ok"}
    assert set(local[2]) == bad and ray[2] == local[2]  # the same error records
    assert set(ray[0]) == set(local[0]) and len(local[0]) == len(expected) - len(bad)
    for pid, vec in local[0].items():
        np.testing.assert_allclose(ray[0][pid], vec, atol=1e-6)
    assert ray[1] == local[1]  # payload: path, relpath, sha256, size, format... and failed/error
    r, loc = reports["ray"], reports["local"]
    assert (r.embedded, r.failed, r.total) == (loc.embedded, loc.failed, loc.total) == (len(local[0]), len(bad),
                                                                                       len(expected))
    assert sorted(r.failures) == sorted(loc.failures)
    assert received and "vector" not in received  # the driver got records only


def _decoder(enc):
    from curate.embed import Decoder

    return Decoder(enc.image_transform, enc.image_size, 5.0, 10**8, jpeg_bytes=False)


def _actor_output(store, pool, enc) -> dict[str, np.ndarray]:
    """One block through the Ray stages' bodies, in this process: decode_block, then EncodeActor
    as embed_pool's Ray driver builds it for `store`."""
    store.ensure_collection("p")
    store.ensure_encoder("p", enc.name, enc.spec)
    todo, _, exists = plan(pool, store, "p", enc.name)
    rows = todo.to_dicts()
    target = WriteTarget(store, "p", enc.name, rows, exists)
    writes = worker_writes(target)
    table = listing([r["path"] for r in rows], target if writes else None)
    decoder = _decoder(enc)
    block = decode_block({k: table[k].to_numpy(zero_copy_only=False) for k in table.column_names}, decoder,
                         pixel_shape(decoder))
    threads = torch.get_num_threads()  # the actor sets 1, as in its own process
    try:
        with store.lent_to_workers() if writes else nullcontext():  # as ray_batches does
            return EncodeActor(enc.spec, "cpu", writes)(block)
    finally:
        torch.set_num_threads(threads)


def test_with_a_server_store_the_actor_writes_and_returns_no_vectors(tmp_path):
    _write_pool(tmp_path / "pool", 6)
    pool = discover(tmp_path / "pool")
    enc = load_encoder("pixels", device="cpu")
    server = RemoteStore(None, path=str(tmp_path / "server"))
    out = _actor_output(server, pool, enc)
    assert set(out) == {"index", "info", "error", "good"} and out["good"].all()  # no "vector"
    ids, mat = server.load_vectors("p", enc.name)  # the actor wrote them, payload first
    assert len(ids) == 6 == server.count("p")
    by_path = {p["path"]: pid for pid, p in server.payloads("p", []).items()}
    x = enc.encode_images(_decoder(enc)(str(tmp_path / "pool" / "0003.png"))["pixels"][None]).numpy()
    np.testing.assert_allclose(mat[ids.index(by_path[str(tmp_path / "pool" / "0003.png")])], x[0], atol=1e-6)
    server.close()
    # ":memory:" lives in this process only: a worker could not reach it, so the driver writes.
    assert worker_writes(WriteTarget(RemoteStore(":memory:"), "p", enc.name, [], set())) is None
    edge = open_store(str(tmp_path / "edge"))  # embedded, single-process: the driver writes
    out = _actor_output(edge, pool, enc)
    assert out["vector"].shape == (6, enc.dim) and edge.count_vectors("p", enc.name) == 0
    edge.close()


def test_worker_writes_resume_skip_what_is_stored_and_resend_an_interrupted_batch(ray_cluster, tmp_path,
                                                                                  monkeypatch):
    enc = load_encoder("pixels", device="cpu")
    folder = tmp_path / "pool"
    _write_pool(folder, 8)
    store = RemoteStore(None, path=str(tmp_path / "server"))
    first = embed_pool(discover(folder), store, "p", enc, _opts("local"))  # the same rows, so either engine
    assert (first.embedded, first.skipped) == (8, 0)
    # 8 more images; 3 of them as a killed worker leaves them: payload upserted, vector not yet.
    _write_pool(folder, 8, start=8)
    pool = discover(folder)
    half = pool.table.filter(pool.table["relpath"].is_in(["0008.png", "0009.png", "0010.png"]))
    store.upsert_points("p", half["id"].to_list(), [{"path": p} for p in half["path"].to_list()])
    # Ctrl-C after the first batch comes back (decoding slowed down so the run is still going).
    monkeypatch.setenv("CURATE_TEST_DECODE_DELAY", "0.1")

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(EmbedInterrupted) as stopped:
        embed_pool(pool, store, "p", enc, _opts("ray"), on_progress=stop)
    assert stopped.value.report.embedded >= 1
    partial = store.count_vectors("p", ENC)
    assert 8 < partial <= 16
    monkeypatch.delenv("CURATE_TEST_DECODE_DELAY")
    rest = embed_pool(pool, store, "p", enc, _opts("ray"))
    assert (rest.skipped, rest.embedded, rest.failed) == (partial, 16 - partial, 0)
    ids, mat = store.load_vectors("p", ENC)
    assert len(ids) == len(set(ids)) == 16 == store.count("p")
    # the re-sent points got their full payload, not the interrupted one's
    assert all(p.get("sha256") for p in store.payloads("p", []).values())
    reference = load_encoder("pixels", device="cpu")
    x = reference.encode_images(_decoder(reference)(str(folder / "0009.png"))["pixels"][None]).numpy()
    np.testing.assert_allclose(mat[ids.index(half["id"][1])], x[0], atol=1e-6)
    store.close()


def test_local_path_store_is_one_process_at_a_time_and_steps_aside_for_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(RemoteStore, "lock_wait_s", 0.2)
    store = RemoteStore(None, path=str(tmp_path / "server"))
    spec = store.worker_spec()
    assert spec is not None and spec.exclusive and spec.path == str(tmp_path / "server")
    with pytest.raises(StoreError, match="in use by another process"):
        spec.open()  # the lock is this process's client's (qdrant-client holds it per client)
    with store.lent_to_workers():
        with spec.open() as worker:  # what an actor does per batch
            worker.ensure_collection("p")
    assert store.has_collection("p")  # reopened, and sees the worker's write
    store.close()
