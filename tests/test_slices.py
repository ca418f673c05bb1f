"""Slices against brute force: the same ids for every way of building one, tags and manifests."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest

from curate.slices import DEFAULT_TEMPLATES, SliceError, SliceRequest, build_slice, resolve_set, save_slice
from curate.store import StoreError, open_store, parse_where

D = 16
N = 240


def _vectors(seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)
    x[200:220] = x[0:20] + 0.05 * np.random.default_rng(1).standard_normal((20, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def pool():
    store = open_store(url=":memory:")
    rng = np.random.default_rng(3)
    ids = sorted(str(uuid.UUID(int=int(rng.integers(1 << 62)) * 31 + k)) for k in range(N))
    x = _vectors()
    payloads = [
        {
            "path": f"/data/img{k:03d}.png",
            "relpath": f"img{k:03d}.png",
            "sha256": f"h{k}",
            "source": "camA" if k % 5 == 0 else ("camB" if k % 5 < 3 else "camC"),
            "split": "train" if k < 120 else "test",
        }
        for k in range(N)
    ]
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"family": "test", "dim": D})
    store.upsert_points("pool", ids, payloads)
    store.upsert_vectors("pool", "enc", ids, x)
    yield store, ids, x, payloads
    store.close()


def _brute_rank(x: np.ndarray, ids: list[str], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    s = (x.astype(np.float64) @ np.atleast_2d(q).T.astype(np.float64)).max(axis=1)
    order = sorted(range(len(ids)), key=lambda r: (-round(s[r], 5), ids[r]))
    return np.array(order), s


def test_examples_mean_top_k(pool) -> None:
    store, ids, x, _ = pool
    ex = [ids[3], "/data/img007.png", "img011.png"]  # an id, an absolute path, a relative path
    sl = build_slice(store, "pool", "enc", SliceRequest("ex", examples=ex, top_k=15), device="cpu")
    order, s = _brute_rank(x, ids, (x[3] + x[7] + x[11]) / 3)
    assert sl.ids == [ids[r] for r in order[:15]]
    np.testing.assert_allclose(sl.scores, s[order[:15]], atol=1e-5)
    assert list(sl.table["rank"]) == list(range(1, 16))


def test_examples_each_and_threshold(pool) -> None:
    store, ids, x, _ = pool
    req = SliceRequest("each", examples=[ids[0], ids[50]], example_mode="each", top_k=6)
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    want = set()
    for e in (0, 50):
        o, _ = _brute_rank(x, ids, x[e])
        want |= {ids[r] for r in o[:6]}
    assert set(sl.ids) == want
    req = SliceRequest("thr", examples=[ids[0]], threshold=0.9)
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    s = x @ x[0]
    assert set(sl.ids) == {ids[r] for r in np.flatnonzero(s >= 0.9)}
    assert {ids[0], ids[200]} <= set(sl.ids)


def test_filter_only_and_where(pool) -> None:
    store, ids, x, payloads = pool
    sl = build_slice(store, "pool", "enc", SliceRequest("camc", where=parse_where("source == camC")), device="cpu")
    assert set(sl.ids) == {ids[k] for k, p in enumerate(payloads) if p["source"] == "camC"}
    req = SliceRequest("ex_test", examples=[ids[0]], top_k=5, where=parse_where("split == test"))
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    test_rows = [k for k in range(N) if payloads[k]["split"] == "test"]
    o, _ = _brute_rank(x[test_rows], [ids[k] for k in test_rows], x[0])
    assert sl.ids == [ids[test_rows[r]] for r in o[:5]]


def test_balanced_by(pool) -> None:
    store, ids, x, payloads = pool
    req = SliceRequest("bal", examples=[ids[1]], top_k=30, balanced_by="source")
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    assert sl.group_counts == {"camA": 10, "camB": 10, "camC": 10} and sl.shortfall is None
    s = x @ x[1]
    for g in ("camA", "camB", "camC"):
        rows = [k for k in range(N) if payloads[k]["source"] == g]
        best = sorted(rows, key=lambda r: (-s[r], ids[r]))[:10]
        assert {ids[r] for r in best} == set(sl.table.filter(pl.col("source") == g)["id"])
    # a threshold-only balanced slice: every group cut to the smallest group's size
    req = SliceRequest("bal2", examples=[ids[1]], threshold=0.2, balanced_by="source")
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    sizes = {
        g: sum(1 for k in range(N) if payloads[k]["source"] == g and s[k] >= 0.2) for g in ("camA", "camB", "camC")
    }
    assert set(sl.group_counts.values()) == {min(sizes.values())}
    # a group that is too small is reported, not hidden
    req = SliceRequest("bal3", examples=[ids[1]], top_k=150, balanced_by="source")
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    assert sl.shortfall is not None and "camA has 48" in sl.shortfall and sl.group_counts["camB"] == 50


def test_exclude_near_and_resolve_set(pool, tmp_path) -> None:
    store, ids, x, _ = pool
    train = save_slice(store, "pool", build_slice(store, "pool", "enc", SliceRequest(
        "train", where=parse_where("split == train")), device="cpu"), tmp_path)
    assert resolve_set(store, "pool", "train") == ("slice train", sorted(train.ids))
    assert resolve_set(store, "pool", "slice:train")[1] == sorted(train.ids)
    assert resolve_set(store, "pool", str(tmp_path / "slice_train.csv"))[1] == sorted(train.ids)
    assert len(resolve_set(store, "pool", "where:split == test")[1]) == 120
    req = SliceRequest("clean", where=parse_where("split == test"), exclude_near="train", exclude_threshold=0.9)
    sl = build_slice(store, "pool", "enc", req, device="cpu")
    near = (x[120:] @ x[:120].T).max(axis=1) >= 0.9
    assert set(sl.ids) == {ids[120 + k] for k in np.flatnonzero(~near)}
    assert sl.n_excluded == int(near.sum()) == 20  # the planted copies 200..219 of 0..19
    with pytest.raises(SliceError, match="unknown set"):
        resolve_set(store, "pool", "nope")


def test_cluster_slice(pool) -> None:
    store, ids, x, _ = pool
    sizes = []
    for c in range(4):
        sl = build_slice(store, "pool", "enc", SliceRequest(f"c{c}", cluster=c, n_clusters=4), device="cpu")
        sizes.append(len(sl.ids))
    assert sum(sizes) == N and sizes == sorted(sizes, reverse=True)


def test_text_query_with_tiny_clip(tiny_clip, tmp_path) -> None:
    from curate.encoders import load_encoder

    enc = load_encoder(tiny_clip.model, tiny_clip.checkpoint, "cpu")
    captions = [f"a {c} {a}" for c in ("red", "blue", "green", "black") for a in ("dog", "car", "tree", "boat")]
    x = enc.encode_texts(captions).numpy()
    store = open_store(url=":memory:")
    try:
        ids = sorted(str(uuid.uuid5(uuid.NAMESPACE_URL, c)) for c in captions)
        store.ensure_collection("p")
        store.ensure_encoder("p", enc.name, enc.spec)
        store.upsert_points("p", ids, [{"path": f"/p/{k}.png"} for k in range(len(ids))])
        store.upsert_vectors("p", enc.name, ids, x)
        sl = build_slice(store, "p", None, SliceRequest("dogs", texts=["dog"], top_k=4), device="cpu")
        prompts = [t.format("dog") for t in DEFAULT_TEMPLATES]
        q = enc.encode_texts(prompts).numpy().mean(axis=0)
        order, _ = _brute_rank(x, ids, q)
        assert sl.ids == [ids[r] for r in order[:4]]
        custom = build_slice(store, "p", None, SliceRequest(
            "dogs2", texts=["dog"], templates=["{} at night"], top_k=3), device="cpu")
        order, _ = _brute_rank(x, ids, enc.encode_texts(["dog at night"]).numpy()[0])
        assert custom.ids == [ids[r] for r in order[:3]]
    finally:
        store.close()


def test_save_slice_tags_and_untags(pool, tmp_path) -> None:
    store, ids, x, _ = pool
    big = save_slice(store, "pool", build_slice(store, "pool", "enc", SliceRequest(
        "s", examples=[ids[2]], top_k=20), device="cpu"), tmp_path)
    small = save_slice(store, "pool", build_slice(store, "pool", "enc", SliceRequest(
        "s", examples=[ids[2]], top_k=5), device="cpu"), tmp_path)
    tagged = {i for i, p in store.payloads("pool", None, ["slice_s"]).items() if p.get("slice_s")}
    assert tagged == set(small.ids) and set(small.ids) < set(big.ids)
    manifest = pl.read_csv(tmp_path / "slice_s.csv")
    assert manifest["id"].to_list() == small.ids and manifest.columns == ["rank", "id", "path", "score"]


@pytest.mark.parametrize(
    ("req", "match"),
    [
        (SliceRequest("e", examples=["x"], top_k=5, threshold=1.5), "outside"),
        (SliceRequest("e", examples=["x"]), "--top-k"),
        (SliceRequest("bad name", where=parse_where("split == test")), "slice name"),
        (SliceRequest("e", texts=["a"], examples=["b"], top_k=1), "one of"),
        (SliceRequest("e"), "say what"),
        (SliceRequest("e", examples=["/no/such.png"], top_k=3), "not an id or path"),
        (SliceRequest("e", where=parse_where("split == nowhere")), "empty"),
        (SliceRequest("e", examples=["img100.png"], threshold=0.9, where=parse_where("split == test")), "empty"),
        (SliceRequest("e", texts=["a"], top_k=1, templates=["no slot"]), "template"),
    ],
)
def test_errors(pool, req, match) -> None:
    store, *_ = pool
    with pytest.raises(SliceError, match=match):
        build_slice(store, "pool", "enc", req, device="cpu")


def test_failed_images_as_examples_or_exclusions(pool) -> None:
    store, ids, x, _ = pool
    bad = "00000000-0000-4000-8000-000000000001"
    store.upsert_points("pool", [bad], [{"path": "/data/broken.png", "failed": True, "split": "train"}])
    with pytest.raises(SliceError, match="failed to embed"):
        build_slice(store, "pool", "enc", SliceRequest("e", examples=["/data/broken.png"], top_k=3), device="cpu")
    req = SliceRequest("t", where=parse_where("split == test"), exclude_near="where:split == train")
    sl = build_slice(store, "pool", "enc", req, device="cpu")  # the train set holds a point without a vector
    assert sl.n_excluded == 20


def test_unknown_encoder(pool) -> None:
    store, *_ = pool
    with pytest.raises(StoreError, match="unknown encoder"):
        build_slice(store, "pool", "nope", SliceRequest("e", where=parse_where("split == test")))
