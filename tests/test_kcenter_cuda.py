"""k-center's CUDA-graph streaming loop (`kcenter._stream_graph`) against the same steps launched one
by one: identical picks and distances, with weights, candidates, quotas, initial centers and a
distance stop. Needs a GPU (skipped elsewhere; run on a lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.select import kcenter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _both(monkeypatch: pytest.MonkeyPatch, *args, **kw) -> tuple[kcenter.KCenterResult, kcenter.KCenterResult]:
    graph = kcenter.kcenter_select(*args, device="cuda", lazy=False, **kw)
    with monkeypatch.context() as m:
        m.setattr(kcenter, "GRAPH_MIN_BUDGET", 10**9)  # the eager loop
        eager = kcenter.kcenter_select(*args, device="cuda", lazy=False, **kw)
    return graph, eager


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_loop_picks_what_the_eager_loop_picks(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((20_000, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    graph, eager = _both(monkeypatch, X, 600)
    np.testing.assert_array_equal(graph.indices, eager.indices)
    np.testing.assert_array_equal(graph.distances, eager.distances)
    assert len(set(graph.indices.tolist())) == 600

    n = len(X)
    w = rng.random(n) + 0.1
    cand = rng.random(n) > 0.2
    groups = rng.integers(-1, 4, n)
    quotas = [50, 100, 400, 400]
    init = rng.choice(n, 30, replace=False)
    graph, eager = _both(monkeypatch, X, 700, init, weights=w, candidates=cand, groups=groups, quotas=quotas)
    np.testing.assert_array_equal(graph.indices, eager.indices)
    np.testing.assert_array_equal(graph.distances, eager.distances)
    assert graph.stopped == eager.stopped
    assert np.all(np.bincount(groups[graph.indices], minlength=4) <= quotas)

    # a distance stop inside the run (and past a 256-pick check)
    graph, eager = _both(monkeypatch, X[:3000], 2000, min_distance=1.2)
    np.testing.assert_array_equal(graph.indices, eager.indices)
    assert graph.stopped == eager.stopped == "min_distance" and 32 < len(graph.indices) < 2000
