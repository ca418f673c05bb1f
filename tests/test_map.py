"""`curate map`: coordinates stored per point, reruns are no-ops, a grown pool maps only new points.

UMAP costs ~20 s of numba compilation per process, so one module-scoped fixture maps a small
pool once with few epochs and the tests check what it left behind.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.maps import MapSettings, load_map, map_fields, map_pool, place_by_neighbours
from curate.store import open_store

D, PER, K = 24, 60, 3
SETTINGS = MapSettings(n_neighbors=10, n_epochs=30, sample=120, pca_dims=8, chunk=50)


def clustered(rng: np.random.Generator, per: int, offset: int = 0) -> tuple[list[str], np.ndarray, list[int]]:
    centers = np.eye(K, D, dtype=np.float32) * 4
    x = np.concatenate([centers[c] + rng.standard_normal((per, D)).astype(np.float32) * 0.4 for c in range(K)])
    ids = [str(uuid.UUID(int=offset + i + 1)) for i in range(len(x))]
    return ids, x / np.linalg.norm(x, axis=1, keepdims=True), [c for c in range(K) for _ in range(per)]


def make_store(path, ids, x, labels):  # noqa: ANN001,ANN201
    st = open_store(str(path))
    st.ensure_collection("pool")
    st.ensure_encoder("pool", "enc-1.a", {"family": "test", "dim": D})
    payloads = [{"path": f"/d/{i}.png", "label": f"c{lab}"} for i, lab in zip(ids, labels, strict=True)]
    st.upsert_points("pool", ids, payloads)
    st.upsert_vectors("pool", "enc-1.a", ids, x)
    return st


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    rng = np.random.default_rng(0)
    ids, x, labels = clustered(rng, PER)
    st = make_store(tmp_path_factory.mktemp("map") / "store", ids, x, labels)
    calls: list[tuple[int, int]] = []
    res = map_pool(st, "pool", None, SETTINGS, progress=lambda d, t: calls.append((d, t)))
    _, got_ids, xy = load_map(st, "pool")
    yield st, ids, x, labels, res, calls, dict(zip(got_ids, map(tuple, xy.tolist()), strict=True))
    st.close()


def test_map_fits_a_sample_transforms_the_rest_and_stores_every_point(mapped):
    st, ids, _, labels, res, calls, coords = mapped
    assert (res.fitted, res.transformed, res.total) == (120, 3 * PER - 120, 3 * PER)
    assert calls[-1] == (60, 60) and len(calls) == 2  # 60 transformed in chunks of 50
    assert sorted(coords) == sorted(ids)
    assert map_fields("enc-1.a") == ("map_enc_1_a_x", "map_enc_1_a_y")
    meta = st.get_meta("pool")["maps"]["enc-1.a"]
    assert meta["settings"] == SETTINGS.record() and meta["points"] == 3 * PER and meta["fitted_on"] == 120
    # three well separated clusters stay apart: each point's nearest map neighbour shares its cluster
    xy = np.array([coords[i] for i in ids])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    assert np.mean(np.array(labels)[d.argmin(1)] == np.array(labels)) > 0.95


def test_rerun_with_same_settings_is_a_no_op_and_new_settings_refit(mapped):
    st, _, _, _, _, _, coords = mapped
    again = map_pool(st, "pool", "enc-1.a", SETTINGS)
    assert (again.reused, again.fitted, again.transformed, again.placed) == (3 * PER, 0, 0, 0)
    assert "already up to date" in again.summary()
    _, ids2, xy2 = load_map(st, "pool")
    assert {i: tuple(p) for i, p in zip(ids2, xy2.tolist(), strict=True)} == coords


def test_same_seed_same_map_in_a_fresh_store(mapped, tmp_path):
    _, ids, x, labels, _, _, coords = mapped
    st = make_store(tmp_path / "other", ids, x, labels)
    try:
        map_pool(st, "pool", None, SETTINGS)
        _, ids2, xy2 = load_map(st, "pool")
    finally:
        st.close()
    got = {i: tuple(p) for i, p in zip(ids2, xy2.tolist(), strict=True)}
    assert got == coords


def test_grown_pool_places_only_new_points_next_to_their_cluster(mapped):
    st, ids, _, _, _, _, coords = mapped
    new_ids, new_x, new_labels = clustered(np.random.default_rng(5), 4, offset=10_000)
    payloads = [{"path": f"/d/{i}.png", "label": f"c{c}"} for i, c in zip(new_ids, new_labels, strict=True)]
    st.upsert_points("pool", new_ids, payloads)
    st.upsert_vectors("pool", "enc-1.a", new_ids, new_x)
    res = map_pool(st, "pool", None, SETTINGS)
    assert (res.placed, res.reused, res.fitted) == (len(new_ids), 3 * PER, 0)
    _, all_ids, xy = load_map(st, "pool")
    now = {i: tuple(p) for i, p in zip(all_ids, xy.tolist(), strict=True)}
    assert {i: now[i] for i in ids} == coords  # old points never move
    old_xy = np.array([coords[i] for i in ids])
    old_lab = np.array([c for c in range(K) for _ in range(PER)])
    for pid, c in zip(new_ids, new_labels, strict=True):
        centroid_dist = [np.linalg.norm(np.array(now[pid]) - old_xy[old_lab == k].mean(0)) for k in range(K)]
        assert int(np.argmin(centroid_dist)) == c


def test_place_by_neighbours_is_the_weighted_mean_of_the_nearest():
    old = np.eye(3, dtype=np.float32)
    xy = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    got = place_by_neighbours(old, xy, np.array([[1, 0.01, 0]], dtype=np.float32), k=1)
    assert np.allclose(got, [[0, 0]])
    got2 = place_by_neighbours(old, xy, np.array([[1, 1, 0]], dtype=np.float32), k=2)
    assert np.allclose(got2, [[5, 0]], atol=1e-3)


def test_cli_png_and_bad_options(mapped, tmp_path):
    st, *_ = mapped
    st.close()  # the CLI opens the store itself (the last test of the module; close is idempotent)
    store = st.location
    runner = CliRunner()
    png = tmp_path / "m.png"
    args = ["map", "--store", store, "-c", "pool", "--neighbors", "10", "--epochs", "30", "--sample", "120",
            "--pca-dims", "8", "--quiet"]
    ok = runner.invoke(app, [*args, "--png", str(png), "--color-by", "label"])
    assert ok.exit_code == 0, ok.output
    assert "already up to date" in ok.output and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, [*args, "--png", str(png), "--color-by", "nope"])
    assert bad.exit_code == 2 and "--color-by 'nope' is not a payload field" in bad.output
    assert "label" in bad.output
    bad2 = runner.invoke(app, ["map", "--store", store, "-c", "pool", "--min-dist", "3"])
    assert bad2.exit_code == 2 and "--min-dist 3.0 must be between 0 and 1" in bad2.output
