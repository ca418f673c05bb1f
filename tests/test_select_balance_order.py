"""Every prefix of a balanced manifest is as balanced as the quotas allow (issue 7, item 11)."""

from __future__ import annotations

import numpy as np
import polars as pl
from test_select_cli import _make_store, cli

from curate.select.balance import interleave


def _assert_prefixes_balanced(groups: list[str]) -> None:
    names, counts = np.unique(groups, return_counts=True)
    n = len(groups)
    seen = dict.fromkeys(names.tolist(), 0)
    for p, g in enumerate(groups, start=1):
        seen[g] += 1
        for name, q in zip(names.tolist(), counts.tolist(), strict=True):
            assert abs(seen[name] - q * p / n) < 1, (p, name, seen[name], q * p / n)


def test_interleave_keeps_group_order_and_balances_every_prefix() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        k = int(rng.integers(1, 12))
        sizes = rng.integers(1, 40, size=k) if trial % 2 else rng.geometric(0.15, size=k)
        labels = np.repeat([f"m{i:02d}" for i in range(k)], sizes)
        rng.shuffle(labels)
        perm = interleave(labels)
        assert sorted(perm.tolist()) == list(range(len(labels)))
        out = labels[perm]
        _assert_prefixes_balanced(out.tolist())
        for g in np.unique(labels):  # each mode keeps the strategy's own order
            rows = perm[out == g]
            assert (np.diff(rows) > 0).all()


def test_one_big_mode_and_many_small_ones() -> None:
    labels = ["big"] * 50 + [f"s{i}" for i in range(50)]  # the (taken+1)/quota rule alone runs 'big' ahead
    _assert_prefixes_balanced([labels[i] for i in interleave(labels)])


def test_balanced_manifest_prefixes(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    store, ids, X = _make_store(tmp_path)
    (tmp_path / "t.yaml").write_text("{sun: 15, rain: 10, snow: 5}\n")
    res = cli(store, "select", "-n", "30", "--strategy", "kcenter", "--balance-by", "weather",
              "--balance-target", "t.yaml", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    df = pl.read_csv(tmp_path / "curate-out" / "pool" / "round-1.csv")
    groups = df["group"].to_list()
    assert sorted(groups) == sorted(["sun"] * 15 + ["rain"] * 10 + ["snow"] * 5)
    _assert_prefixes_balanced(groups)
    assert df["rank"].to_list() == list(range(1, 31))
