"""What the dedup CLI tests share: embed a folder of images with `pixels`, run a command on that store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def embed_pixels(img_dir: Path, store: Path) -> None:
    res = runner.invoke(app, ["embed", str(img_dir), "--model", "pixels", "--workers", "0", "--store", str(store),
                              "-c", "pool", "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output


def run_on(store: Path, *args: str):  # noqa: ANN201
    """`curate ARGS` on collection "pool" of `store`, on the CPU."""
    return runner.invoke(app, [*args, "--store", str(store), "-c", "pool", "--device", "cpu"])
