"""Regression: a later round where one mode has no candidates left (all picked earlier)."""

from __future__ import annotations

import numpy as np

from curate.select.balance import plan_quotas


def test_mode_without_candidates_left():
    modes = [("a",)] * 6 + [("b",)] * 6 + [("c",)] * 2
    cand = np.array([True] * 12 + [False] * 2)  # both 'c' rows were picked in round 1
    plan = plan_quotas(modes, cand, budget=4, keys=["source"])
    got = {m: int(q) for m, q in zip(plan.modes, plan.quotas, strict=True)}
    assert got == {("a",): 2, ("b",): 2, ("c",): 0}
    assert plan.available.tolist() == [6, 6, 0]
