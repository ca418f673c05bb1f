"""What `curate embed` does with bad arguments and hostile file names: fail fast in one line,
before torch is imported; never abort a folder over one name; never let a name drive the terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

# Runs the CLI in a fresh interpreter, so sys.modules shows what the command imported.
_FRESH = """
import json, sys
from typer.testing import CliRunner
from curate.cli import app
res = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": res.exit_code, "out": res.output, "torch": "torch" in sys.modules}))
"""


def _fresh_cli(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _FRESH, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _pool(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_bad_source_and_device_fail_before_torch_is_imported(tmp_path):
    store = str(tmp_path / "store")
    got = _fresh_cli("embed", str(tmp_path / "nonexist"), "--store", store)
    assert got["code"] == 2 and "no such folder" in got["out"] and len(got["out"].strip().splitlines()) == 1
    assert got["torch"] is False
    _pool(tmp_path / "pool")
    got = _fresh_cli("embed", str(tmp_path / "pool"), "--device", "tpu", "--store", store)
    assert got["code"] == 2 and "tpu" in got["out"] and "--device" in got["out"]
    assert len(got["out"].strip().splitlines()) == 1
    assert got["torch"] is False
    assert not (tmp_path / "store").exists()  # nothing was opened or created


def test_names_that_are_not_utf8_or_hold_markup_and_escapes(tmp_path, monkeypatch):
    import hashlib
    import os

    from typer.testing import CliRunner

    from curate.cli import app
    from curate.store import open_store

    monkeypatch.chdir(tmp_path)
    pool = tmp_path / "pool"
    _pool(pool, 1)  # 0.png
    good = Image.fromarray(np.full((20, 20, 3), 7, np.uint8))
    raw_good = os.path.join(os.fsencode(pool), b"bad\xff.png")  # a valid image under a non-UTF-8 name
    with open(raw_good, "wb") as f:
        good.save(f, format="PNG")
    with open(os.path.join(os.fsencode(pool), b"worse\xfe.png"), "wb") as f:  # corrupt, non-UTF-8 name
        f.write(b"not an image")
    hostile = "a[bold]x[red]\x1b[31mred.png"  # rich markup and an ANSI escape
    (pool / hostile).write_bytes(b"not an image either")
    store = tmp_path / "st[bold]\x1b[2J"
    args = ["--model", "pixels", "--store", str(store), "--workers", "1", "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(app, ["embed", str(pool), *args])
    assert res.exit_code == 0, res.output
    assert "2 embedded, 0 skipped (already stored), 2 failed of 4 images" in res.output

    s = open_store(str(store))
    payloads = s.payloads("pool")
    bad = next(p for p in payloads.values() if p["relpath"] == "bad\\xff.png")
    with open(raw_good, "rb") as f:  # the file read was the one with exactly these bytes in its name
        assert bad["sha256"] == hashlib.sha256(f.read()).hexdigest() and "failed" not in bad
    assert s.count_vectors("pool", "pixels16") == 2
    s.close()

    from curate.cli.common import console

    monkeypatch.setattr(console, "width", 300)  # no folding: whole names on one line
    res = CliRunner().invoke(app, ["errors", "--store", str(store)])
    assert res.exit_code == 0
    assert "\x1b" not in res.output
    assert "a[bold]x[red]\\x1b[31mred.png" in res.output and "worse\\xfe.png" in res.output
    res = CliRunner().invoke(app, ["info", "--store", str(store)])
    assert "\x1b" not in res.output and "st[bold]\\x1b[2J" in res.output
    res = CliRunner().invoke(app, ["embed", str(pool / "missing[red]\x1b[0m"), *args])
    assert res.exit_code == 2 and "\x1b" not in res.output and "missing[red]\\x1b[0m" in res.output
    # a re-run finds the same ids: nothing is embedded twice
    res = CliRunner().invoke(app, ["embed", str(pool), *args])
    assert "0 embedded, 2 skipped (already stored), 2 failed of 4 images" in res.output
    s = open_store(str(store))
    assert s.count("pool") == 4
    s.close()


def test_same_files_under_other_ids_warn_once_with_count_and_root(tmp_path):
    import polars as pl
    from typer.testing import CliRunner

    from curate.cli import app

    pool = tmp_path / "pool"
    _pool(pool, 5)
    args = ["--model", "pixels", "--store", str(tmp_path / "store"), "--workers", "0", "--device", "cpu", "--quiet"]
    assert CliRunner().invoke(app, ["embed", str(pool), *args]).exit_code == 0
    # the same five files again, through a manifest of absolute paths kept elsewhere (+ one new file)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(pool / "new.png")
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "m.csv"
    pl.DataFrame({"path": [str(pool / f"{i}.png") for i in range(5)] + [str(pool / "new.png")]}).write_csv(manifest)
    res = CliRunner().invoke(app, ["embed", str(manifest), *args])
    assert res.exit_code == 0, res.output
    assert res.output.count("warning:") == 1
    assert "warning: 5 image(s) of this run are byte-identical (sha256) to images already stored" in res.output
    assert f"re-run with --root {pool} so ids match" in res.output
    # with --root, a manifest's files get the stored ids: nothing is added twice, no warning
    pl.read_csv(manifest).head(5).write_csv(tmp_path / "lists" / "five.csv")
    res = CliRunner().invoke(app, ["embed", str(tmp_path / "lists" / "five.csv"), "--root", str(pool), *args])
    assert "0 embedded, 5 skipped" in res.output and "warning" not in res.output
