"""The embed-side commands through the real CLI: embed, info --json, errors, demo."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from make_bad_images import write_bad_images
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _pool(folder, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_embed_info_json_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "store")
    _pool(tmp_path / "pool")
    bad = write_bad_images(tmp_path / "pool" / "bad")
    n_bad = sum(kind != "ok" for kind in bad.values())
    n_ok = 12 + len(bad) - n_bad
    res = _run("embed", str(tmp_path / "pool"), "--model", "pixels", "--store", store, "-c", "street",
               "--workers", "0", "--quiet", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert f"{n_ok} embedded, 0 skipped (already stored), {n_bad} failed" in res.output

    info = json.loads(_run("info", "--json", "--store", store).output)
    col = info["collections"]["street"]
    assert col["points"] == n_ok + n_bad and col["failed"] == n_bad
    assert col["encoders"]["pixels16"]["count"] == n_ok and col["encoders"]["pixels16"]["dim"] == 768

    out = tmp_path / "errors.csv"
    res = _run("errors", "-c", "street", "--store", store, "--out", str(out))
    assert res.exit_code == 0
    res = _run("index", "-c", "street", "--store", store)
    assert res.exit_code == 0 and "indexed pixels16" in res.output
    table = pl.read_csv(out)
    assert sorted(table["relpath"].to_list()) == sorted(f"bad/{k}" for k, v in bad.items() if v != "ok")
    assert table["error"].null_count() == 0
    # the run also left the same list as Parquet under the (cwd-relative) output folder
    written = pl.read_parquet(tmp_path / "curate-out" / "street" / "errors.parquet")
    assert sorted(written["relpath"].to_list()) == sorted(table["relpath"].to_list())


def test_clear_one_line_errors(tmp_path):
    store = str(tmp_path / "store")
    res = runner.invoke(app, ["embed", str(tmp_path / "missing"), "--model", "pixels", "--store", store])
    assert res.exit_code == 2 and "no such folder" in res.output
    _pool(tmp_path / "pool", 2)
    res = runner.invoke(app, ["embed", str(tmp_path / "pool"), "--model", "ViT-B-32", "--pretrained",
                              "no_such_tag", "--store", store])
    assert res.exit_code == 2 and "--pretrained" in res.output
    res = runner.invoke(app, ["info", "-c", "nope", "--store", store])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["embed", str(tmp_path / "pool"), "--model", "pixels", "--store", store,
                              "--gpu-decode", "maybe"])
    assert res.exit_code == 2 and "--gpu-decode" in res.output


def test_every_command_has_help_with_example():
    top = _run("--help").output
    for cmd in ("embed", "info", "errors", "demo", "index", "select", "labeled", "dedup", "slice", "leaks"):
        assert cmd in top
        assert "Example" in _run(cmd, "--help").output, cmd


def test_demo_runs_offline_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run("demo", "--limit", "300", "--quiet")
    assert res.exit_code == 0, res.output
    assert "using the 'pixels' baseline encoder" in res.output
    manifest = pl.read_csv(tmp_path / "curate-demo" / "manifest.csv")
    assert manifest.height == 300 and set(manifest.columns) == {"path", "label", "source"}
    picks = pl.read_csv(tmp_path / "curate-demo" / "out" / "select-round-1.csv")
    assert picks.height == 100 and picks["id"].n_unique() == 100
    # each step's command is printed whole on one line (no panel cuts it), so it can be copied
    assert ("curate select --collection demo --store curate-demo/.curate --quiet --budget 100 --balance-by source "
            "--name demo-round-1 --out curate-demo/out/select-round-1.csv") in res.output.splitlines()
    assert (tmp_path / "curate-demo" / "out" / "dedup" / "dedup_groups.parquet").exists()
    report = tmp_path / "curate-demo" / "out" / "report.html"
    assert f"Report: {report.resolve()}" in res.output.splitlines()
    assert "demo-round-1" in report.read_text()  # the report shows the demo's selection
    info = json.loads(_run("info", "--json", "--store", str(tmp_path / "curate-demo" / ".curate")).output)
    assert info["collections"]["demo"]["points"] == 300
    # a second demo resumes: nothing is embedded again
    res = _run("demo", "--limit", "300", "--quiet")
    assert "0 embedded, 300 skipped" in res.output


def test_cli_help_does_not_import_torch():
    """`curate --help` must stay instant: command modules load torch only when a command runs."""
    import subprocess
    import sys

    code = "import sys, curate.cli; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
