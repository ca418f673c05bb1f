"""`curate meta` and the `folder` field (issue 7, item 8): metadata reaches images already embedded."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.store import open_store

runner = CliRunner()
CLASSES = {"cat": 9, "dog": 4, "bird": 3}


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _class_pool(folder):
    rng = np.random.default_rng(5)
    for cls, n in CLASSES.items():
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "top.png")


def _embed(source, store):
    res = _run("embed", str(source), "--model", "pixels", "--store", store, "--workers", "0", "--quiet",
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    return res


def test_balance_by_folder_on_a_plain_class_folder_pool(tmp_path):
    _class_pool(tmp_path / "pool")
    store = str(tmp_path / "store")
    _embed(tmp_path / "pool", store)
    with open_store(store) as st:
        folders = sorted(p["folder"] for p in st.payloads("pool").values())
    assert folders == sorted(["bird"] * 3 + ["cat"] * 9 + ["dog"] * 4 + ["."])
    res = _run("select", "--budget", "6", "--balance-by", "folder", "--where", "folder != '.'", "--store", store,
               "--out", str(tmp_path / "r.csv"))
    assert res.exit_code == 0, res.output
    picked = pl.read_csv(tmp_path / "r.csv")
    folders = sorted(p.split("/")[-2] for p in picked["path"])
    assert folders == ["bird", "bird", "cat", "cat", "dog", "dog"] and sorted(picked["group"]) == folders


def test_meta_merges_manifest_columns_into_embedded_images(tmp_path):
    _class_pool(tmp_path / "pool")
    store = str(tmp_path / "store")
    _embed(tmp_path / "pool", store)
    # an older store: drop `folder` and tag a few images, as analyses would
    with open_store(store) as st:
        st.delete_payload_keys("pool", ["folder"])
        by_rel = {p["relpath"]: pid for pid, p in st.payloads("pool").items()}
        st.set_payload("pool", [by_rel["cat/0.png"]], {"labeled": True})
        n_vectors = st.count_vectors("pool", "pixels16")
    rels = sorted(r for r in by_rel if r != "top.png")
    man = tmp_path / "pool" / "labels.csv"
    pl.DataFrame({
        "path": [*rels, "cat/missing.png", "nowhere.png"],
        "class": [r.split("/")[0] for r in rels] + ["cat", "x"],
        "labeled": ["yes"] * (len(rels) + 2),  # a user column named like curate's tag: renamed
    }).write_csv(man)
    # re-embedding a manifest does not update stored images, and says how to
    man_ok = tmp_path / "pool" / "ok.csv"
    pl.read_csv(man).head(len(rels)).write_csv(man_ok)
    res = _run("embed", str(man_ok), "--model", "pixels", "--store", store, "--workers", "0", "-q", "--device", "cpu")
    assert "0 embedded, 16 skipped" in res.output and f"curate meta {man_ok} -c pool" in res.output
    res = _run("meta", str(man), "--store", store)
    assert res.exit_code == 0, res.output
    assert f"merged field(s) class, meta_labeled, folder into {len(rels)} image(s) of 'pool'" in res.output
    assert "2 row(s) matched no stored image" in res.output and "labeled -> meta_labeled" in res.output
    with open_store(store) as st:
        pay = st.payloads("pool")
        assert st.count_vectors("pool", "pixels16") == n_vectors  # no re-embedding
    for p in pay.values():
        if p["relpath"] == "top.png":
            assert "class" not in p and "folder" not in p
            continue
        assert p["class"] == p["folder"] == p["relpath"].split("/")[0]
        assert p["meta_labeled"] == "yes"
        assert p.get("labeled") is (True if p["relpath"] == "cat/0.png" else None)  # tags kept
    # idempotent: a re-run (e.g. after a kill) gives the same payload
    assert _run("meta", str(man), "--store", store).exit_code == 0
    with open_store(store) as st:
        assert st.payloads("pool") == pay
    # the folder itself re-scanned sets `folder` everywhere (no manifest needed)
    res = _run("meta", str(tmp_path / "pool"), "--store", store)
    assert res.exit_code == 0 and "merged field(s) folder into 17 image(s)" in res.output
    with open_store(store) as st:
        assert st.payloads("pool")[by_rel["top.png"]]["folder"] == "."


def test_meta_by_id_and_from_a_manifest_elsewhere(tmp_path):
    _class_pool(tmp_path / "pool")
    store = str(tmp_path / "store")
    _embed(tmp_path / "pool", store)
    with open_store(store) as st:
        pay = st.payloads("pool")
    ids = sorted(pay)[:5]
    pl.DataFrame({"id": ids, "reviewer": ["ann"] * 5}).write_csv(tmp_path / "by_id.csv")
    res = _run("meta", str(tmp_path / "by_id.csv"), "--key", "id", "--store", store)
    assert res.exit_code == 0 and "merged field(s) reviewer, folder into 5 image(s)" in res.output
    # absolute paths in a manifest stored in another folder: ids differ, the stored path matches
    other = tmp_path / "elsewhere"
    other.mkdir()
    paths = sorted(p["path"] for p in pay.values())
    pl.DataFrame({"path": paths, "score": list(range(len(paths)))}).write_csv(other / "m.csv")
    res = _run("meta", str(other / "m.csv"), "--store", store)
    assert res.exit_code == 0 and f"into {len(paths)} image(s)" in res.output and "no stored" not in res.output
    with open_store(store) as st:
        got = st.payloads("pool")
    assert sorted(p["score"] for p in got.values()) == list(range(len(paths)))
    assert sum(p.get("reviewer") == "ann" for p in got.values()) == 5
    # nothing matched: a one-line error, exit 1
    pl.DataFrame({"id": ["00000000-0000-0000-0000-000000000000"], "x": [1]}).write_csv(tmp_path / "none.csv")
    res = _run("meta", str(tmp_path / "none.csv"), "--key", "id", "--store", store)
    assert res.exit_code == 1 and res.output.startswith("error:") and "matched an image" in res.output
    res = _run("meta", str(tmp_path / "none.csv"), "--key", "name", "--store", store)
    assert res.exit_code == 2 and "--key 'name'" in res.output
