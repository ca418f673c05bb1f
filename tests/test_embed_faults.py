"""Faults during `curate embed`: Ctrl-C and a full disk (kill -9 is in tests/test_embed.py).
No process of curate's may outlive it, and the store must stay openable and resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from procs import descendants, wait_gone
from typer.testing import CliRunner

from curate.cli import app
from curate.store import open_store


def _write_pool(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def _embed_cmd(folder: Path, store: Path, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "curate", "embed", str(folder), "--model", "pixels", "--store", str(store),
            "--batch-size", "8", "--workers", str(workers), "--device", "cpu", "--quiet"]


def _start_and_wait_for_workers(cmd: list[str], store: Path, workers: int) -> tuple[subprocess.Popen, dict]:
    """Start an embed and return once its decode workers run and vectors have landed, with every
    descendant process seen so far (pid -> start time)."""
    # Output goes to files, not pipes: an orphan holding a pipe open would hang the test, not fail it.
    log = open(store.parent / "embed.log", "w")  # noqa: SIM115 - the child writes it until it ends
    # A session of its own: Ctrl-C in a terminal signals the whole process group, and so do we.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rows = store / "pool" / "vector_cache" / "pixels16" / "rows.f32"
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= descendants(proc.pid)
        # forkserver + resource tracker + the workers
        if len(seen) >= workers + 2 and rows.exists() and rows.stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before the fault could be injected: {_log(store)}"
    return proc, seen


def _log(store: Path) -> str:
    return (store.parent / "embed.log").read_text()


def test_ctrl_c_stores_what_was_done_and_info_reports_while_running(tmp_path):
    _write_pool(tmp_path / "pool", 2000)
    store = tmp_path / "store"
    cmd = _embed_cmd(tmp_path / "pool", store)
    proc, seen = _start_and_wait_for_workers(cmd, store, workers=2)
    deadline = time.monotonic() + 60
    while not (store / "embed-progress.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)  # holds the store, and cannot finish while we look
    assert proc.poll() is None, _log(store)
    # `info` while the run holds the store: it says what runs and how far, instead of refusing
    res = CliRunner().invoke(app, ["info", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert f"curate embed (pid {proc.pid}) is writing collection 'pool' with pixels16" in res.output
    running = json.loads(CliRunner().invoke(app, ["info", "--json", "--store", str(store)]).output)["running"]
    assert running["pid"] == proc.pid and running["total"] == 2000 and 0 < running["done"] <= 2000
    res = CliRunner().invoke(app, ["errors", "--store", str(store)])
    assert res.exit_code == 2 and f"curate embed (pid {proc.pid}) is writing" in res.output, res.output

    seen |= descendants(proc.pid)
    os.kill(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert proc.wait(timeout=60) == 130, _log(store)
    assert not wait_gone(seen, timeout=5), "a worker or the forkserver outlived the interrupted run"
    found = re.search(r"interrupted: (\d+) of 2000 stored; re-run to resume", _log(store))
    assert found, _log(store)
    assert "Traceback" not in _log(store)
    s = open_store(str(store))
    stored = s.count_vectors("pool", "pixels16")
    s.close()
    assert 0 < stored == int(found.group(1)) < 2000
    assert not (store / "embed-progress.json").exists()
    info = json.loads(CliRunner().invoke(app, ["info", "--json", "--store", str(store)]).output)
    assert info["collections"]["pool"]["encoders"]["pixels16"]["count"] == stored


def _in_process_pool(tmp_path: Path, n: int):
    from curate.sources import discover

    _write_pool(tmp_path / "pool", n)
    return discover(tmp_path / "pool")


def test_low_disk_space_stops_with_the_space_needed_and_resumes(tmp_path, monkeypatch):
    import curate.embed as embed_mod
    from curate.diskspace import DiskSpaceError
    from curate.embed import EmbedOptions, embed_pool
    from curate.encoders import load_encoder

    pool = _in_process_pool(tmp_path, 80)
    enc = load_encoder("pixels", device="cpu")
    opts = EmbedOptions(batch_size=8, workers=0, progress=False, min_free_bytes=1 << 20)
    # Before the run: too little space for the whole pool -> refused before anything is written.
    monkeypatch.setattr(embed_mod.diskspace, "free_bytes", lambda _p: 2 << 20)
    store = open_store(str(tmp_path / "store"))
    try:
        embed_pool(pool, store, "pool", enc, opts)
        raise AssertionError("a run that cannot fit must not start")
    except DiskSpaceError as e:
        need = 80 * (4 * 4 * 768 + 4096) + (1 << 20)
        assert f"80 images need about {need / 1024**2:.1f} MB" in str(e) and "2.0 MB free" in str(e)
    assert store.count_vectors("pool", enc.name) == 0
    # During the run: the free space shrinks as batches land; the run stops with the margin kept.
    calls = []

    def shrinking(_path) -> int:
        calls.append(1)
        return 100 << 20 if len(calls) <= 4 else (1 << 20) + 1000

    monkeypatch.setattr(embed_mod.diskspace, "free_bytes", shrinking)
    try:
        embed_pool(pool, store, "pool", enc, opts)
        raise AssertionError("the run should have stopped on low disk space")
    except DiskSpaceError as e:
        msg = str(e)
    assert "\n" not in msg and "nearly full" in msg and "free space and re-run to resume" in msg
    assert "24 of 80 stored" in msg and "is needed for the 56 images left" in msg
    store.close()
    monkeypatch.undo()
    store = open_store(str(tmp_path / "store"))  # still opens; the next run completes it
    assert store.count_vectors("pool", enc.name) == 24
    report = embed_pool(pool, store, "pool", enc, opts)
    assert (report.embedded, report.skipped) == (56, 24)
    ids, _ = store.load_vectors("pool", enc.name)
    assert sorted(ids) == sorted(pool.table["id"].to_list()) and store.count("pool") == 80
    store.close()


def test_real_small_disk_filled_by_another_writer(tmp_path):
    """The same on a real 64 MB tmpfs that something else fills during the run (root only)."""
    import shutil

    import pytest

    from curate.diskspace import DiskSpaceError
    from curate.embed import EmbedOptions, embed_pool
    from curate.encoders import load_encoder

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); "
                    "the injected low-space test above still runs")
    try:
        pool = _in_process_pool(tmp_path, 300)
        enc = load_encoder("pixels", device="cpu")
        opts = EmbedOptions(batch_size=8, workers=0, progress=False, min_free_bytes=8 << 20)
        ballast = disk / "other-writer.bin"

        def fill_disk(done: int, _total: int) -> None:
            if done == 16:  # another program takes all but the margin (plus 100 KB)
                with open(ballast, "wb") as f:
                    f.write(b"\0" * (shutil.disk_usage(disk).free - (8 << 20) - 100_000))

        store = open_store(str(disk / "store"))
        try:
            with pytest.raises(DiskSpaceError, match="nearly full.*free space and re-run to resume") as err:
                embed_pool(pool, store, "pool", enc, opts, on_progress=fill_disk)
        finally:
            store.close()
        stored = int(re.search(r"(\d+) of 300 stored", str(err.value)).group(1))
        assert 16 <= stored < 300
        ballast.unlink()
        store = open_store(str(disk / "store"))
        assert store.count_vectors("pool", enc.name) == stored
        report = embed_pool(pool, store, "pool", enc, opts)
        assert (report.embedded, report.skipped) == (300 - stored, stored)
        assert store.count("pool") == 300 == store.count_vectors("pool", enc.name)
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_enospc_from_a_store_write_is_the_same_one_line_error(tmp_path, monkeypatch):
    import errno

    import pytest

    from curate.diskspace import DiskSpaceError
    from curate.embed import EmbedOptions, embed_pool
    from curate.encoders import load_encoder

    pool = _in_process_pool(tmp_path, 24)
    enc = load_encoder("pixels", device="cpu")
    store = open_store(str(tmp_path / "store"))
    real = store.upsert_vectors
    writes = []

    def full_after_two(*args, **kwargs):
        writes.append(1)
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "upsert_vectors", full_after_two)
    opts = EmbedOptions(batch_size=8, workers=0, progress=False, min_free_bytes=0)
    with pytest.raises(DiskSpaceError, match="nearly full.*free space and re-run to resume"):
        embed_pool(pool, store, "pool", enc, opts)
    monkeypatch.undo()
    assert store.count_vectors("pool", enc.name) == 16
    report = embed_pool(pool, store, "pool", enc, opts)
    assert (report.embedded, report.skipped) == (8, 16)
    store.close()
