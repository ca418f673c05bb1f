"""Pools above --transform-max: points outside the fitted sample are placed by k-NN interpolation.

The placement equals a brute-force numpy reference; a tiny map with the threshold forced low runs
through the CLI and the report reads its coordinates; a fresh layout killed while writing leaves
no map (never a mix of old and new coordinates).
"""

from __future__ import annotations

import json
import re
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.cli.view_cmds import TRANSFORM_MAX as CLI_TRANSFORM_MAX
from curate.maps import TRANSFORM_MAX, MapSettings, interpolate_positions, load_map, map_pool, membership_weights
from curate.store import open_store

D, PER, K = 24, 60, 3
SETTINGS = MapSettings(n_neighbors=10, n_epochs=30, sample=120, pca_dims=8, chunk=25, transform_max=100)


def reference_weights(sims: np.ndarray) -> np.ndarray:
    """One row at a time: sigma by plain bisection so that sum(exp(-(d - d_min) / sigma)) = log2(k)."""
    out = []
    for row in sims.astype(np.float64):
        gap = (1 - row) - (1 - row).min()
        target = np.log2(max(len(row), 2))
        lo, hi = 0.0, 1.0
        while np.exp(-gap / hi).sum() <= target and hi < 1e30:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if np.exp(-gap / mid).sum() > target else (mid, hi)
        w = np.exp(-gap / hi)
        out.append(w / w.sum())
    return np.array(out)


def test_interpolated_positions_equal_a_brute_force_reference():
    rng = np.random.default_rng(0)
    anchors = rng.standard_normal((300, 12)).astype(np.float32)
    xy = rng.standard_normal((300, 2)).astype(np.float32) * 5
    queries = rng.standard_normal((57, 12)).astype(np.float32)
    k = 7
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ a.T.astype(np.float64)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    want = np.einsum("nk,nkd->nd", reference_weights(np.take_along_axis(sims, idx, 1)), xy[idx])
    got = interpolate_positions(anchors, xy, queries, k)
    assert got.shape == (57, 2) and got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-4)


def test_membership_weights_favour_the_nearest_and_sum_to_log2_k_before_normalizing():
    sims = np.array([[0.9, 0.8, 0.5, 0.1], [0.5, 0.5, 0.5, 0.5], [1.0, 0.2, 0.2, 0.2]], dtype=np.float32)
    w = membership_weights(sims)
    assert np.allclose(w.sum(1), 1) and np.all(np.diff(w[0]) < 0)
    assert np.allclose(w[1], 0.25)  # equal distances: a plain mean
    assert np.allclose(w, reference_weights(sims), atol=1e-9)
    assert np.allclose(membership_weights(np.array([[0.3]])), [[1.0]])  # k = 1: the neighbour itself


def test_cli_default_threshold_is_the_library_one():
    assert CLI_TRANSFORM_MAX == TRANSFORM_MAX


def clustered(rng: np.random.Generator) -> tuple[list[str], np.ndarray, list[int]]:
    centers = np.eye(K, D, dtype=np.float32) * 4
    x = np.concatenate([centers[c] + rng.standard_normal((PER, D)).astype(np.float32) * 0.4 for c in range(K)])
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(x))]
    return ids, x / np.linalg.norm(x, axis=1, keepdims=True), [c for c in range(K) for _ in range(PER)]


@pytest.fixture
def pool(tmp_path):
    ids, x, labels = clustered(np.random.default_rng(0))
    st = open_store(str(tmp_path / "store"))
    st.ensure_collection("pool")
    st.ensure_encoder("pool", "enc", {"family": "test", "dim": D})
    st.upsert_points("pool", ids, [{"path": str(tmp_path / f"{i}.png"), "label": f"c{c}"}
                                   for i, c in zip(ids, labels, strict=True)])
    st.upsert_vectors("pool", "enc", ids, x)
    st.close()
    return str(tmp_path / "store"), ids, labels


def test_cli_map_above_the_threshold_interpolates_and_the_report_reads_it(pool, tmp_path):
    store, ids, labels = pool
    args = ["--store", store, "-c", "pool", "--neighbors", "10", "--epochs", "30", "--sample", "120",
            "--pca-dims", "8", "--quiet"]
    ok = CliRunner().invoke(app, ["map", *args, "--transform-max", "100"])
    assert ok.exit_code == 0, ok.output
    assert "fitted on 120, interpolated 60" in ok.output and "transformed" not in ok.output
    st = open_store(store)
    try:
        _, got_ids, xy = load_map(st, "pool")
    finally:
        st.close()
    assert got_ids == sorted(ids)
    lab = np.array(labels)[[ids.index(i) for i in got_ids]]
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    assert np.mean(lab[d.argmin(1)] == lab) > 0.95  # interpolated points land in their own cluster
    html = tmp_path / "r.html"
    rep = CliRunner().invoke(app, ["report", "--store", store, "-c", "pool", "--out", str(html), "--quiet"])
    assert rep.exit_code == 0, rep.output
    data = json.loads(re.search(r'id="curate-data">(.*?)</script>', html.read_text(), re.S).group(1))
    assert data["n"] == len(ids)
    assert "transformed" not in rep.output and "interpolated" not in rep.output  # the map was reused


def test_fresh_layout_killed_while_writing_leaves_no_map(pool, monkeypatch):
    store, ids, _ = pool
    st = open_store(store)
    try:
        first = map_pool(st, "pool", None, SETTINGS)
        assert (first.fitted, first.interpolated, first.transformed) == (120, 60, 0)
        _, _, before = load_map(st, "pool")
        monkeypatch.setattr("curate.maps.WRITE_CHUNK", 50)
        real = st.set_payloads
        calls = []

        def dies_after_one_chunk(collection, items):  # noqa: ANN001,ANN202
            if calls:
                raise KeyboardInterrupt("killed")
            calls.append(len(items))
            real(collection, {k: {f: v + 100 for f, v in p.items()} for k, p in items.items()})  # tell apart

        monkeypatch.setattr(st, "set_payloads", dies_after_one_chunk)
        with pytest.raises(KeyboardInterrupt):
            map_pool(st, "pool", None, SETTINGS, refit=True)
        monkeypatch.setattr(st, "set_payloads", real)
        assert calls == [50]
        with pytest.raises(ValueError, match="no map of enc"):
            load_map(st, "pool")  # 50 shifted points + 130 old ones are not a map
        again = map_pool(st, "pool", None, SETTINGS)  # same settings: starts over, keeps nothing
        assert (again.reused, again.fitted, again.interpolated) == (0, 120, 60)
        _, _, after = load_map(st, "pool")
        assert np.allclose(after, before, atol=1e-4)  # seeded: the same map again
    finally:
        st.close()
