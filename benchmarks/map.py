"""`curate map` and `curate report` at pool scale, on synthetic clustered vectors.

    python -m benchmarks.map --n 100000              # map + report + time to interactive (~10 min here)
    python -m benchmarks.map --n 1000000 --no-report # map only
    python -m benchmarks.map --page-only 1000000     # the report page alone, 1M synthetic points
    python -m benchmarks.map --compare --n 100000    # transform vs k-NN interpolation, same fit (~10 min)

Pool: N unit vectors in 512-d around 64 cluster centres (payload `cluster`), plus, for the report,
one tiny PNG file per point so thumbnails are real work. Each command runs as its own process
(`python -m curate ...`) so its wall time includes start-up and numba compilation, and its peak
memory is that process's max RSS. Layout quality: the share of points whose 10 nearest neighbours
on the 2-D map carry the same cluster label, next to the same share in the 512-d space (reference).
Time to interactive: navigation start until the map is drawn and answers events, in headless
Chromium (curate.report.browser, as the browser test), median of 3 loads.
`--compare`: one UMAP fit on the 25k sample, then the same held-out points placed both ways (UMAP's
transform and k-NN interpolation, curate.maps.FittedSample): time per point, the 10-NN same-cluster
share of each placement, and how far apart the two placements are relative to the map's extent.
`--noise` widens the clusters (harder data: the default 1.1 separates them perfectly in 512-d).
Prints a markdown block to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from curate.device import cpu_name

CLUSTERS, DIM = 64, 512


def clustered(n: int, seed: int = 0, noise: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    labels = rng.integers(0, CLUSTERS, size=n)
    x = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 50_000):
        part = labels[lo : lo + 50_000]
        x[lo : lo + len(part)] = centres[part] + rng.standard_normal((len(part), DIM)).astype(np.float32) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def tiny_png(k: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (16, 16), ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256))
    img.putpixel((0, 0), (k % 256, (k >> 8) % 256, (k >> 16) % 256))  # every file distinct (sha256)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def build_pool(root: Path, n: int, images: bool) -> tuple[list[str], np.ndarray]:
    import hashlib

    from curate.store import open_store

    x, labels = clustered(n)
    ids = [str(uuid.UUID(int=k + 1)) for k in range(n)]
    payloads = []
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        p = {"path": str(img_dir / f"{k:07d}.png"), "relpath": f"images/{k:07d}.png", "cluster": int(labels[k]),
             "source": ("camA", "camB", "camC")[k % 3]}
        if images:
            data = tiny_png(k)
            (img_dir / f"{k:07d}.png").write_bytes(data)
            p["sha256"] = hashlib.sha256(data).hexdigest()
        payloads.append(p)
    st = open_store(str(root / "store"))
    try:
        st.ensure_collection("bench")
        st.ensure_encoder("bench", "synthetic", {"family": "test", "dim": DIM})
        for lo in range(0, n, 20_000):
            st.upsert_points("bench", ids[lo : lo + 20_000], payloads[lo : lo + 20_000])
            st.upsert_vectors("bench", "synthetic", ids[lo : lo + 20_000], x[lo : lo + 20_000])
        st.flush()
    finally:
        st.close()
    return ids, labels


CPU_SECONDS: list[float] = []  # CPU time (user + system) of each run(), in order: robust to a shared machine


def run(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB of this child, output) of one `python -m curate ...` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    peak = max(after.ru_maxrss, before.ru_maxrss)  # max over children so far (KiB): an upper bound
    return wall, peak / 2**20, out.stdout + out.stderr


def knn_agreement(points: np.ndarray, labels: np.ndarray, k: int = 10, sample: int = 2000) -> float:
    """Share of the k nearest neighbours (of a seeded sample of points) with the same label."""
    from curate.kernels import topk_similarity

    rng = np.random.default_rng(1)
    rows = rng.choice(len(points), size=min(sample, len(points)), replace=False)
    if points.shape[1] == 2:
        agree = []
        for r in rows:
            d = ((points - points[r]) ** 2).sum(1)
            d[r] = np.inf
            agree.append(np.mean(labels[np.argpartition(d, k)[:k]] == labels[r]))
        return float(np.mean(agree))
    _, idx = topk_similarity(points[rows], points, k + 1, device="cpu")
    return float(np.mean([np.mean(labels[i[i != r][:k]] == labels[r]) for r, i in zip(rows, idx, strict=True)]))


def page_only(n: int, root: Path) -> None:
    """Time to interactive of the report page alone for n points (random layout, 3 colour fields,
    no thumbnails): what the browser has to do for a pool of that size, without building one."""
    from curate.report.browser import check_report
    from curate.report.build import _map_json
    from curate.report.collect import colour_field
    from curate.report.render import render

    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLUSTERS, size=n)
    centres = rng.standard_normal((CLUSTERS, 2)) * 10
    xy = (centres[labels] + rng.standard_normal((n, 2))).astype(np.float32)
    ids = [f"{k:07d}" for k in range(n)]
    payloads = {i: {"relpath": f"images/{i}.jpg", "cluster": int(c), "source": ("camA", "camB")[k % 2]}
                for k, (i, c) in enumerate(zip(ids, labels, strict=True))}
    sources = [p["source"] for p in payloads.values()]
    fields = [colour_field("cluster", labels.tolist()), colour_field("source", sources)]
    data = _map_json(ids, xy, payloads, fields, None, set(), "none_thumbs")
    summary = {"collection": "synthetic", "store": "-", "points": n, "mapped": n, "failed": 0, "failed_rows": [],
               "encoders": {"synthetic": n}, "map_encoder": "synthetic", "selected": 0, "duplicates": 0,
               "slices": 0, "distributions": [], "created": "-"}
    html = root / f"page_{n}.html"
    html.write_text(render(summary, {}, data, "none_thumbs", set()), encoding="utf-8")
    checks = [check_report(html, hover_row=0, screenshot=root / f"page_{n}_{k}.png") for k in range(3)]
    assert all(not c.console_errors and not c.page_errors and not c.network for c in checks), checks[0]
    tti = sorted(c.ready_ms for c in checks)[1]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"| report page alone, {n:,} points (synthetic layout, 2 colour fields, no thumbnails): "
          f"{html.stat().st_size / 1e6:.1f} MB HTML, time to interactive {tti / 1000:.1f} s (median of 3, "
          f"{tti / 3000:.2f}x the 3 s target), hover answered | {when}, load average {os.getloadavg()[0]:.1f}, "
          f"`PYTHONPATH=. python -m benchmarks.map --page-only {n}` |")


def share_2d(queries: np.ndarray, q_labels: np.ndarray, others: np.ndarray, o_labels: np.ndarray,
             k: int = 10) -> float:
    """Share of each query point's k nearest 2-D neighbours (among the other queries and `others`)
    that carry its label."""
    pts, lab = np.vstack([others, queries]), np.concatenate([o_labels, q_labels])
    agree = []
    for r in range(len(queries)):
        d = ((pts - queries[r]) ** 2).sum(1)
        d[len(others) + r] = np.inf
        agree.append(np.mean(lab[np.argpartition(d, k)[:k]] == q_labels[r]))
    return float(np.mean(agree))


def compare(n: int, held_n: int, noise: float, keep: str | None = None) -> None:
    """UMAP's transform vs k-NN interpolation for the same held-out points of one fit."""
    from curate.kernels import topk_similarity
    from curate.maps import MapSettings, fit_sample

    cfg = MapSettings(sample=min(MapSettings().sample, n // 2))  # small n (a smoke run): half is held out
    x, labels = clustered(n, noise=noise)
    t = time.perf_counter()
    fitted = fit_sample(x, cfg)
    fit_s = time.perf_counter() - t
    rest = np.setdiff1d(np.arange(n), fitted.rows)
    held = np.sort(np.random.default_rng(5).choice(rest, size=min(held_n, len(rest)), replace=False))
    placed, secs = {}, {}
    for how in ("transform", "interpolate"):
        t = time.perf_counter()
        placed[how] = np.vstack([fitted.transform(held[lo : lo + cfg.chunk]) if how == "transform"
                                 else fitted.interpolate(held[lo : lo + cfg.chunk], cfg.n_neighbors)
                                 for lo in range(0, len(held), cfg.chunk)])
        secs[how] = time.perf_counter() - t
    fl, hl = labels[fitted.rows], labels[held]
    if keep:  # the fit and both placements, to try other placements without refitting
        Path(keep).mkdir(parents=True, exist_ok=True)
        np.savez(Path(keep) / f"compare_{n}_{noise}.npz", anchors=fitted.anchors, xy=fitted.xy,
                 queries=fitted.reduce(held), fl=fl, hl=hl, **placed)
    share = {how: share_2d(p, hl, fitted.xy, fl) for how, p in placed.items()}
    sub = np.concatenate([fitted.rows, held])
    _, idx = topk_similarity(x[held], x[sub], 11, device="cpu")
    sl = labels[sub]
    hd = float(np.mean([np.mean(sl[i[1:]] == lab) for i, lab in zip(idx, hl, strict=True)]))  # i[0]: itself
    extent = float(np.sqrt(np.prod(fitted.xy.max(0) - fitted.xy.min(0))))
    gap = np.linalg.norm(placed["transform"] - placed["interpolate"], axis=1) / extent
    # a point whose nearest fitted point (in 2-D) has another label sits in the wrong cluster
    wrong = {how: float(np.mean(fl[[np.argmin(((fitted.xy - q) ** 2).sum(1)) for q in p]] != hl))
             for how, p in placed.items()}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ms = {how: secs[how] / len(held) * 1e3 for how in secs}
    print("\n".join([
        f"### Transform vs k-NN interpolation, {n:,} x {DIM} synthetic ({CLUSTERS} clusters, noise {noise})",
        "",
        f"Machine: 2-core x86_64 CPU VM, 24 GiB ({cpu_name()}); date {when}; load average {os.getloadavg()[0]:.1f} "
        "(shared machine: timings are upper bounds).",
        f"Command: `PYTHONPATH=. python -m benchmarks.map --compare --n {n} --held {held_n} --noise {noise}`",
        f"One fit on the {len(fitted.rows):,}-point sample ({fit_s:.0f} s), then the same {len(held):,} held-out "
        "points placed both ways (k = 15, chunks of 20,000).",
        "",
        "| placement | time per point | 10-NN same-cluster share (2-D) | nearest fitted point in another cluster |",
        "|---|---|---|---|",
        f"| UMAP transform | {ms['transform']:.2f} ms | {share['transform']:.3f} | {wrong['transform']:.2%} |",
        f"| k-NN interpolation | {ms['interpolate']:.3f} ms ({ms['transform'] / ms['interpolate']:.0f}x faster) | "
        f"{share['interpolate']:.3f} | {wrong['interpolate']:.2%} |",
        f"| reference: 512-d space | | {hd:.3f} | |",
        "",
        f"Distance between the two placements of a point, relative to the map's extent (sqrt of its bounding "
        f"box area, {extent:.1f}): mean {gap.mean():.4f}, median {np.median(gap):.4f}, "
        f"95th percentile {np.quantile(gap, 0.95):.4f}, max {gap.max():.3f}.",
    ]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--page-only", type=int, help="only time the report page for this many synthetic points")
    ap.add_argument("--keep", help="keep the work folder here instead of a temporary one")
    ap.add_argument("--compare", action="store_true", help="transform vs k-NN interpolation (no store)")
    ap.add_argument("--held", type=int, default=10_000, help="--compare: held-out points placed both ways")
    ap.add_argument("--noise", type=float, default=1.1, help="--compare: cluster spread (larger: harder)")
    a = ap.parse_args()
    if a.compare:
        compare(a.n, a.held, a.noise, a.keep)
        return
    if a.page_only:
        root = Path(a.keep or tempfile.mkdtemp(prefix="curate-bench-page-"))
        root.mkdir(parents=True, exist_ok=True)
        page_only(a.page_only, root)
        return
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="curate-bench-map-"))
    root.mkdir(parents=True, exist_ok=True)
    env_py = os.environ.get("PYTHONPATH", "")
    print(f"work folder {root}", file=sys.stderr)
    t = time.perf_counter()
    ids, labels = build_pool(root, a.n, images=not a.no_report)
    print(f"pool built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    store = ["--store", str(root / "store"), "-c", "bench"]
    wall, peak, out = run(["map", *store, "--quiet"])
    secs = dict(re.findall(r"(read|fit|transform|interpolate|write) ([\d.]+) s", out))
    wall2, _, out2 = run(["map", *store, "--quiet"])
    assert "already up to date" in out2, out2

    from curate.maps import load_map
    from curate.store import open_store

    st = open_store(str(root / "store"))
    try:
        _, mids, xy = load_map(st, "bench", "synthetic")
        x, _ = clustered(a.n)
    finally:
        st.close()
    lab = np.asarray(labels)[[int(uuid.UUID(i).int) - 1 for i in mids]]
    q2, qhd = knn_agreement(xy, lab), knn_agreement(x[[int(uuid.UUID(i).int) - 1 for i in mids]], lab)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    how = "interpolate" if "interpolate" in secs else "transform"  # above --transform-max: interpolation
    fit, tr = float(secs.get("fit", 0)), float(secs.get(how, 0))
    n_fit = min(a.n, 25_000)
    n_tr = a.n - n_fit
    target, target_name = (180, "3 min") if a.n <= 100_000 else (1200, "20 min")
    per_fit, per_tr = fit / n_fit * 1e3, tr / max(n_tr, 1) * 1e3
    lines = [
        f"### `curate map`, {a.n:,} x {DIM} synthetic clustered vectors ({CLUSTERS} clusters)",
        "",
        f"Machine: 2-core x86_64 CPU VM, 24 GiB ({cpu_name()}), Python {platform.python_version()}; date {when}; "
        f"load average {load:.1f} at the end (shared with other jobs: timings are noisy, upper bounds).",
        f"Command: `PYTHONPATH=. python -m benchmarks.map --n {a.n}{' --no-report' if a.no_report else ''}`",
        "",
        "| step | time | vs reference |",
        "|---|---|---|",
        f"| `curate map` total (process wall, incl. start-up and numba compile) | {wall:.0f} s | "
        f"{wall / target:.2f}x the issue's target ({target_name}); CPU time {CPU_SECONDS[0]:.0f} s |",
        f"| read vectors | {float(secs.get('read', 0)):.1f} s | |",
        f"| fit UMAP on the {n_fit:,}-point sample (PCA to 50 first) | {fit:.0f} s | {per_fit:.2f} ms/point |",
        f"| {'interpolate' if how == 'interpolate' else 'transform'} the other {n_tr:,} in chunks of 20,000 | "
        f"{tr:.0f} s | {per_tr:.2f} ms/point "
        f"({per_fit / max(per_tr, 1e-9):.0f}x cheaper per point than fitting) |",
        f"| write coordinates to the store | {float(secs.get('write', 0)):.1f} s | |",
        f"| rerun, same settings (no-op) | {wall2:.1f} s | {wall2 / wall:.3f}x the first run |",
        f"| peak memory (max RSS of the map process) | {peak:.2f} GiB | vectors alone: "
        f"{a.n * DIM * 4 / 2**30:.2f} GiB |",
        f"| 10-NN same-cluster share: 2-D map / 512-d space | {q2:.3f} / {qhd:.3f} | {q2 / qhd:.2f}x |",
    ]
    if not a.no_report:
        html = root / "report.html"
        rwall, rpeak, rout = run(["report", *store, "--out", str(html), "--results", str(root), "--quiet"])
        thumbs = html.with_name(html.stem + "_thumbs")
        tsize = sum(p.stat().st_size for p in thumbs.iterdir())
        rwall2, _, _ = run(["report", *store, "--out", str(html), "--results", str(root), "--quiet"])

        from curate.report.browser import check_report

        checks = [check_report(html, hover_row=0, screenshot=root / f"shot{k}.png") for k in range(3)]
        tti = sorted(c.ready_ms for c in checks)[1]
        assert all(not c.console_errors and not c.page_errors and not c.network for c in checks)
        lines += [
            "",
            f"### `curate report`, {a.n:,} points (same pool and map)",
            "",
            "| step | figure | vs reference |",
            "|---|---|---|",
            f"| generation, first run (makes {len(list(thumbs.iterdir())):,} thumbnails) | {rwall:.0f} s | "
            f"CPU time {CPU_SECONDS[2]:.0f} s |",
            f"| generation, thumbnails cached | {rwall2:.0f} s | {rwall2 / rwall:.2f}x the first run |",
            f"| peak memory (max RSS so far of any child) | {rpeak:.2f} GiB | |",
            f"| HTML file | {html.stat().st_size / 1e6:.1f} MB | of which the bundled regl-scatterplot 0.22 MB |",
            f"| thumbnails folder | {tsize / 1e6:.1f} MB | {tsize / max(len(list(thumbs.iterdir())), 1):.0f} B each |",
            f"| time to interactive, headless Chromium (software WebGL), median of 3 | {tti / 1000:.1f} s | "
            f"{tti / 3000:.2f}x the 3 s target |",
        ]
        shutil.copy(root / "shot1.png", root / "benchmark_report.png")
    print("\n".join(lines))
    print(f"(PYTHONPATH={env_py or '-'}; work folder {root})", file=sys.stderr)


if __name__ == "__main__":
    main()
