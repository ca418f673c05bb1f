"""Store-level CLI behaviour from issue 7: read-only stores, missing stores, bad settings, drop,
--version, help texts, full output disks, bombs given to slice --example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from make_bad_images import bomb_png
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.files import OutputError, write_atomic
from curate.store import StoreError, open_store

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, **kw):
    return runner.invoke(app, list(args), catch_exceptions=False, **kw)


def _embedded(tmp_path: Path, n: int = 12) -> str:
    """A store with `n` good images and one broken file, embedded with `pixels`."""
    pool = tmp_path / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(pool / f"{i}.png")
    (pool / "broken.png").write_bytes(b"not a png")
    store = str(tmp_path / "store")
    res = _run("embed", str(pool), "--model", "pixels", "--store", store, "--workers", "0", "--quiet",
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    return store


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    return lines[0]


# ---- read-only stores -----------------------------------------------------------------------

def test_read_only_store_serves_reads_and_refuses_writes_in_one_line(tmp_path, monkeypatch):
    """Simulated with os.access (tests run as root, which ignores chmod); the real read-only
    mount is the next test."""
    store = _embedded(tmp_path)
    before = sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (mode & os.W_OK and str(p).startswith(store))
                        else real_access(p, mode, **kw))
    info = json.loads(_run("info", "--json", "--store", store).output)
    assert info["collections"]["pool"]["points"] == 13 and info["collections"]["pool"]["failed"] == 1
    res = _run("errors", "--store", store)
    assert res.exit_code == 0 and "broken.png" in res.output
    res = _run("select", "--budget", "3", "--dry-run", "--store", store, "--out", str(tmp_path / "r.csv"))
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "r.preview.csv").height == 3
    res = _run("dedup", "--suggest", "--store", store)
    assert res.exit_code == 0, res.output
    line = _one_error_line(_run("labeled", str(tmp_path / "r.preview.csv"), "--store", store))
    assert "read-only" in line
    res = _run("select", "--budget", "3", "--store", store, "--out", str(tmp_path / "r2.csv"))
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: the store")
    assert "read-only" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r2.csv").exists()  # refused before a manifest naming untagged picks is written
    assert "read-only" in _one_error_line(_run("embed", str(tmp_path / "pool"), "--model", "pixels",
                                               "--store", store, "--workers", "0", "-q"))
    assert "read-only" in _one_error_line(_run("drop", "pool", "--yes", "--store", store))
    monkeypatch.undo()
    # nothing in the store changed, and no tag was written
    assert sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*")) == before
    with open_store(store) as st:
        assert not any("labeled" in p or "selected_round" in p for p in st.payloads("pool").values())


# Commands that import no torch, so the subprocess stays fast; the test above covers the rest.
_RO_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from curate.cli import app
store = sys.argv[1]
r = CliRunner()
res = {}
for name, args in [
    ("info", ["info", "--json", "--store", store]),
    ("drop", ["drop", "pool", "--yes", "--store", store]),
    ("meta", ["meta", sys.argv[2], "--store", store]),
]:
    got = r.invoke(app, args)
    res[name] = [got.exit_code, got.output]
print(json.dumps(res))
"""


def _can_mount_read_only(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = f"mount --bind {probe} {probe} && mount -o remount,ro,bind {probe} {probe} && ! touch {probe}/x"
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-m", "sh", "-c", cmd],
                                                    capture_output=True).returncode == 0
    return bool(ok) and not (probe / "x").exists()


