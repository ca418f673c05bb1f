"""End to end through the CLI: real image files embedded with the pixels encoder into an Edge store,
then `curate dedup`, `curate slice` and `curate leaks`, including their one-line errors."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_pool import embed_pixels
from cli_pool import run_on as _run
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, Path, dict[str, list[str]]]:
    """24 distinct smooth images plus planted copies: 3 byte copies, 3 JPEG re-encodes, 2 brighter."""
    root = tmp_path_factory.mktemp("pool")
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for k in range(24):
        f = rng.uniform(1, 4, size=3)
        ph = rng.uniform(0, 6.3, size=3)
        arr = np.stack([np.sin(f[c] * 6.3 * (xx * np.cos(ph[c]) + yy * np.sin(ph[c])) + ph[c]) for c in range(3)], -1)
        Image.fromarray(((arr + 1) * 127.5).astype(np.uint8)).save(img_dir / f"img{k:02d}.png")
    planted: dict[str, list[str]] = {"bytes": [], "jpeg": [], "bright": []}
    for k in range(3):
        shutil.copy(img_dir / f"img{k:02d}.png", img_dir / f"copy{k}.png")
        planted["bytes"].append(f"copy{k}.png")
        buf = io.BytesIO()
        Image.open(img_dir / f"img{k + 3:02d}.png").save(buf, "JPEG", quality=70)
        (img_dir / f"jpeg{k}.jpg").write_bytes(buf.getvalue())
        planted["jpeg"].append(f"jpeg{k}.jpg")
    for k in range(2):
        ImageEnhance.Brightness(Image.open(img_dir / f"img{k + 6:02d}.png")).enhance(1.05).save(
            img_dir / f"bright{k}.png"
        )
        planted["bright"].append(f"bright{k}.png")
    store = root / "store"
    embed_pixels(img_dir, store)
    return store, img_dir, planted


def test_dedup_end_to_end(embedded, tmp_path) -> None:
    store, img_dir, planted = embedded
    res = _run(store, "dedup", "--threshold", "0.98", "--out", str(tmp_path), "--keep", "first")
    assert res.exit_code == 0, res.output
    groups = pl.read_parquet(tmp_path / "dedup_groups.parquet")
    removed = pl.read_csv(tmp_path / "dedup_remove.csv")
    keep = pl.read_csv(tmp_path / "dedup_keep.csv")
    all_planted = sum(planted.values(), [])
    assert len(removed) == len(all_planted) and len(keep) == 24  # 32 files, 8 planted copies
    for k, name in enumerate(planted["bytes"]):
        g = groups.filter(pl.col("group") == groups.filter(pl.col("path").str.ends_with(name))["group"][0])
        assert {Path(p).name for p in g["path"]} == {name, f"img{k:02d}.png"}
        assert g.filter(~pl.col("kept"))["match"][0] == "exact"
    assert groups.group_by("group").len()["len"].to_list() == [2] * len(all_planted)
    # exact-only: just the byte copies
    res = _run(store, "dedup", "--exact-only", "--out", str(tmp_path / "exact"))
    assert res.exit_code == 0, res.output
    assert len(pl.read_csv(tmp_path / "exact" / "dedup_remove.csv")) == 3
    res = _run(store, "dedup", "--no-tags", "--verify", "off", "--out", str(tmp_path / "cut"))  # pixels: floor 0.99
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "derived from the pool" in text and "near >= 0.99" in text, res.output
    # the default verifies nearest-neighbour candidates on the image files: the 8 planted copies, nothing else
    res = _run(store, "dedup", "--no-tags", "--out", str(tmp_path / "default"))
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "near = verified on the images" in text and "5 same picture" in text, res.output
    assert len(pl.read_csv(tmp_path / "default" / "dedup_remove.csv")) == len(all_planted)
    res = _run(store, "dedup", "--suggest", "--threshold", "0.98")
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "nearest-neighbour cosine" in text and "--threshold" in text, res.output
    assert "suggested threshold" in text and "median nearest-neighbour cosine" in text


def test_dedup_stops_when_it_would_flag_most_of_the_pool(embedded, tmp_path) -> None:
    store, _, _ = embedded
    res = _run(store, "dedup", "--threshold", "0.2", "--out", str(tmp_path / "x"))
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "nothing written" in text and "--force" in text, res.output
    assert "nearest-neighbour cosine of" in text and "suggested threshold" in text
    assert not (tmp_path / "x").exists()
    res = _run(store, "dedup", "--threshold", "0.2", "--out", str(tmp_path / "x"), "--force", "--no-tags")
    assert res.exit_code == 0 and (tmp_path / "x" / "dedup_keep.csv").exists(), res.output


def test_slice_and_leaks_end_to_end(embedded, tmp_path) -> None:
    store, img_dir, _ = embedded
    res = _run(store, "slice", "look", "--example", str(img_dir / "img00.png"), "--top-k", "3", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    m = pl.read_csv(tmp_path / "slice_look.csv")
    assert len(m) == 3 and {Path(p).name for p in m["path"][:2]} == {"img00.png", "copy0.png"}
    res = _run(store, "leaks", "look", "where:relpath == img00.png", "--out", str(tmp_path), "-t", "0.99")
    assert res.exit_code == 0, res.output
    leaks = pl.read_csv(tmp_path / "leaks_look__where-relpath-img00-png.csv")
    assert set(Path(p).name for p in leaks["a_path"]) >= {"img00.png", "copy0.png"}
    assert leaks.filter(pl.col("exact")).height == 2  # img00 with itself and its byte copy


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dedup", "--threshold", "1.5"], "outside [-1, 1]"),
        (["dedup", "--encoder", "nope"], "unknown encoder"),
        (["dedup", "--keep", "biggest"], "--keep"),
        (["slice", "s", "--example", "img00.png", "--top-k", "3", "--encoder", "nope"], "unknown encoder"),
        (["slice", "s", "--example", "img00.png", "--threshold", "-3"], "outside [-1, 1]"),
        (["slice", "s", "--where", "relpath == none.png"], "empty"),
        (["slice", "s", "--text", "a cat", "--top-k", "3"], "no text tower"),
        (["leaks", "nope", "where:relpath == img00.png"], "unknown set"),
    ],
)
def test_one_line_errors(embedded, args, message) -> None:
    store, _, _ = embedded
    res = _run(store, *args)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # rich wraps long lines at the terminal width
    assert text.startswith("error:") and text.count("error:") == 1 and message in text, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("cmd", ["dedup", "slice", "leaks"])
def test_help_has_an_example(cmd) -> None:
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0 and "Example: curate " + cmd in res.output
