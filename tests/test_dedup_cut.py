"""The data-derived default cut, the 20% guard and what dedup_keep.csv lists."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curate.dedup import TooManyDuplicates, derive_cut, run_dedup
from curate.dedup.cut import CENTERED_FLOOR, FLOOR, RELATIVE, nice_edges
from curate.store import open_store


def test_derive_cut_relative_to_median_with_floor() -> None:
    sims = np.array([0.97, 0.98, 0.99, 0.96, 0.975])
    c = derive_cut(sims, "timm")
    assert c.median_nn == pytest.approx(0.975)
    assert c.cut == pytest.approx(np.floor((1 - RELATIVE * 0.025) * 1e4) / 1e4)
    assert c.share_above == pytest.approx(float((sims >= c.cut).mean()))
    loose = derive_cut(np.array([0.3, 0.4, 0.5]), "timm")
    assert loose.cut == FLOOR and "floor" in loose.reasoning()[-1]
    assert derive_cut(np.array([0.3, 0.4]), "pixels").cut == 0.99
    assert derive_cut(np.array([-0.9, -0.8]), "timm", centered=True).cut == CENTERED_FLOOR


@pytest.mark.parametrize(("lo", "hi"), [(0.97, 0.999), (0.2, 1.0), (0.9990, 0.9998)])
def test_histogram_edges_follow_the_data(lo: float, hi: float) -> None:
    v = np.random.default_rng(0).uniform(lo, hi, 500)
    edges, dec = nice_edges(v, bins=20)
    assert edges[0] <= np.percentile(v, 1) and edges[-1] >= v.max()
    assert 10 <= len(edges) - 1 <= 21  # about the bins asked for, over the data's range only
    labels = {f"{e:.{dec}f}" for e in edges}
    assert len(labels) == len(edges)  # printed edges are distinct at the chosen precision
    assert edges[-1] - edges[0] <= 3 * (hi - lo) + 1e-3


def _store(n_spread: int, n_tight: int, seed: int = 0):  # noqa: ANN202
    """n_spread random images and n_tight images all at cosine ~0.995 of one another."""
    rng = np.random.default_rng(seed)
    d = 16
    x = rng.standard_normal((n_spread + n_tight, d)).astype(np.float32)
    x[n_spread:] = x[0] + 0.02 * rng.standard_normal((n_tight, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"{k:08d}-0000-0000-0000-000000000000" for k in range(len(x) + 1)]
    payloads = [{"path": f"/p/{k}.png", "relpath": f"{k}.png", "sha256": f"h{k}"} for k in range(len(x))]
    payloads.append({"path": "/p/broken.png", "relpath": "broken.png", "sha256": "hb", "failed": True})
    st = open_store(url=":memory:")
    st.ensure_collection("c")
    st.ensure_encoder("c", "enc", {"family": "test", "dim": d})
    st.upsert_points("c", ids, payloads)
    st.upsert_vectors("c", "enc", ids[:-1], x)
    return st, ids


def test_keep_csv_leaves_out_failed_images(tmp_path) -> None:
    st, ids = _store(60, 3)
    try:
        res = run_dedup(st, "c", "enc", tmp_path, threshold=0.98, device="cpu")
        keep = pl.read_csv(tmp_path / "dedup_keep.csv")
        assert ids[-1] not in set(keep["id"])  # failed to embed: not a keeper
        assert len(keep) == len(ids) - 1 - res.n_removed
    finally:
        st.close()


def test_guard_stops_a_run_that_flags_too_much(tmp_path) -> None:
    st, _ = _store(20, 30)  # 29 of 51 would go at a loose cut
    try:
        with pytest.raises(TooManyDuplicates, match="nothing written") as e:
            run_dedup(st, "c", "enc", tmp_path, threshold=0.3, device="cpu")
        assert e.value.result.near_share > 0.2 and e.value.cut.cut > 0.3
        assert not list(tmp_path.iterdir())
        tags = st.payloads("c", None, ["is_duplicate"])
        assert not any(p.get("is_duplicate") for p in tags.values())
        res = run_dedup(st, "c", "enc", tmp_path, threshold=0.3, device="cpu", force=True)
        assert res.near_share > 0.2 and (tmp_path / "dedup_keep.csv").exists()
    finally:
        st.close()


def test_default_cut_comes_from_the_pool(tmp_path) -> None:
    st, ids = _store(200, 4)
    try:
        res = run_dedup(st, "c", "enc", None, device="cpu", write_tags=False)
        assert res.cut is not None and res.threshold == res.cut.cut
        want = max(FLOOR, 1 - RELATIVE * (1 - res.cut.median_nn))
        assert want - 1e-4 <= res.cut.cut <= want
        # the 4 tight copies and the image they were made from are one group, nothing else
        assert set(res.table["id"]) == {ids[k] for k in (0, 200, 201, 202, 203)}
    finally:
        st.close()
