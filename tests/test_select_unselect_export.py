"""`curate unselect` (undo a round, archive its manifest) and `curate export` (hand a round to a
labeling tool again: links, copies, Label Studio tasks, CVAT manifest), issue 8 section 3."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest
from test_select_cli import _err, _make_store, _payloads, cli, runner

import curate.select.rounds as rounds
from curate.cli import app
from curate.store import open_store


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store, ids, X = _make_store(tmp_path)
    return tmp_path, store


def _select(store, *args: str) -> None:  # noqa: ANN001
    res = cli(store, "select", "--strategy", "kcenter", "--device", "cpu", "--quiet", *args)
    assert res.exit_code == 0, res.output


def _tagged(store) -> dict[str, set[str]]:  # noqa: ANN001
    out: dict[str, set[str]] = {}
    for u, p in _payloads(store).items():
        if p.get("selection_name"):
            out.setdefault(p["selection_name"], set()).add(u)
    return out


def test_unselect_by_round_and_name_archives_and_never_reuses_numbers(env) -> None:
    tmp, store = env
    out = tmp / "curate-out" / "pool"
    _select(store, "-n", "10")
    _select(store, "-n", "5", "--name", "eval")
    first = set(pl.read_csv(out / "round-1.csv")["id"].to_list())
    res = cli(store, "unselect", "--round", "1")
    assert res.exit_code == 0 and "unselected round 'round-1': 10 image(s) untagged" in res.output, res.output
    assert set(_tagged(store)) == {"eval"}
    assert sorted(p.name for p in (out / "archive").iterdir()) == ["round-1.csv", "round-1.parquet"]
    assert not (out / "round-1.csv").exists()
    assert set(pl.read_csv(out / "archive" / "round-1.csv")["id"].to_list()) == first
    _select(store, "-n", "10")  # round numbers are never reused: this is round 3
    assert (out / "round-3.csv").exists() and set(_tagged(store)) == {"eval", "round-3"}
    assert first & _tagged(store)["round-3"]  # the undone round's images were selectable again
    res = cli(store, "unselect", "--name", "eval")
    assert res.exit_code == 0, res.output
    assert set(_tagged(store)) == {"round-3"} and (out / "archive" / "eval.csv").exists()
    assert "no selection round '9' in 'pool'; rounds: 3 'round-3' (10 images)" in _err(
        cli(store, "unselect", "--round", "9"))
    assert "give --round N or --name NAME" in _err(cli(store, "unselect"))


def test_interrupted_unselect_is_finished_by_the_next_command(env, monkeypatch) -> None:
    tmp, store = env
    _select(store, "-n", "6")

    def crash(stage: str) -> None:
        if stage == "unselect":
            raise KeyboardInterrupt

    with monkeypatch.context() as m, open_store(str(store)) as st, pytest.raises(KeyboardInterrupt):
        m.setattr(rounds, "pause_point", crash)
        rounds.unselect_round(st, "pool", 1, "curate-out")
    with open_store(str(store)) as st:
        assert rounds.pending_round(st, "pool")["kind"] == "unselect"
    assert (tmp / "curate-out" / "pool" / "round-1.csv").exists()  # tags gone, manifest not yet archived
    res = cli(store, "select", "-n", "3", "--strategy", "random", "--dry-run", "--device", "cpu", "--quiet")
    assert res.exit_code == 0
    res = cli(store, "export", "1", "--to", "x")  # the next writing command finishes the unselect first
    assert "finished the interrupted unselect of round 'round-1'" in res.output
    assert "no selection round '1'" in res.output
    assert (tmp / "curate-out" / "pool" / "archive" / "round-1.csv").exists() and not _tagged(store)


def test_export_modes(env) -> None:
    tmp, store = env
    _select(store, "-n", "8", "--name", "batch-a")
    man = pl.read_parquet(tmp / "curate-out" / "pool" / "batch-a.parquet")
    with open_store(str(store)) as st:
        pay = st.payloads("pool", fields=["width"])
        st.set_payloads("pool", {u: {"height": 2 * p["width"]} for u, p in pay.items()})
        st.flush()

    res = cli(store, "export", "batch-a", "--to", "links")
    assert res.exit_code == 0 and "exported round 'batch-a': 8 image(s) as symlink" in res.output, res.output
    links = sorted((tmp / "links").iterdir())
    assert [os.path.realpath(p) for p in links] == [os.path.realpath(p) for p in man["path"].to_list()]
    res = cli(store, "export", "1", "--to", "copies", "--mode", "copy")  # by round number
    assert res.exit_code == 0, res.output
    assert all(p.is_file() and not p.is_symlink() for p in (tmp / "copies").iterdir())

    res = cli(store, "export", "batch-a", "--to", "ls", "--mode", "labelstudio", "--url-prefix",
              "/data/local-files/?d=")
    assert res.exit_code == 0, res.output
    tasks = json.loads((tmp / "ls" / "batch-a.labelstudio.json").read_text())
    assert [t["data"]["curate_id"] for t in tasks] == man["id"].to_list()
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=" + p.lstrip("/") for p in man["path"]]
    assert [t["data"]["distance"] for t in tasks] == pytest.approx(man["distance"].to_list())
    assert tasks[0]["data"]["rank"] == 1 and tasks[0]["data"]["round"] == 1

    res = cli(store, "export", "batch-a", "--to", "cv", "--mode", "cvat")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp / "cv" / "manifest.jsonl").read_text().splitlines()]
    assert lines[:2] == [{"version": "1.1"}, {"type": "images"}]
    files = sorted(p.name for p in (tmp / "cv").iterdir() if p.name != "manifest.jsonl")
    assert [x["name"] + x["extension"] for x in lines[2:]] == files
    assert [x["meta"]["curate_id"] for x in lines[2:]] == man["id"].to_list()
    assert all(x["height"] == 2 * x["width"] == 2 * pay[x["meta"]["curate_id"]]["width"] for x in lines[2:])

    (tmp / "curate-out" / "pool" / "batch-a.parquet").unlink()  # the CSV manifest is enough
    res = cli(store, "export", "batch-a", "--to", "ls2", "--mode", "labelstudio")
    tasks = json.loads((tmp / "ls2" / "batch-a.labelstudio.json").read_text())
    assert [t["data"]["distance"] for t in tasks] == pytest.approx(man["distance"].to_list())
    (tmp / "curate-out" / "pool" / "batch-a.csv").unlink()  # no manifest: tags decide, id order
    res = cli(store, "export", "batch-a", "--to", "l3")
    assert res.exit_code == 0 and "no manifest of round 'batch-a' matches its tags" in res.output
    assert len(list((tmp / "l3").iterdir())) == 8
    assert "--mode must be one of symlink, copy, labelstudio, cvat" in _err(
        cli(store, "export", "1", "--to", "z", "--mode", "yolo"))


@pytest.mark.parametrize("cmd", ["unselect", "export"])
def test_help_has_an_example(cmd) -> None:
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0 and "Example: curate " + cmd in res.output
