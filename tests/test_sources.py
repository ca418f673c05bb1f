from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from PIL import Image

from curate.sources import SourceError, discover, point_id


def _img(path, color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


@pytest.fixture
def pool(tmp_path):
    root = tmp_path / "pool"
    for rel in ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp", "d.bmp", "e.tiff", "f.gif", "ünï cødé.png"]:
        _img(root / rel)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "dir.jpg").mkdir()  # a folder named like an image is not an image
    (root / "broken.jpg").symlink_to(root / "missing.jpg")
    return root


def test_folder_recursive_sorted_with_stable_ids(pool):
    p = discover(pool)
    rels = p.table["relpath"].to_list()
    assert rels == sorted(
        ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp", "d.bmp", "e.tiff", "f.gif", "ünï cødé.png", "broken.jpg"]
    )
    assert p.table["id"].to_list() == [point_id(r) for r in rels]
    assert all(path.startswith(str(pool)) for path in p.table["path"])


def test_ids_survive_moving_the_pool(pool, tmp_path):
    before = discover(pool).table.select("relpath", "id")
    moved = tmp_path / "elsewhere" / "pool"
    shutil.copytree(pool, moved, symlinks=True)
    after = discover(moved).table.select("relpath", "id")
    assert before.equals(after)


def test_glob_root_is_fixed_prefix(pool):
    p = discover(str(pool / "sub" / "**" / "*.*"))
    assert p.root == (pool / "sub").resolve()
    assert p.table["relpath"].to_list() == ["b.PNG", "deeper/c.webp"]
    # same file, same relpath as seen from the same root -> same id
    assert discover(str(pool / "**" / "*.gif")).table["id"].to_list() == [point_id("f.gif")]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_metadata_columns(pool, fmt):
    df = pl.DataFrame({"path": ["a.jpg", str(pool / "d.bmp"), "sub/b.PNG"], "weather": ["rain", "sun", "rain"],
                       "label": [1, 2, 3]})
    man = pool / f"manifest.{fmt}"
    if fmt == "csv":
        df.write_csv(man)
    elif fmt == "parquet":
        df.write_parquet(man)
    else:
        man.write_text("\n".join(json.dumps(r) for r in df.to_dicts()))
    p = discover(man)
    assert p.metadata_columns == ["weather", "label"]
    got = {r["relpath"]: (r["weather"], r["label"]) for r in p.table.to_dicts()}
    assert got == {"a.jpg": ("rain", 1), "d.bmp": ("sun", 2), "sub/b.PNG": ("rain", 3)}
    # the manifest's folder is the root, so ids equal the folder scan's ids
    folder_ids = dict(zip(*discover(pool).table.select("relpath", "id").to_dict(as_series=False).values(),
                          strict=True))
    assert all(folder_ids[r["relpath"]] == r["id"] for r in p.table.to_dicts())


def test_manifest_errors(pool):
    bad = pool / "bad.csv"
    bad.write_text("file,label\na.jpg,1\n")
    with pytest.raises(SourceError, match="no 'path' column"):
        discover(bad)
    clash = pool / "clash.csv"
    clash.write_text("path,width\na.jpg,1\n")
    got = discover(clash)  # curate's own field names are kept apart: renamed, not refused
    assert got.renamed == {"width": "meta_width"} and got.table["meta_width"].to_list() == [1]
    dup = pool / "dup.csv"
    dup.write_text("path\na.jpg\na.jpg\n")
    with pytest.raises(SourceError, match="same image more than once"):
        discover(dup)


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found"):
        discover(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="not a folder, glob or manifest"):
        discover(tmp_path / "x.txt")