def test_real_read_only_mount(tmp_path):
    """The store on a read-only bind mount, in a private mount namespace (nothing leaks out)."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare -m and mount (root in a container that allows it)")
    store = _embedded(tmp_path)
    script = tmp_path / "ro.py"
    script.write_text(_RO_SCRIPT)
    cmd = (f"mount --bind {store} {store} && mount -o remount,ro,bind {store} {store} && "
           f"exec {sys.executable} {script} {store} {tmp_path / 'pool'}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["info"][0] == 0, res["info"]
    assert json.loads(res["info"][1])["collections"]["pool"]["points"] == 13
    for name in ("drop", "meta"):
        code, output = res[name]
        assert code == 2 and output.startswith("error: the store") and "read-only" in output, res[name]
        assert len(output.strip().splitlines()) == 1
    assert sorted(os.listdir(store)) == [".lock", "pool"]  # the copies went to a temporary folder


# ---- missing stores and bad settings ------------------------------------------------------------

def test_read_commands_in_another_folder_create_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["info"], ["errors"], ["select", "--budget", "2"], ["dedup", "--suggest"], ["drop", "x", "--yes"]):
        line = _one_error_line(_run(*args))
        assert "no curate store: .curate not found" in line, (args, line)
    assert not (tmp_path / ".curate").exists()


def test_bad_settings_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text("store = 5\n")
    assert "store = 5 must be a quoted string" in _one_error_line(_run("info"))
    (tmp_path / "curate.toml").unlink()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    monkeypatch.setenv("CURATE_STORE", str(a_file))
    assert "is a file, not a folder" in _one_error_line(_run("info"))
    monkeypatch.delenv("CURATE_STORE")
    (tmp_path / "pool").mkdir()
    line = _one_error_line(_run("embed", str(tmp_path / "pool"), "--device", "tpu", "--model", "pixels"))
    assert "--device 'tpu'" in line
    monkeypatch.setenv("CURATE_DEVICE", "tpu")
    assert "--device 'tpu'" in _one_error_line(_run("select", "--budget", "1"))
    from curate.device import pick_device

    with pytest.raises(ValueError, match="use auto, cpu"):
        pick_device("tpu")


# ---- drop, --version, help -------------------------------------------------------------------

def test_drop_needs_yes_and_deletes_only_that_collection(tmp_path):
    store = _embedded(tmp_path)
    with open_store(store) as st:
        st.ensure_collection("other")
        st.upsert_points("other", ["00000000-0000-0000-0000-000000000001"], [{"path": "x"}])
    line = _one_error_line(_run("drop", "pool", "--store", store))
    assert "add --yes" in line and "13 image(s)" in line
    assert "not found" in _one_error_line(_run("drop", "nope", "--yes", "--store", store))
    res = _run("drop", "pool", "--yes", "--store", store)
    assert res.exit_code == 0 and "dropped collection 'pool' (13 image(s))" in res.output
    info = json.loads(_run("info", "--json", "--store", store).output)
    assert list(info["collections"]) == ["other"]
    assert (tmp_path / "pool" / "0.png").exists()  # image files are never touched


def test_version_and_help_texts():
    from curate import __version__

    res = _run("--version")
    assert res.exit_code == 0 and res.output.strip() == f"curate {__version__}"
    top = _run("--help").output
    order = [ln.split()[0] for ln in top.split("Commands:")[1].splitlines() if ln.startswith("  ") and
             not ln.startswith("   ")]
    from curate.cli.help import ORDER

    assert order == list(ORDER)  # every command, in workflow order
    assert order.index("embed") < order.index("select") < order.index("dedup") < order.index("report")
    assert "..." not in top.split("Commands:")[1]  # command summaries are wrapped, not cut
    for cmd in order:
        text = _run(cmd, "--help").output
        assert "<str>" not in text and "<bool>" not in text and "<int" not in text, cmd
        assert not any(ln != ln.rstrip() for ln in text.splitlines()), f"{cmd}: trailing spaces"
        examples = [ln for ln in text.splitlines() if ln.strip().startswith("Example:")]
        assert examples, cmd
        for ex in examples:  # an example is one line: never wrapped mid-command
            nxt = text.splitlines()[text.splitlines().index(ex) + 1]
            assert not nxt.strip() or nxt.strip().startswith("Example"), (cmd, ex, nxt)
    demo = _run("demo", "--help").output
    assert "DIR/.curate" in demo and "default ./.curate" not in demo


# ---- output files ----------------------------------------------------------------------------

def test_write_atomic_full_disk_leaves_no_tmp(tmp_path):
    target = tmp_path / "out" / "x.csv"

    def fill(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left"):
        write_atomic(target, fill)
    assert list((tmp_path / "out").iterdir()) == []

    # polars only puts the OS error in its message
    df = pl.DataFrame({"a": [1]})

    def polars_full(tmp: Path) -> None:
        df.write_parquet(tmp)
        raise pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")

    with pytest.raises(OutputError, match="no space left"):
        write_atomic(target, polars_full)
    assert list((tmp_path / "out").iterdir()) == []


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    probe = tmp_path / "tprobe"
    probe.mkdir()
    ok = shutil.which("unshare") and subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe}"], capture_output=True
    ).returncode == 0
    return bool(ok)


_TMPFS_SCRIPT = """
import sys
import polars as pl
from curate.files import OutputError, write_atomic
try:
    write_atomic(sys.argv[1], pl.DataFrame({"a": list(range(100_000))}).write_csv)
except OutputError as e:
    print("OutputError:", e)
"""


def test_full_output_folder_on_a_real_tmpfs(tmp_path):
    """A real ENOSPC from polars on a full 16 KiB tmpfs (private mount namespace)."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs unshare -m and mount")
    full = tmp_path / "full"
    full.mkdir()
    script = tmp_path / "w.py"
    script.write_text(_TMPFS_SCRIPT)
    cmd = (f"mount -t tmpfs -o size=16k tmpfs {full} && (dd if=/dev/zero of={full}/fill bs=4k 2>/dev/null; true) "
           f"&& {sys.executable} {script} {full}/out.csv; ls -a {full}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stdout.split()
    assert f"OutputError: cannot write {full}/out.csv: no space left on the device" in proc.stdout, proc.stderr
    assert "out.csv.tmp" not in lines and "out.csv" not in lines and "fill" in lines


def test_full_output_folder_is_one_line_in_the_cli(tmp_path, monkeypatch):
    store = _embedded(tmp_path)

    def no_space(self, file, *a, **kw):
        Path(file).write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", no_space)
    out = tmp_path / "o"
    line = _one_error_line(_run("errors", "--store", store, "--out", str(out / "errors.csv")))
    assert line == f"error: cannot write {out}/errors.csv: no space left on the device; free some space or write " \
                   "elsewhere (--out)"
    assert list(out.iterdir()) == []


def test_slice_example_bomb_is_one_line(tmp_path):
    store = _embedded(tmp_path)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    line = _one_error_line(_run("slice", "big", "--example", str(bomb), "--store", store, "--top-k", "2",
                                "--out", str(tmp_path / "s")))
    assert "bomb.png" in line and "decompression bomb" in line


def test_store_error_from_python_api():
    with pytest.raises(StoreError, match="no curate store"):
        open_store("/nonexistent/curate-store", create=False)
