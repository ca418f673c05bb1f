"""Selection rounds are all or nothing: `curate select` killed with SIGKILL at several moments, then
the next command finishes or rolls back the round so that its tags and its manifest agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from test_select_cli import _make_store, _payloads, cli, runner

import curate.select.rounds as rounds
from curate.cli import app
from curate.select.rounds import pending_round
from curate.store import open_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT",
                "CURATE_TEST_PAUSE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    store, ids, X = _make_store(tmp_path)
    return tmp_path, store, ids


def _killed_select(tmp: Path, store: Path, stage: str, *args: str) -> None:
    """Run `curate select` in a subprocess (5 ids per tagging call) and kill -9 it at `stage`."""
    marker = tmp / f"paused-{stage}"
    argv = ["curate", "select", "--store", str(store), "-c", "pool", "--device", "cpu", "--quiet", *args]
    code = ("import sys, curate.select.rounds as r; r.TAG_BATCH = 5; from curate.cli import main; "
            f"sys.argv = {argv!r}; main()")
    env = {**os.environ, "CURATE_TEST_PAUSE": f"{stage}:{marker}", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert marker.exists(), f"never reached {stage}: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _round_ids(store: Path, name: str) -> set[str]:
    return {u for u, p in _payloads(store).items() if p.get("selection_name") == name}


@pytest.mark.parametrize(("stage", "finished"), [("manifest", False), ("tag", True), ("export", True)])
def test_kill_9_during_a_round_is_finished_or_rolled_back(env, stage, finished) -> None:
    tmp, store, ids = env
    exp = tmp / "to_label"
    _killed_select(tmp, store, stage, "-n", "30", "--strategy", "random", "--export-dir", str(exp))
    csv, pq = tmp / "curate-out" / "pool" / "round-1.csv", tmp / "curate-out" / "pool" / "round-1.parquet"
    with open_store(str(store)) as st:
        pend = pending_round(st, "pool")
    assert pend is not None and len(pend["ids"]) == 30
    killed = set(pend["ids"])
    if stage == "tag":  # killed after the first tagging call: a partial round in the store
        assert len(_round_ids(store, "round-1")) == 5

    res = cli(store, "select", "-n", "10", "--strategy", "random", "--seed", "1", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    second = set(pl.read_csv(tmp / "curate-out" / "pool" / "round-2.csv")["id"].to_list()) if finished else \
        set(pl.read_csv(csv)["id"].to_list())
    with open_store(str(store)) as st:
        assert pending_round(st, "pool") is None
    if finished:
        assert "finished the interrupted selection round 'round-1'" in res.output
        assert _round_ids(store, "round-1") == killed == set(pl.read_csv(csv)["id"].to_list())
        assert set(pl.read_parquet(pq)["id"].to_list()) == killed
        assert not second & killed  # the next round never re-picks the killed round's images
        links = sorted(exp.iterdir())  # the export was redone in full
        assert len(links) == 30 and all(p.is_symlink() and p.resolve().is_file() for p in links)
    else:
        assert "rolled back the interrupted selection round 'round-1'" in res.output
        # round-1 is absent: the new round took its number and its manifest names only new picks
        assert _round_ids(store, "round-1") == second and len(second) == 10
        assert not any(p.name.endswith(".tmp") for p in (tmp / "curate-out" / "pool").iterdir())
        assert sum(p.get("selected_round") is not None for p in _payloads(store).values()) == 10


def test_labeled_and_dry_run_see_a_pending_round(env, monkeypatch) -> None:
    tmp, store, ids = env

    def crash(stage: str) -> None:  # in-process stand-in for a kill after the first tagging call
        if stage == "tag":
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(rounds, "TAG_BATCH", 5)
        m.setattr(rounds, "pause_point", crash)
        res = cli(store, "select", "-n", "20", "--strategy", "random", "--device", "cpu", "--quiet")
    assert res.exit_code != 0  # interrupted (click turns KeyboardInterrupt into an abort)
    assert len(_round_ids(store, "round-1")) == 5
    with open_store(str(store)) as st:
        killed = set(pending_round(st, "pool")["ids"])
    # a dry run writes nothing, but does not hand out the pending round's images again
    res = cli(store, "select", "-n", "90", "--strategy", "random", "--dry-run", "--device", "cpu", "--quiet")
    assert res.exit_code == 0 and "was interrupted" in res.output, res.output
    assert not set(pl.read_csv(tmp / "curate-out" / "pool" / "round-2.preview.csv")["id"].to_list()) & killed
    with open_store(str(store)) as st:
        assert pending_round(st, "pool") is not None
    (tmp / "l.txt").write_text("im050.jpg\n")
    res = cli(store, "labeled", "l.txt")
    assert res.exit_code == 0 and "finished the interrupted selection round" in res.output, res.output
    assert _round_ids(store, "round-1") == killed


def test_manifests_per_collection_and_dry_run_writes_a_preview_only(env) -> None:
    tmp, store, ids = env
    with open_store(str(store)) as st:  # a second collection with the same points
        st.ensure_collection("other")
        st.ensure_encoder("other", "enc", {"family": "test", "dim": 8})
        pay = st.payloads("pool")
        st.upsert_points("other", list(pay), list(pay.values()))
        keep, X = st.load_vectors("pool", "enc")
        st.upsert_vectors("other", "enc", keep, X)
        st.flush()
    args = ["select", "-n", "5", "--strategy", "random", "--device", "cpu", "--quiet", "--store", str(store)]
    res = runner.invoke(app, [*args, "-c", "pool", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = tmp / "curate-out"
    assert sorted(p.name for p in (out / "pool").iterdir()) == ["round-1.preview.csv", "round-1.preview.parquet"]
    preview = pl.read_csv(out / "pool" / "round-1.preview.csv")["id"].to_list()
    assert runner.invoke(app, [*args, "-c", "pool", "--seed", "3"]).exit_code == 0
    assert runner.invoke(app, [*args, "-c", "other", "--seed", "4"]).exit_code == 0
    first = pl.read_csv(out / "pool" / "round-1.csv")["id"].to_list()
    other = pl.read_csv(out / "other" / "round-1.csv")["id"].to_list()
    assert first != other  # two collections' round-1 no longer replace each other
    assert _round_ids(store, "round-1") == set(first)  # the dry run did not use up round 1
    assert pl.read_csv(out / "pool" / "round-1.preview.csv")["id"].to_list() == preview
