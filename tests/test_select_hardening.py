"""Hostile input to `curate select` (issue 7, items 14 and 15): names that are paths, very long file
names in exports, wrong types in a selection config, bad --min-distance and --where values."""

from __future__ import annotations

import os

import polars as pl
import pytest
from test_select_cli import _err, _make_store, _payloads, cli

from curate.select.config import ConfigError, from_mapping
from curate.select.export import export_files, link_name
from curate.store import parse_where


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    store, ids, X = _make_store(work)
    return work, store


@pytest.mark.parametrize("extra", [[], ["--out", "outdir"]])
@pytest.mark.parametrize("name", ["../../x", "..", "a/b", ".hidden", "a\\b", "round-7"])
def test_name_never_writes_outside_the_output_folder(env, extra, name) -> None:
    work, store = env
    msg = _err(cli(store, "select", "-n", "3", "--strategy", "random", "--name", name, *extra))
    assert "--name" in msg
    assert not (work.parent.parent / "x.csv").exists() and not (work / "curate-out").exists()
    assert not any(p.get("selected_round") for p in _payloads(store).values())


def test_long_and_non_utf8_names_export(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    names = ["a" * 246 + "1.jpg", "a" * 246 + "2.jpg", "x" + "é" * 124 + ".png", "short.jpg"]
    paths = []
    for n in names:
        (src / n).write_bytes(b"x")
        paths.append(str(src / n))
    raw = os.fsencode(src) + b"/" + b"\xff" * 200 + b".jpg"  # not UTF-8
    open(raw, "wb").close()
    paths.append(os.fsdecode(raw))
    dest = tmp_path / "out"
    done, missing = export_files({"rank": [1, 2, 3, 4, 5], "path": paths}, dest)
    assert (done, missing) == (5, 0)
    got = sorted(os.listdir(dest))
    assert len(got) == 5 and all(len(os.fsencode(n)) <= 255 for n in got)
    assert [n[:6] for n in got] == ["00001_", "00002_", "00003_", "00004_", "00005_"]
    assert got[0].endswith("~.jpg") and got[2].endswith("~.png") and got[3] == "00004_short.jpg"
    assert got[2].encode("utf-8")  # the cut kept whole characters
    for n, p in zip(got, paths, strict=True):
        assert os.path.samefile(dest / n, p)
    assert link_name(12, 5, "b.jpg") == "00012_b.jpg"


@pytest.mark.parametrize(("data", "message"), [
    ({"budget": "abc"}, "budget must be a whole number, got 'abc'"),
    ({"budget": 2.7}, "budget must be a whole number, got 2.7"),
    ({"budget": True}, "budget must be a whole number, got True"),
    ({"budget": 5, "where": 5}, "where must be a string or a list of strings, got 5"),
    ({"fraction": True}, "fraction must be a number"),
    ({"budget": 5, "seed": "x"}, "seed must be a whole number"),
    ({"budget": 5, "include_duplicates": "yes"}, "include_duplicates must be true or false"),
    ({"budget": 5, "strategies": [{"type": "diversity", "min_distance": -1}]}, "min_distance must be between 0"),
    ({"budget": 5, "strategies": [{"type": "diversity", "min_distance": float("nan")}]},
     "min_distance must be a number"),
    ({"budget": 5, "strategies": [{"type": "weights", "input": "density", "strength": "2"}]},
     "strength must be a number"),
    ({"budget": 5, "strategies": [{"type": "balance", "keys": [1]}, {"type": "diversity"}]},
     "keys must be a string or a list of strings"),
])
def test_config_types_are_checked_not_coerced(data, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        from_mapping(data, "sel.yaml").validate()


def test_cli_one_line_errors_for_bad_values(env) -> None:
    work, store = env
    (work / "bad.yaml").write_text("budget: abc\n")
    assert "budget must be a whole number, got 'abc'" in _err(cli(store, "select", "--config", "bad.yaml"))
    for v in ("-1", "nan"):
        assert "min_distance must be between 0 and 2" in _err(
            cli(store, "select", "-n", "3", "--strategy", "kcenter", "--min-distance", v))
    assert "a list cannot hold null; to match a missing value write 'w missing'" in _err(
        cli(store, "select", "-n", "3", "--where", "w in [null]"))
    assert "takes a list of strings or of integers only" in _err(
        cli(store, "select", "-n", "3", "--where", "width in [1.5, 2]"))
    assert "is not valid JSON" in _err(cli(store, "select", "-n", "3", "--where", "width in [1,"))
    res = cli(store, "select", "-n", "3", "--strategy", "random", "--where", 'weather in ["sun"]', "--quiet")
    assert res.exit_code == 0, res.output
    picked = pl.read_csv(work / "curate-out" / "pool" / "round-1.csv")["id"].to_list()
    pay = _payloads(store)
    assert {pay[u]["weather"] for u in picked} == {"sun"}


def test_where_lists_parse() -> None:
    assert parse_where("label in [1, 2]")[0].value == [1, 2]
    assert parse_where('w not in ["a", "b"]')[0].value == ["a", "b"]
    with pytest.raises(ValueError, match="strings or of integers"):
        parse_where("w in [true]")


def test_failed_export_keeps_the_round_and_says_how_to_export_again(env) -> None:
    work, store = env
    (work / "file").write_text("not a folder")
    res = cli(store, "select", "-n", "4", "--strategy", "random", "--export-dir", str(work / "file" / "sub"))
    assert res.exit_code == 0, res.output
    assert "export to" in res.output and "curate export round-1 --to DIR" in res.output
    tagged = {u for u, p in _payloads(store).items() if p.get("selection_name") == "round-1"}
    assert tagged == set(pl.read_csv(work / "curate-out" / "pool" / "round-1.csv")["id"].to_list())
    res = cli(store, "export", "round-1", "--to", "ok")
    assert res.exit_code == 0 and len(list((work / "ok").iterdir())) == 4, res.output
