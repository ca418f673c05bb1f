"""`dedup --mode clustered --engine ray` on the local 2-CPU Ray cluster (`ray_cluster` fixture): the
groups equal the local clustered mode's on the same clustering, for every linkage and keep rule,
also with byte-identical files and points without a vector; and the CLI writes the same outputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_dedup_linkage import _chained
from typer.testing import CliRunner

from curate.cli import app
from curate.dedup import Pool, find_groups
from curate.store import open_store

runner = CliRunner()


def _pool(seed: int) -> tuple[Pool, np.ndarray]:
    """Chains of look-alikes (star and complete differ from single there), exact copies (shared
    sha256) and two points without a vector, in 8 clusters with 2 probes."""
    x = _chained(n_chains=12, length=10, d=8, seed=seed)
    rng = np.random.default_rng(seed)
    n = len(x) + 2
    ids = [f"p{k:03d}" for k in range(n)]
    hashes: list[str | None] = [None] * n
    for k, c in enumerate(rng.choice(n, size=(6, 2), replace=False)):
        hashes[c[0]] = hashes[c[1]] = f"h{k}"
    area = rng.integers(1, 5, size=n).astype(float)
    pool = Pool.from_arrays(ids, hashes=hashes, area=area, vectors=x, vector_ids=ids[: len(x)])
    return pool, x


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("linkage", ["star", "complete", "single"])
def test_ray_groups_equal_local_clustered_groups(ray_cluster, seed: int, linkage: str) -> None:
    import ray

    pool, _ = _pool(seed)
    for keep in ("largest", "central") if linkage != "single" else ("first",):
        kw = {"threshold": 0.95, "keep": keep, "linkage": linkage, "n_clusters": 8, "probes": 2, "device": "cpu"}
        local = find_groups(pool, mode="clustered", **kw)
        got = find_groups(pool, mode="auto", engine=ray, **kw)  # auto means clustered with ray
        assert got.mode == "clustered" and local.n_groups > 3
        assert got.table.equals(local.table), (linkage, keep)
        assert (got.n_groups, got.n_removed, got.n_near_pairs) == (local.n_groups, local.n_removed, local.n_near_pairs)


def test_ray_refuses_exact_mode(ray_cluster) -> None:
    import ray

    pool, _ = _pool(0)
    with pytest.raises(ValueError, match="--mode clustered only"):
        find_groups(pool, threshold=0.95, mode="exact", engine=ray, device="cpu")


def test_cli_dedup_engine_ray_writes_the_local_outputs(tmp_path, monkeypatch, ray_cluster) -> None:
    for var in ("CURATE_STORE", "CURATE_QDRANT_URL", "CURATE_COLLECTION", "CURATE_DEVICE", "CURATE_OUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    pool, x = _pool(3)
    ids = [f"00000000-0000-0000-0000-{k:012d}" for k in range(len(x))]
    with open_store(str(tmp_path / "store")) as st:
        st.ensure_collection("pool")
        st.ensure_encoder("pool", "enc", {"family": "test", "dim": x.shape[1]})
        st.upsert_points("pool", ids, [{"path": f"im{k:03d}.jpg", "width": 8, "height": 8} for k in range(len(x))])
        st.upsert_vectors("pool", "enc", ids, x)
        st.flush()
    tables = []
    for engine, out in (("local", "a"), ("ray", "b")):
        res = runner.invoke(app, ["dedup", "--mode", "clustered", "--clusters", "6", "--threshold", "0.95",
                                  "--force", "--engine", engine, "--out", out, "--store", "store", "-c", "pool"])
        assert res.exit_code == 0, res.output
        tables.append(pl.read_parquet(tmp_path / out / "dedup_groups.parquet"))
    assert len(tables[0]) > 10 and tables[0].equals(tables[1])


def test_find_groups_leaves_the_callers_pool_as_it_was() -> None:
    """The greedy reorders the matrix in place (out of core: no second copy); it must put it back,
    or a second call on the same pool clusters other rows and finds other groups."""
    pool, x = _pool(0)
    before = pool.vectors.copy(), pool.node_of_row.copy(), pool.info.vec_row.copy()
    kw = {"threshold": 0.95, "keep": "largest", "linkage": "star", "n_clusters": 8, "probes": 2, "device": "cpu"}
    first = find_groups(pool, mode="clustered", **kw)
    assert np.array_equal(pool.vectors, before[0]) and np.array_equal(pool.node_of_row, before[1])
    assert np.array_equal(pool.info.vec_row, before[2])
    assert find_groups(pool, mode="clustered", **kw).table.equals(first.table)
