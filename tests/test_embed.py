"""The embedding pipeline end to end: real files in, vectors and payload out, on both stores."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from procs import cmdline, descendants, wait_gone

from curate.decode import decode_image
from curate.embed import DecodeDataset, EmbedOptions, embed_pool, failures_table
from curate.encoders import load_encoder
from curate.sources import discover
from curate.store import Condition, open_store

OPTS = EmbedOptions(batch_size=16, workers=0, progress=False)


def _write_pool(folder: Path, n: int, seed: int = 0, fmt: str = "png") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(24 + i % 5, 32, 3), dtype=np.uint8)
        p = folder / f"img_{i:04d}.{fmt}"
        Image.fromarray(arr).save(p, quality=90) if fmt == "jpg" else Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def _reference_vectors(encoder, paths: list[Path]) -> np.ndarray:
    """Brute-force reference: decode and encode each image on its own."""
    rows = []
    for p in paths:
        img, _ = decode_image(p.read_bytes(), draft=(encoder.image_size, encoder.image_size))
        rows.append(encoder.encode_images(encoder.preprocess(img)[None])[0].numpy())
    return np.stack(rows)


@pytest.fixture(params=["edge", "remote"])
def store(request, tmp_path):
    s = open_store(str(tmp_path / "store")) if request.param == "edge" else open_store(url=":memory:")
    yield s
    s.close()


def test_embed_stores_exact_vectors_and_facts(store, tmp_path):
    paths = _write_pool(tmp_path / "pool", 37)
    pl.DataFrame({"path": [p.name for p in paths], "label": [i % 4 for i in range(37)]}).write_csv(
        tmp_path / "pool" / "m.csv"
    )
    enc = load_encoder("pixels", device="cpu")
    report = embed_pool(discover(tmp_path / "pool" / "m.csv"), store, "pool", enc, OPTS)
    assert (report.total, report.embedded, report.skipped, report.failed) == (37, 37, 0, 0)
    ids, mat = store.load_vectors("pool", enc.name)
    payloads = store.payloads("pool")
    by_name = {payloads[i]["relpath"]: row for i, row in zip(ids, mat, strict=True)}
    want = _reference_vectors(enc, paths)
    got = np.stack([by_name[p.name] for p in paths])
    np.testing.assert_allclose(got, want, atol=1e-6)
    for p in paths:
        pay = next(v for v in payloads.values() if v["relpath"] == p.name)
        assert pay["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert (pay["width"], pay["height"]) == Image.open(p).size
        assert pay["bytes"] == p.stat().st_size and pay["format"] == "PNG"
        assert pay["label"] == int(p.stem.split("_")[1]) % 4
        assert "failed" not in pay


def test_rerun_skips_and_second_encoder_keeps_tags(store, tmp_path, tiny_clip):
    _write_pool(tmp_path / "pool", 20)
    pool = discover(tmp_path / "pool")
    pixels = load_encoder("pixels", device="cpu")
    embed_pool(pool, store, "pool", pixels, OPTS)
    again = embed_pool(pool, store, "pool", pixels, OPTS)
    assert (again.embedded, again.skipped) == (0, 20)
    tagged = pool.table["id"].to_list()[:5]
    store.set_payload("pool", tagged, {"selected_round": 1})
    clip = load_encoder(tiny_clip.model, tiny_clip.checkpoint, device="cpu")
    second = embed_pool(pool, store, "pool", clip, OPTS)
    assert (second.embedded, second.skipped) == (20, 0)
    assert sorted(store.encoders("pool")) == sorted([pixels.name, clip.name])
    assert store.count_vectors("pool", clip.name) == 20 and store.count_vectors("pool", pixels.name) == 20
    assert set(store.payloads("pool", [Condition("selected_round", "==", 1)], [])) == set(tagged)
    assert store.count("pool") == 20


def test_decode_time_limit_in_worker_process(tmp_path):
    paths = [str(p) for p in _write_pool(tmp_path / "pool", 4)]

    ds = DecodeDataset(paths, _slow_on_second, image_size=16, timeout=0.5, max_pixels=10**8, jpeg_bytes=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=lambda x: x)
    t0 = time.perf_counter()
    (items,) = list(loader)
    assert time.perf_counter() - t0 < 10
    assert [("error" in it) for it in items] == [False, True, False, False]
    assert "timed out" in items[1]["error"]


def _slow_on_second(img: Image.Image) -> torch.Tensor:
    if img.size == (32, 25):  # the second image of _write_pool
        time.sleep(30)
    return torch.zeros(3, 4, 4)


def test_jpeg_bytes_path_matches_pil_path(tmp_path):
    """The GPU decode path (torchvision decode_jpeg + tensor preprocessing), run on the CPU here."""
    _write_pool(tmp_path / "pool", 12, fmt="jpg")
    # one CMYK and one EXIF-rotated JPEG must take the PIL path and still be right
    Image.new("CMYK", (30, 20), (0, 128, 255, 0)).save(tmp_path / "pool" / "cmyk.jpg")
    rot = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(tmp_path / "pool" / "rot.jpg", exif=exif)
    enc = load_encoder("pixels", device="cpu")
    a = open_store(str(tmp_path / "a"))
    b = open_store(str(tmp_path / "b"))
    pool = discover(tmp_path / "pool")
    ra = embed_pool(pool, a, "p", enc, EmbedOptions(batch_size=8, workers=0, gpu_decode="off"))
    rb = embed_pool(pool, b, "p", enc, EmbedOptions(batch_size=8, workers=0, gpu_decode="on"))
    assert ra.embedded == rb.embedded == 14
    ids_a, va = a.load_vectors("p", enc.name)
    ids_b, vb = b.load_vectors("p", enc.name)
    assert ids_a == ids_b
    # different resize kernels (PIL vs torch): close, not bit-identical
    assert float((va * vb).sum(1).min()) > 0.99
    pa, pb = a.payloads("p"), b.payloads("p")
    sizes_a = {k: (v["width"], v["height"]) for k, v in pa.items()}
    assert sizes_a == {k: (v["width"], v["height"]) for k, v in pb.items()}
    rot_id = next(k for k, v in pa.items() if v["relpath"] == "rot.jpg")
    assert (pa[rot_id]["width"], pa[rot_id]["height"]) == (20, 40)
    a.close()
    b.close()


def test_bad_inputs_never_stop_the_run(tmp_path):
    from make_bad_images import write_bad_images

    folder = tmp_path / "pool"
    expected = write_bad_images(folder)
    store = open_store(str(tmp_path / "store"))
    enc = load_encoder("pixels", device="cpu")
    pool = discover(folder)
    report = embed_pool(pool, store, "p", enc, EmbedOptions(batch_size=4, workers=2, decode_timeout=5))
    ok = {n for n, kind in expected.items() if kind == "ok"}
    bad = {n: kind for n, kind in expected.items() if kind != "ok"}
    assert report.embedded == len(ok) and report.failed == len(bad) and report.total == len(expected)
    failures = failures_table(store, "p")
    got = dict(zip(failures["relpath"], failures["error"], strict=True))
    assert set(got) == set(bad)
    for name, reason in got.items():
        assert reason, name
    stored = {p["relpath"] for p in store.payloads("p", [Condition("failed", "missing")]).values()}
    assert stored == ok
    # nothing lost: every file of the pool is a point, embedded or failed
    assert store.count("p") == len(expected)
    store.close()


def test_resume_after_kill_9(tmp_path):
    folder = tmp_path / "pool"
    _write_pool(folder, 1500)
    store_dir = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "curate",
        "embed",
        str(folder),
        "--model",
        "pixels",
        "--store",
        str(store_dir),
        "--batch-size",
        "16",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Vectors reach the raw-array cache only after the shard write: kill once some have landed.
    rows = store_dir / "pool" / "vector_cache" / "pixels16" / "rows.f32"
    deadline = time.time() + 120
    seen: dict[int, int] = {}  # every process curate started: none may outlive it (issue 7)
    while proc.poll() is None and time.time() < deadline:
        seen |= descendants(proc.pid)
        if rows.exists() and rows.stat().st_size >= 64 * 768 * 4:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed; grow the pool"
    seen |= descendants(proc.pid)
    names = {pid: cmdline(pid) for pid in seen}  # read before the kill, for the message below
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(seen) >= 3, names  # forkserver, resource tracker, decode worker
    left = wait_gone(seen, timeout=5)
    assert not left, f"still running 5 s after kill -9 of curate embed: {left}"
    s = open_store(str(store_dir))
    partial = s.count_vectors("pool", "pixels16")
    s.close()
    assert 0 < partial < 1500
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{1500 - partial} embedded, {partial} skipped" in res.stdout
    s = open_store(str(store_dir))
    ids, mat = s.load_vectors("pool", "pixels16")
    assert len(ids) == len(set(ids)) == 1500 == s.count("pool")
    assert sorted(ids) == sorted(discover(folder).table["id"].to_list())
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    s.close()
