"""Verified dedup (issue 12): candidate pairs from nearest neighbours, confirmed on the images.

- the pair check on small generated images: every copy kind of the benchmark is confirmed, distinct
  look-alikes (same generator, other seed) are rejected, for textured images (keypoints) and tiny ones
  (registration + correlation);
- candidates and grouping against brute-force references (every member confirmed against its kept
  image; the greedy equals the sequential one on the confirmed graph);
- `curate dedup` end to end on a small pool with planted copies, its --verify modes and --suggest.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_pool import embed_pixels
from cli_pool import run_on as _run
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from curate.decode import decode_image
from curate.dedup import Pool, find_groups, knn_pairs, signature, verify_pair
from curate.dedup.linkage import brute_force_on_matrix, edge_groups

KINDS = ("jpeg40", "resize50", "crop85", "bright", "rot5", "exif")


def textured(seed: int, size: int = 160, strokes: int | None = None) -> Image.Image:
    """A photo-like image: smooth random blobs plus random strokes (many corners for ORB). `strokes`:
    another seed for the strokes only, so the image looks alike (same blobs) but is another picture."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    if strokes is not None:
        rng = np.random.default_rng(strokes)
    for _ in range(40):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(4, size // 4, 2)
        draw.rectangle([int(x), int(y), int(x + w), int(y + h)], outline=tuple(int(c) for c in rng.integers(0, 255, 3)),
                       width=2)
    return img.filter(ImageFilter.SMOOTH)


def glyph(seed: int) -> Image.Image:
    """A 28 x 28 digit-like glyph: three random thick strokes on black."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(img)
    pts = [tuple(int(v) for v in rng.integers(5, 23, 2)) for _ in range(4)]
    draw.line(pts, fill=255, width=3)
    return img.filter(ImageFilter.GaussianBlur(0.6))


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:  # noqa: ANN003
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def copy_of(img: Image.Image, kind: str) -> bytes:
    """The benchmark's copy kinds (benchmarks/dedup.py perturb), as file bytes."""
    w, h = img.size
    if kind == "jpeg40":
        return encoded(img.convert("RGB"), "JPEG", quality=40)
    if kind == "resize50":
        return encoded(img.resize((w // 2, h // 2), Image.BILINEAR))
    if kind == "crop85":
        dx, dy = round(0.075 * w), round(0.075 * h)
        return encoded(img.crop((dx, dy, w - dx, h - dy)))
    if kind == "bright":
        return encoded(ImageEnhance.Brightness(img).enhance(1.2))
    if kind == "rot5":
        return encoded(img.rotate(5, resample=Image.BILINEAR))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(img.convert("RGB").transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def sig(data: bytes):  # noqa: ANN201
    return signature(decode_image(data)[0])  # decoded as embed decodes (EXIF applied)


@pytest.mark.parametrize("make,method", [(textured, "local"), (glyph, "tiny")])
def test_every_copy_kind_is_confirmed_and_look_alikes_are_not(make, method) -> None:
    originals = [make(s) for s in range(3)]
    sigs = [sig(encoded(o)) for o in originals]
    for o, so in zip(originals, sigs, strict=True):
        for kind in KINDS:
            v = verify_pair(sig(copy_of(o, kind)), so)
            assert v.same, (kind, v)
            if kind not in ("resize50", "crop85") or method == "local":
                assert v.method == method, (kind, v)
    for a in range(3):
        for b in range(a + 1, 3):
            v = verify_pair(sigs[a], sigs[b])
            assert not v.same and v.method == method, (a, b, v)


def test_look_alikes_with_the_same_background_are_rejected() -> None:
    """Same smooth background, other strokes: close in pixels (cosine > 0.9), another picture."""
    a, b = textured(5), textured(5, strokes=99)
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    assert va @ vb / np.linalg.norm(va) / np.linalg.norm(vb) > 0.9
    v = verify_pair(sig(encoded(a)), sig(encoded(b)))
    assert not v.same and v.method == "local", v
    assert verify_pair(sig(encoded(a)), sig(copy_of(a, "jpeg40"))).same


def test_knn_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    i, j, s = knn_pairs(x, 3, 0.1, device="cpu")
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    ref = set()
    for r in range(len(x)):
        for c in np.argsort(-sims[r])[:3]:
            if sims[r, c] >= 0.1:
                ref.add((min(r, int(c)), max(r, int(c))))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == ref
    assert np.all(i < j) and np.allclose(s, sims[i, j], atol=1e-5)


@pytest.mark.parametrize("linkage", ["star", "complete"])
def test_edge_groups_equal_the_sequential_greedy(linkage) -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = 30
        adj = np.triu(rng.random((n, n)) < 0.12, 1)
        adj |= adj.T
        i, j = np.nonzero(np.triu(adj, 1))
        leader = edge_groups(n, i, j, linkage)
        assert np.array_equal(leader, brute_force_on_matrix(adj, linkage))
        for m in range(n):  # the rule: confirmed against the kept image (star) / every member (complete)
            k = leader[m]
            assert k == m or adj[m, k]
            if linkage == "complete":
                assert all(adj[m, o] for o in np.flatnonzero(leader == k) if o != m)


def test_find_groups_with_a_verifier_follows_the_confirmed_pairs() -> None:
    """A stand-in verifier confirms pairs of one hidden "picture": the groups are the sequential greedy
    on (candidate and confirmed) pairs, every member confirmed against its keeper, and a pair the
    vectors rank close but the verifier rejects is never grouped."""
    rng = np.random.default_rng(3)
    n, k = 80, 4
    picture = rng.integers(0, 50, n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    calls: list[int] = []

    class Truth:
        stats = None

        def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            calls.append(len(a))
            from curate.dedup import VerifyStats

            self.stats = VerifyStats(candidates=len(a))
            return picture[a] == picture[b]

    ids = [f"{q:03d}" for q in range(n)]
    res = find_groups(Pool.from_arrays(ids, vectors=x), threshold=None, verifier=Truth(), candidates=k,
                      keep="first", device="cpu")
    i, j, _ = knn_pairs(x, k, 0.5, device="cpu")
    assert calls == [len(i)] and len(i) <= n * k  # O(N k) pairs checked, once
    adj = np.zeros((n, n), dtype=bool)
    ok = picture[i] == picture[j]
    adj[i[ok], j[ok]] = adj[j[ok], i[ok]] = True
    ref = brute_force_on_matrix(adj, "star")
    got = {pid: g for g, pid in res.table.select("group", "id").iter_rows()}
    for m in range(n):
        if ref[m] != m or (ref == m).sum() > 1:
            assert got[ids[m]] == ids[ref[m]]
        else:
            assert ids[m] not in got
        if ids[m] in got:
            assert picture[int(got[ids[m]])] == picture[m]


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """8 textured photos + 8 glyphs, and copies: for each kind one of a photo and one of a glyph."""
    root = tmp_path_factory.mktemp("vpool")
    img_dir = root / "images"
    img_dir.mkdir()
    originals = {f"p{s}.png": textured(10 + s, 128) for s in range(8)}
    originals |= {f"g{s}.png": glyph(20 + s) for s in range(8)}
    for name, img in originals.items():
        (img_dir / name).write_bytes(encoded(img))
    planted: dict[str, str] = {}  # copy file -> original file
    for n, kind in enumerate(KINDS):
        for src in (f"p{n}.png", f"g{n}.png"):
            name = f"{src[:-4]}_{kind}.{'jpg' if kind in ('jpeg40', 'exif') else 'png'}"
            (img_dir / name).write_bytes(copy_of(originals[src], kind))
            planted[name] = src
    shutil.copy(img_dir / "p7.png", img_dir / "p7_bytes.png")
    planted["p7_bytes.png"] = "p7.png"
    store = root / "store"
    embed_pixels(img_dir, store)
    return store, img_dir, planted


def test_cli_default_groups_each_copy_with_its_original(pool, tmp_path) -> None:
    store, _, planted = pool
    # 12 confirmed copies in a pool of 29: over the 20% stop-and-ask share, so nothing is written
    # without --force (as with a cut), and the line says the pairs were confirmed on the images
    res = _run(store, "dedup", "--no-tags", "--out", str(tmp_path), "--candidates", "8")
    assert res.exit_code == 2 and "each confirmed on the images: nothing written" in " ".join(res.output.split())
    assert not (tmp_path / "dedup_groups.parquet").exists()
    res = _run(store, "dedup", "--no-tags", "--out", str(tmp_path), "--candidates", "8", "--force")
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "near = verified on the images" in text, res.output
    groups = pl.read_parquet(tmp_path / "dedup_groups.parquet")
    got = {frozenset(Path(p).name for p in g["path"]) for g in groups.partition_by("group")}
    want: dict[str, set[str]] = {}
    for copy, src in planted.items():
        want.setdefault(src, {src}).add(copy)
    assert got == {frozenset(v) for v in want.values()}
    kept = set(groups.filter(pl.col("kept"))["path"].map_elements(lambda p: Path(p).name, return_dtype=pl.String))
    assert {"p1.png", "g1.png", "p0.png"} <= kept  # the larger original is kept over its 50% resize / q40 copy


def test_cli_suggest_reports_the_verification_and_writes_nothing(pool) -> None:
    store, _, _ = pool
    res = _run(store, "dedup", "--suggest")
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "verification (--verify auto)" in text and "the same picture" in text, res.output


def test_cli_missing_files_auto_falls_back_and_on_counts_them(pool, tmp_path) -> None:
    store, img_dir, _ = pool
    moved = img_dir.with_name("moved")
    img_dir.rename(moved)
    try:
        res = _run(store, "dedup", "--no-tags", "--out", str(tmp_path / "auto"))
        text = " ".join(res.output.split())
        assert res.exit_code == 0 and "verification off" in text and "cannot be read" in text, res.output
        assert "derived from the pool" in text
        res = _run(store, "dedup", "--no-tags", "--verify", "on", "--out", str(tmp_path / "on"))
        text = " ".join(res.output.split())
        assert res.exit_code == 0 and "with an unreadable image" in text and "0 same picture" in text, res.output
        assert len(pl.read_csv(tmp_path / "on" / "dedup_remove.csv")) == 1  # only the byte copy
        res = _run(store, "dedup", "--verify", "maybe")
        assert res.exit_code == 2 and "--verify 'maybe'" in res.output
    finally:
        moved.rename(img_dir)


def test_thumbnail_neighbours_find_copies_the_encoders_neighbours_miss(tmp_path) -> None:
    """Pooled CNN features can put a resized or cropped copy farther from its original than distinct
    look-alikes (benchmarks/dedup.py). Here no image's 2 nearest vectors show its own picture, so
    with 2 candidates per image only the thumbnail neighbours can propose the copy pairs."""
    from curate.dedup import PairVerifier

    paths, picture = [], []
    for s in range(6):
        img = textured(40 + s, 128)
        for kind in ("orig", "resize50", "bright"):
            p = tmp_path / f"{s}-{kind}.png"
            p.write_bytes(encoded(img) if kind == "orig" else copy_of(img, kind))
            paths.append(str(p))
            picture.append(s)
    picture = np.array(picture)
    n = len(paths)
    # vectors in which no image's 2 nearest neighbours show its own picture (the first seed that does)
    for seed in range(1000):
        x = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        top2 = np.argsort(-(x @ x.T), axis=1)[:, 1:3]
        if not (picture[top2] == picture[:, None]).any():
            break
    assert not (picture[top2] == picture[:, None]).any()  # the encoder misses every copy
    ids = [f"{m:02d}" for m in range(n)]
    pool = Pool.from_arrays(ids, vectors=x, paths=paths)
    verifier = PairVerifier(paths)
    res = find_groups(pool, threshold=-0.99, verifier=verifier, candidates=2, keep="first", device="cpu")
    groups = {}
    for g, pid in res.table.select("group", "id").iter_rows():
        groups.setdefault(g, set()).add(int(pid))
    found = sorted(tuple(sorted(picture[list(m)].tolist())) for m in groups.values())
    assert verifier.stats.from_thumbs > 0
    assert found == [(s, s, s) for s in range(6)]  # every picture's three files, nothing else
