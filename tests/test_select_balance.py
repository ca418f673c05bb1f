"""Balance quotas: exact when feasible, reported and redistributed when not, never silently missed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from curate.select.balance import (
    BalanceError,
    check_keys,
    largest_remainder,
    modes_of,
    plan_quotas,
    read_target,
)
from curate.select.kcenter import kcenter_select
from curate.select.typicality import typiclust_select


def _modes(values: list[str]) -> list[tuple[str, ...]]:
    return [(v,) for v in values]


def test_uniform_over_present_modes_with_largest_remainder() -> None:
    modes = _modes(["a"] * 20 + ["b"] * 20 + ["c"] * 20)
    plan = plan_quotas(modes, np.ones(60, bool), 10, ["w"])
    assert plan.quotas.tolist() == [4, 3, 3]  # 3.33 each; the tie goes to the first mode
    assert plan.messages == []


def test_fraction_and_count_targets_are_exact() -> None:
    modes = _modes(["sun"] * 50 + ["rain"] * 30 + ["snow"] * 20)
    plan = plan_quotas(modes, np.ones(100, bool), 20, ["weather"], {"sun": 0.5, "rain": 0.25, "snow": 0.25})
    got = {plan.name(g): int(q) for g, q in enumerate(plan.quotas)}
    assert got == {"rain": 5, "snow": 5, "sun": 10}
    plan = plan_quotas(modes, np.ones(100, bool), 12, ["weather"], {"sun": 2, "rain": 7, "snow": 3})
    assert {plan.name(g): int(q) for g, q in enumerate(plan.quotas)} == {"rain": 7, "snow": 3, "sun": 2}


def test_infeasible_quota_is_reported_and_redistributed_by_target_share() -> None:
    modes = _modes(["a"] * 3 + ["b"] * 50 + ["c"] * 50)
    plan = plan_quotas(modes, np.ones(103, bool), 30, ["k"], {"a": 0.5, "b": 0.3, "c": 0.2})
    q = dict(zip([m[0] for m in plan.modes], plan.quotas.tolist(), strict=True))
    assert q["a"] == 3 and q["a"] + q["b"] + q["c"] == 30
    assert (q["b"], q["c"]) == (9 + 7, 6 + 5)  # the 12 missing go 3:2 to b and c (7.2 / 4.8)
    assert any("a wanted 15, only 3 available" in m for m in plan.messages)
    assert any("redistributed" in m for m in plan.messages)


def test_modes_outside_the_table_and_zero_targets_get_nothing() -> None:
    modes = _modes(["a"] * 10 + ["b"] * 10 + ["fog"] * 10)
    plan = plan_quotas(modes, np.ones(30, bool), 12, ["k"], {"a": 1.0, "b": 0.0})
    q = dict(zip([m[0] for m in plan.modes], plan.quotas.tolist(), strict=True))
    assert q == {"a": 10, "b": 0, "fog": 0}
    assert (plan.groups[20:] == -1).all() and (plan.groups[10:20] == -1).all()
    assert any("not in the target (fog)" in m for m in plan.messages)
    assert any("cannot be filled" in m for m in plan.messages)


def test_joint_keys_make_cells() -> None:
    payloads = [{"w": w, "t": t} for w, t in itertools.product(["rain", "sun"], ["day", "night"])] * 5
    modes = modes_of(payloads, ["w", "t"])
    plan = plan_quotas(modes, np.ones(20, bool), 8, ["w", "t"])
    assert plan.quotas.tolist() == [2, 2, 2, 2]
    assert plan.name(0) == "w=rain, t=day"
    table = [{"w": "rain", "t": "night", "count": 5}, {"w": "sun", "t": "day", "count": 3}]
    plan = plan_quotas(modes, np.ones(20, bool), 8, ["w", "t"], table)
    assert {plan.name(g): int(q) for g, q in enumerate(plan.quotas) if q} == {
        "w=rain, t=night": 5, "w=sun, t=day": 3}


def test_missing_values_are_their_own_mode_and_unknown_keys_fail() -> None:
    payloads = [{"w": "a"}, {"w": None}, {}, {"w": "a"}]
    assert modes_of(payloads, ["w"]) == [("a",), ("(missing)",), ("(missing)",), ("a",)]
    check_keys(payloads, ["w"])
    with pytest.raises(BalanceError, match="unknown metadata key 'weather'.*keys in the pool: w"):
        check_keys(payloads, ["weather"])


def test_bad_targets_fail_clearly(tmp_path) -> None:
    modes = _modes(["a", "b"] * 5)
    with pytest.raises(BalanceError, match="fractions sum to 0.9"):
        plan_quotas(modes, np.ones(10, bool), 4, ["k"], {"a": 0.5, "b": 0.4})
    with pytest.raises(BalanceError, match="counts sum to 5 but the budget is 4"):
        plan_quotas(modes, np.ones(10, bool), 4, ["k"], {"a": 3, "b": 2})
    with pytest.raises(BalanceError, match=">= 0"):
        read_target({"a": -1}, ["k"])
    f = tmp_path / "t.csv"
    f.write_text("k,fraction\na,0.75\nb,0.25\n")
    shares, unit = read_target(str(f), ["k"])
    assert unit == "fraction" and shares == {("a",): 0.75, ("b",): 0.25}


def test_random_plans_satisfy_the_quota_invariants() -> None:
    """Brute-force check of the plan's guarantees over many random pools and targets."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 6))
        counts = rng.integers(0, 15, m)
        modes = _modes([f"m{i}" for i in range(m) for _ in range(counts[i])])
        if not modes:
            continue
        n = len(modes)
        budget = int(rng.integers(1, n + 1))
        shares = rng.random(m) * (rng.random(m) < 0.8)
        if shares.sum() == 0:
            continue
        target = {f"m{i}": float(s / shares.sum()) for i, s in enumerate(shares)}
        plan = plan_quotas(modes, np.ones(n, bool), budget, ["k"], target)
        q = dict(zip([md[0] for md in plan.modes], plan.quotas.tolist(), strict=True))
        avail = {f"m{i}": int(counts[i]) for i in range(m)}
        want = dict(zip(target, largest_remainder(np.array(list(target.values())), budget).tolist(), strict=True))
        reachable = sum(avail[k] for k in target if target[k] > 0)
        assert sum(q.values()) == min(budget, reachable)
        for k in target:
            assert q[k] <= avail[k]
            assert q[k] >= min(want[k], avail[k])
            if target[k] == 0:
                assert q[k] == 0
        if all(want[k] <= avail[k] for k in target):
            assert q == want and plan.messages == []  # feasible: exactly the target
        else:
            assert plan.messages


def test_quotas_are_exact_in_kcenter_typicality_and_rank() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    values = rng.choice(["a", "b", "c", "d"], size=300, p=[0.6, 0.25, 0.1, 0.05])
    plan = plan_quotas(_modes(values.tolist()), np.ones(300, bool), 40, ["k"])
    assert plan.quotas.tolist() == [10, 10, 10, 10]
    got = kcenter_select(X, 40, groups=plan.groups, quotas=plan.quotas, device="cpu").indices
    assert np.bincount(plan.groups[got], minlength=4).tolist() == [10, 10, 10, 10]
    labels = rng.integers(0, 12, 300)
    got, _ = typiclust_select(labels, rng.random(300), 40, candidates=np.ones(300, bool),
                              centers=np.zeros(300, bool), groups=plan.groups, quotas=plan.quotas)
    assert np.bincount(plan.groups[got], minlength=4).tolist() == [10, 10, 10, 10]
