"""`curate report` opened from file:// in headless Chromium: no console errors, no network, the
galleries hold the expected thumbnails, hovering a map point shows its path, and a file named like
an HTML tag shows as text and runs nothing. The screenshot stays under the test's tmp folder.

The map coordinates are written directly (with the settings record `curate map` would write), so
this module never pays for UMAP's compilation; test_map.py covers the layout itself.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid

import numpy as np
import polars as pl
import pytest
from PIL import Image

from curate.maps import MapSettings, map_fields
from curate.report import build_report
from curate.report.browser import check_report, find_chromium
from curate.report.density import density_and_neighbours
from curate.store import open_store

EVIL = "<img src=x onerror=alert(1)>.png"
N, D, GALLERY = 40, 8, 12


def png_bytes(k: int) -> bytes:
    rng = np.random.default_rng(k)
    arr = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    arr[:, : 8 + k % 20] = [40 + 5 * k % 200, 90, 160]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def vectors() -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((N, D)).astype(np.float32)
    x[7] = x[6]
    return x


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    images = base / "images"
    images.mkdir()
    ids = sorted(str(uuid.UUID(int=k + 1)) for k in range(N + 1))
    names = [f"img_{k:03d}.png" for k in range(N)]
    names[5] = EVIL
    payloads, xy = [], []
    for k in range(N):
        data = png_bytes(k if k != 7 else 6)  # 6 and 7 are byte copies: a duplicate group
        (images / names[k]).write_bytes(data)
        payloads.append({"path": str(images / names[k]), "relpath": f"images/{names[k]}",
                         "sha256": hashlib.sha256(data).hexdigest(), "format": "PNG",
                         "label": "<b>bold</b>" if k % 4 == 0 else f"class {k % 3}", "source": "cam A"})
        xy.append((k % 8 * 1.0, k // 8 * 1.0))
    xy[5] = (20.0, 20.0)  # the evil file sits alone in a corner: the hover test points at it
    payloads.append({"path": str(images / "broken.png"), "relpath": "images/broken.png", "failed": True,
                     "error": "decode: <truncated> file"})
    x = vectors()
    fx, fy = map_fields("enc")
    for p, (a, b) in zip(payloads, xy, strict=False):
        p[fx], p[fy] = a, b
    selected = [ids[k] for k in (3, 9, 5, 20, 30, 11)]  # rank order
    for pid in selected:
        payloads[ids.index(pid)].update(selected_round=1, selection_name="round-1")
    payloads[6].update(dup_group=ids[6], is_duplicate=False)
    payloads[7].update(dup_group=ids[6], is_duplicate=True)
    for k in (1, 2, 3):
        payloads[k]["slice_night"] = True
    st = open_store(str(base / "store"))
    st.ensure_collection("pool")
    st.ensure_encoder("pool", "enc", {"family": "test", "dim": D})
    st.upsert_points("pool", ids, payloads)
    st.upsert_vectors("pool", "enc", ids[:N], x)
    meta = st.get_meta("pool")
    meta["maps"] = {"enc": {"settings": MapSettings().record(), "fields": [fx, fy], "points": N, "fitted_on": N}}
    st.set_meta("pool", meta)
    results = base / "out"
    results.mkdir()
    pl.DataFrame({"rank": list(range(1, 7)), "id": selected, "path": ["p"] * 6, "strategy": ["kcenter"] * 6,
                  "round": [1] * 6, "selection_name": ["round-1"] * 6,
                  "min_distance": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]}).write_csv(results / "round-1.csv")
    pl.DataFrame({"a_id": [ids[1]], "a_path": ["a"], "b_id": [ids[2]], "b_path": ["b"], "similarity": [0.97],
                  "exact": [False]}).write_csv(results / "leaks_train__eval.csv")
    info = build_report(st, "pool", base / "report.html", gallery=GALLERY, results_dir=results)
    st.close()
    return info, ids, names, base


def test_report_is_one_file_plus_thumbnails_and_escapes_data(report):
    info, ids, names, base = report
    html = info.path.read_text(encoding="utf-8")
    assert info.points == N and info.thumbs == N - 1  # 6 and 7 share bytes, so one thumbnail
    assert sorted(p.name for p in info.thumbs_dir.iterdir()) == sorted(
        f"{hashlib.sha256((base / 'images' / n).read_bytes()).hexdigest()}.webp" for n in set(names) - {names[7]})
    assert "<img src=x onerror" not in html and "<b>bold</b>" not in html and "<truncated>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "<link" not in html and "regl-scatterplot" in html
    for k in range(N):
        assert Image.open(info.thumbs_dir / f"{hashlib.sha256((base / 'images' / names[k]).read_bytes()).hexdigest()}"
                          ".webp").size[0] <= 160


@pytest.mark.skipif(find_chromium() is None, reason="NO CHROMIUM: install the Debian package 'chromium' "
                    "(.ci/run does) to run the browser test")
def test_report_in_headless_chromium(report, tmp_path):
    info, ids, names, _ = report
    shot = tmp_path / "report.png"
    page = check_report(info.path, screenshot=shot, hover_row=5)
    assert page.console_errors == [] and page.page_errors == []
    assert page.network == [] and page.dialogs == []  # the evil file name ran nothing
    assert page.broken_images == 0
    assert page.gallery_thumbs["selection"] == 6
    assert page.gallery_thumbs["duplicates"] == 2
    assert page.gallery_thumbs["outliers"] == GALLERY
    assert page.gallery_thumbs["slice-0"] == 3 and page.gallery_thumbs["leaks-0"] == 2
    assert f"images/{EVIL}" in page.hover_text  # shown as text
    assert "label: class 2" in page.hover_text
    assert shot.read_bytes()[:4] == b"\x89PNG"
    # clicking it lists it and its 8 nearest neighbours in the embedding, most similar first
    _, nbrs = density_and_neighbours(vectors(), k=10, n_neighbours=8)
    assert page.picked == [f"images/{names[r]}" for r in [5, *nbrs[5].tolist()]]


def test_density_and_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    want_density = np.take_along_axis(sims, order[:, :10], 1).mean(1)
    dens, nbrs = density_and_neighbours(x, k=10, n_neighbours=4)
    assert np.allclose(dens, want_density, atol=1e-5) and (nbrs == order[:, :4]).all()
    # beyond the exact limit: density against a sample, self excluded; no neighbour table
    dens_s, none = density_and_neighbours(x, k=10, exact_limit=40, sample=30)
    assert none is None and dens_s.shape == (60,)
    keys = np.sort(np.random.default_rng(0).choice(60, size=30, replace=False))
    sub = sims[:, keys]
    want_s = -np.sort(-sub, axis=1)[:, :10].mean(1)
    assert np.allclose(dens_s, want_s, atol=1e-5)
