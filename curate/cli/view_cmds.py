"""Commands: map, report. Parse options, call curate.maps / curate.report, print where things went."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app
from curate.cli.common import (
    CollectionOpt,
    EncoderOpt,
    QuietOpt,
    StoreOpt,
    UrlOpt,
    console,
    fail,
    settings,
    store_from,
)
from curate.store import StoreError

TRANSFORM_MAX = 50_000  # curate.maps.TRANSFORM_MAX (not imported here: the CLI starts without numpy/umap)


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False)  # paths may hold [..]


@app.command("map")
def map_cmd(
    encoder: str = EncoderOpt,
    png: str = typer.Option(None, "--png", help="Also write a static scatter PNG here."),
    color_by: str = typer.Option(
        None, "--color-by", help="Payload field that colours the PNG, e.g. label, source, selected_round, "
        "is_duplicate, slice_NAME (default: the first metadata column)."
    ),
    neighbors: int = typer.Option(15, "--neighbors", help="UMAP n_neighbors: larger keeps more global structure."),
    min_dist: float = typer.Option(0.1, "--min-dist", help="UMAP min_dist: smaller packs clusters tighter."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and pool give the same map."),
    sample: int = typer.Option(
        25_000, "--sample",
        help="Fit UMAP on at most this many points (seeded sample) and place the rest in chunks "
        "(see --transform-max). A larger sample resolves rarer clusters but fitting time and memory grow "
        "with it; placing costs far less per point.",
    ),
    pca_dims: int = typer.Option(50, "--pca-dims", help="PCA to this many dimensions before UMAP."),
    transform_max: int = typer.Option(
        TRANSFORM_MAX, "--transform-max",
        help="Pools of at most this many points place the points outside the sample with UMAP's transform "
        "(a few ms per point); larger pools place each at the weighted mean of its nearest fitted points "
        "(several times cheaper, linear in the pool size).",
    ),
    epochs: int = typer.Option(None, "--epochs", help="UMAP n_epochs (default: UMAP's own choice)."),
    refit: bool = typer.Option(False, "--refit", help="Recompute every point even if the stored map is current."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """2-D UMAP layout (cosine) of one encoder's vectors, stored as payload fields map_<encoder>_x/_y.

    Re-running with the same settings is a no-op; after 'curate embed' added images only the new ones are placed (next to their nearest mapped neighbours).

    Example: curate map --png map.png --color-by label
    """  # noqa: E501 - typer rewraps the help; a hard break here would show as a ragged line
    from curate.mapplot import render_png
    from curate.maps import MapSettings, map_pool

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    cfg = MapSettings(n_neighbors=neighbors, min_dist=min_dist, seed=seed, sample=sample,
                      pca_dims=pca_dims, n_epochs=epochs, transform_max=transform_max)
    try:
        with store_from(s) as st:
            res = _run_map(st, s.collection, encoder, cfg, refit, quiet, map_pool)
            _say(res.summary())
            if png:
                from curate.report.data import map_frame

                frame = map_frame(st, s.collection, res.encoder, color_by)
                out = render_png(frame.xy, frame.values, frame.selected, png, color_by=frame.color_by,
                                 title=f"{s.collection}: {len(frame.xy)} images, {res.encoder}")
                _say(f"wrote {out}")
    except (StoreError, ValueError) as e:
        fail(str(e))


def _run_map(st, collection, encoder, cfg, refit, quiet, map_pool):  # noqa: ANN001,ANN202
    if quiet:
        return map_pool(st, collection, encoder, cfg, refit=refit)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("placing"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = None

        def progress(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("transform", total=total)
            bar.update(task, completed=done)

        return map_pool(st, collection, encoder, cfg, refit=refit, progress=progress, log=_say)


@app.command()
def report(
    out: str = typer.Option(
        None, "--out", "-o", help="HTML file to write (default: ./curate-out/COLLECTION/report.html)."
    ),
    encoder: str = EncoderOpt,
    max_thumbs: int = typer.Option(
        20_000, "--max-thumbs", help="At most this many thumbnails (galleries first, then a seeded sample of the map)."
    ),
    gallery: int = typer.Option(
        60, "--gallery", help="Images shown per gallery; larger sets are sampled, counts shown."
    ),
    results: str = typer.Option(
        None, "--results", help="Folder with select/dedup/leaks outputs to show (default: ./curate-out, searched)."
    ),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """One self-contained HTML report: pool summary, interactive map, selection, duplicates, outliers, slices, leaks.

    Opens from disk with no server and no network; thumbnails go to a folder beside it.

    Example: curate report --out report.html
    """  # noqa: E501 - typer rewraps the help
    from curate.report import build_report

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    target = Path(out) if out else Path(s.out) / s.collection / "report.html"
    try:
        with store_from(s) as st:
            info = build_report(st, s.collection, target, encoder=encoder, max_thumbs=max_thumbs,
                                gallery=gallery, results_dir=Path(results) if results else Path(s.out),
                                log=None if quiet else _say)
    except (StoreError, ValueError) as e:
        fail(str(e))
    _say(f"report: {info.path} ({info.size_bytes / 1e6:.1f} MB, {info.points} points, {info.thumbs} thumbnails)")
