"""Command: import-vectors (vectors computed elsewhere become another encoder of the pool)."""

from __future__ import annotations

import typer

from curate.cli import app
from curate.cli.common import (
    CollectionOpt,
    QuietOpt,
    StoreOpt,
    UrlOpt,
    console,
    err_console,
    fail,
    settings,
    store_from,
)
from curate.store import StoreError


@app.command("import-vectors")
def import_vectors_cmd(
    file: str = typer.Argument(..., help="Parquet with an 'id' or 'path' column and a 'vector' list column, "
                               "or a .npy matrix with --manifest."),
    encoder: str = typer.Option(..., "--encoder", help="Name to store the vectors under (then select, dedup, "
                                "... with --encoder NAME)."),
    manifest: str = typer.Option(None, "--manifest", help="For a .npy matrix: CSV/Parquet with an id or path "
                                 "column, one row per matrix row."),
    column: str = typer.Option("vector", "--column", help="The vector column of a Parquet file."),
    create: bool = typer.Option(False, "--create", help="Rows are new points named by their 'path' column "
                                "(ids as 'curate embed' computes them); other columns become metadata."),
    root: str = typer.Option(None, "--root", help="With --create: pool root for relative paths and ids "
                             "(default: the file's folder, as 'curate embed FILE' does)."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Skip rows naming images not in the "
                                      "collection instead of failing."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Store vectors computed elsewhere (a task model's features, BADGE gradients) as another encoder.

    Example: curate import-vectors feats.parquet --encoder resnet-penultimate

    Example: curate import-vectors pool.parquet --encoder dinov2 --create
    """
    from curate.import_vectors import import_vectors

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s, create=create, write=True) as st:
            rep = import_vectors(st, s.collection, file, encoder, manifest=manifest, create=create, root=root,
                                 skip_unknown=skip_unknown, column=column)
    except (ValueError, StoreError) as e:
        fail(str(e))
    if rep.skipped_unknown and not quiet:
        err_console.print(f"[yellow]warning:[/] {rep.skipped_unknown} rows name images not in the collection, "
                          f"e.g. {', '.join(rep.unknown_examples[:3])}", highlight=False)
    console.print(rep.summary(), highlight=False)
