"""`curate embed --engine ray`: the same stages as the local engine on a local 2-CPU Ray cluster,
so the same ids, payload, vectors and error records, and the same resume after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.embed import EmbedOptions, embed_pool, failures_table
from curate.encoders import load_encoder
from curate.sources import discover
from curate.store import open_store

ROOT = Path(__file__).resolve().parents[1]


def _stored(store_dir: Path, collection: str) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, str]]:
    s = open_store(str(store_dir))
    try:
        ids, mat = s.load_vectors(collection, "pixels16")
        failures = failures_table(s, collection)
        return (dict(zip(ids, mat, strict=True)), s.payloads(collection, []),
                dict(zip(failures["relpath"], failures["error"], strict=True)))
    finally:
        s.close()


def test_ray_engine_stores_what_the_local_engine_stores(ray_cluster, tmp_path):
    from make_bad_images import write_bad_images

    expected = write_bad_images(tmp_path / "pool")
    pool = discover(tmp_path / "pool")
    enc = load_encoder("pixels", device="cpu")
    reports = {}
    for engine in ("local", "ray"):
        store = open_store(str(tmp_path / engine))
        opts = EmbedOptions(batch_size=4, workers=0, decode_timeout=5, progress=False, engine=engine)
        reports[engine] = embed_pool(pool, store, "p", enc, opts)
        store.close()
    local, ray = _stored(tmp_path / "local", "p"), _stored(tmp_path / "ray", "p")
    bad = {name for name, kind in expected.items() if kind != "ok"}
    assert set(local[2]) == bad and ray[2] == local[2]  # the same files failed, for the same reasons
    assert set(ray[0]) == set(local[0]) and len(local[0]) == len(expected) - len(bad)
    for pid, vec in local[0].items():
        np.testing.assert_allclose(ray[0][pid], vec, atol=1e-6)
    assert ray[1] == local[1]  # payload: path, relpath, sha256, size, format... and failed/error
    r, loc = reports["ray"], reports["local"]
    assert (r.embedded, r.failed, r.total) == (loc.embedded, loc.failed, loc.total)
    assert sorted(r.failures) == sorted(loc.failures)


def _write_pool(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_ray_embed_resumes_after_kill_9(ray_cluster, tmp_path):
    n = 160
    _write_pool(tmp_path / "pool", n)
    store = tmp_path / "store"
    args = ["embed", str(tmp_path / "pool"), "--model", "pixels", "--store", str(store), "--batch-size", "8",
            "--engine", "ray", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CURATE_TEST_DECODE_DELAY": "0.05"}
    log = open(tmp_path / "embed.log", "w")  # noqa: SIM115 - the child writes it until it ends
    proc = subprocess.Popen([sys.executable, "-m", "curate", *args, "--address", ray_cluster], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    rows = store / "pool" / "vector_cache" / "pixels16" / "rows.f32"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if rows.exists() and rows.stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {(tmp_path / 'embed.log').read_text()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = open_store(str(store))
    partial = s.count_vectors("pool", "pixels16")
    s.close()
    assert 0 < partial < n
    # The re-run joins the test's cluster (this process is connected) and embeds the rest once.
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{n - partial} embedded, {partial} skipped" in res.output
    s = open_store(str(store))
    ids, _ = s.load_vectors("pool", "pixels16")
    assert len(ids) == len(set(ids)) == n == s.count("pool")
    s.close()


def test_missing_ray_is_one_line_before_torch(tmp_path):
    _write_pool(tmp_path / "pool", 2)
    code = (
        "import sys; sys.modules['ray'] = None\n"  # `import ray` now raises ImportError
        "from curate.cli import app\n"
        f"try: app(['embed', {str(tmp_path / 'pool')!r}, '--model', 'pixels', '--engine', 'ray', "
        f"'--store', {str(tmp_path / 'store')!r}])\n"
        "except SystemExit as e: print('exit', e.code, 'torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.stdout.strip() == "exit 2 False", res.stdout + res.stderr
    assert res.stderr.strip() == "error: --engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')"
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--engine", "foo"], "error: --engine must be one of local, ray, got 'foo'"),
    (["--address", "auto"], "error: --address applies to --engine ray only"),
])
def test_bad_engine_options_are_refused_up_front(tmp_path, extra, message):
    _write_pool(tmp_path / "pool", 1)
    res = CliRunner().invoke(app, ["embed", str(tmp_path / "pool"), "--model", "pixels",
                                   "--store", str(tmp_path / "store"), *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "store").exists()


def test_kill_9_of_curate_takes_its_private_ray_cluster_down(tmp_path):
    """Without --address curate starts its own Ray cluster; a kill -9 of curate must not leave any
    of it running (Ray's agents outlived the driver by 1-2 minutes before curate.ray_reaper)."""
    from procs import descendants, wait_gone

    _write_pool(tmp_path / "pool", 400)
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CURATE_TEST_DECODE_DELAY": "0.05"}
    log = open(tmp_path / "embed.log", "w")  # noqa: SIM115 - the child writes it until it ends
    proc = subprocess.Popen([sys.executable, "-m", "curate", "embed", str(tmp_path / "pool"), "--model", "pixels",
                             "--store", str(store), "--batch-size", "8", "--engine", "ray", "--quiet"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    rows = store / "pool" / "vector_cache" / "pixels16" / "rows.f32"
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= descendants(proc.pid)
        if rows.exists() and rows.stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {(tmp_path / 'embed.log').read_text()}"
    time.sleep(1.0)  # the reaper polls the tree every 0.5 s: let it see the processes we saw
    seen |= descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(seen) >= 5, seen  # the reaper, Ray's head processes and workers
    left = wait_gone(seen, timeout=10)
    assert not left, f"still running 10 s after kill -9 of curate embed --engine ray: {left}"
