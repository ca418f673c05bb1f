"""`curate map --png`: a static scatter of the stored layout, coloured by one payload field.

Categorical fields (few distinct values, strings, booleans) get a palette and a legend sorted by
count; numeric fields with many values get a colour scale. Points lacking the field are grey and
drawn first; selected images (payload `selected_round`) are drawn last with a dark outline, so
they are visible on top of a dense pool.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from curate.files import write_atomic

MAX_CATEGORIES = 20
PALETTE = [  # Tableau-like, colour-blind friendly enough for a meeting room projector
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
MISSING = "#d0d0d0"


def is_categorical(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    if not present:
        return True
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return len(set(present)) <= MAX_CATEGORIES
    return True


def categories(values: list[Any]) -> list[str]:
    """Distinct labels by count (most first); the rest beyond the palette fold into 'other'."""
    present = [v for v in values if v is not None]
    counts = Counter(str(v) for v in present)
    if present and all(isinstance(v, (int, float)) for v in present):  # numbers (and booleans) in their order
        return [str(v) for v in sorted(set(present))]
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def render_png(
    xy: np.ndarray,
    values: list[Any],
    selected: np.ndarray,
    path: str | Path,
    *,
    color_by: str,
    title: str,
) -> Path:
    """Write the scatter as a PNG (atomically); `values` per point (None = missing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(xy)
    size = float(np.clip(6000.0 / max(n, 1), 0.3, 14.0))  # dense pools: small points
    fig, ax = plt.subplots(figsize=(9, 7.5), dpi=120)
    missing = np.array([v is None for v in values], dtype=bool)
    if missing.any():
        ax.scatter(xy[missing, 0], xy[missing, 1], s=size, c=MISSING, linewidths=0, label=f"(no {color_by})")
    if is_categorical(values):
        cats = categories(values)
        shown = cats[: MAX_CATEGORIES - 1] if len(cats) > MAX_CATEGORIES else cats
        colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(shown)}
        labels = np.array(["" if v is None else str(v) for v in values], dtype=object)
        counts = Counter(labels[~missing])
        for c in shown:
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=size, c=colour[c], linewidths=0, label=f"{c} ({counts[c]})")
        rest = ~missing & ~np.isin(labels, shown)
        if rest.any():
            ax.scatter(xy[rest, 0], xy[rest, 1], s=size, c="#888888", linewidths=0,
                       label=f"{len(cats) - len(shown)} other values ({int(rest.sum())})")
    else:
        vals = np.array([np.nan if v is None else float(v) for v in values])
        sc = ax.scatter(xy[~missing, 0], xy[~missing, 1], s=size, c=vals[~missing], cmap="viridis", linewidths=0)
        fig.colorbar(sc, ax=ax, shrink=0.7, label=color_by)
    if selected.any():
        ax.scatter(xy[selected, 0], xy[selected, 1], s=max(size * 4, 14), facecolors="none",
                   edgecolors="#111111", linewidths=0.9, label=f"selected ({int(selected.sum())})", zorder=5)
    ax.set_title(title, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        leg = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False,
                        title=color_by, markerscale=max(1.0, 6.0 / np.sqrt(size)))
        leg.get_title().set_fontsize(9)
    fig.tight_layout()
    out = write_atomic(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return out
