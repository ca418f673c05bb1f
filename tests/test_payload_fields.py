"""Manifest metadata never collides with curate's own payload fields (issue 7, item 6)."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.payload_fields import rename_reserved
from curate.sources import discover
from curate.store import open_store

runner = CliRunner()


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


def test_rename_reserved_picks_free_names():
    cols = ["labeled", "meta_labeled", "class", "slice_night", "dup_group", "id"]
    assert rename_reserved(cols) == {
        "labeled": "meta_meta_labeled", "slice_night": "meta_slice_night", "dup_group": "meta_dup_group",
        "id": "meta_id",
    }


def test_manifest_columns_named_like_curate_tags_are_renamed(tmp_path):
    names = _images(tmp_path / "pool", 8)
    man = tmp_path / "pool" / "m.csv"
    pl.DataFrame({
        "path": names, "labeled": [True] * 8, "is_duplicate": [True] * 8, "width": [999] * 8,
        "class": ["a", "b"] * 4,
    }).write_csv(man)
    pool = discover(man)
    assert pool.renamed == {"labeled": "meta_labeled", "is_duplicate": "meta_is_duplicate", "width": "meta_width"}
    store = str(tmp_path / "store")
    res = runner.invoke(app, ["embed", str(man), "--model", "pixels", "--store", store, "--workers", "0",
                              "--quiet", "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "labeled -> meta_labeled" in res.output and "8 embedded" in res.output
    with open_store(store) as st:
        pay = st.payloads("pool")
    assert len(pay) == 8
    for p in pay.values():
        assert "labeled" not in p and "is_duplicate" not in p
        assert p["meta_labeled"] is True and p["meta_is_duplicate"] is True and p["meta_width"] == 999
        assert p["width"] == 16 and p["class"] in ("a", "b")
    # the user's `labeled` column no longer hides rows from selection
    res = runner.invoke(app, ["select", "--budget", "8", "--store", store, "--out", str(tmp_path / "r.csv")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "r.csv").height == 8
