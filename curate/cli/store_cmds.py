"""Commands that manage what the store holds: meta (merge metadata), drop (delete a collection)."""

from __future__ import annotations

import typer

from curate.cli import app
from curate.cli.common import CollectionOpt, StoreOpt, UrlOpt, console, err_console, fail, settings, store_from
from curate.store import StoreError


@app.command()
def meta(
    source: str = typer.Argument(..., help="Manifest (.csv/.parquet/.jsonl) whose columns to merge, or the pool "
                                 "folder/glob again (sets only `folder`)."),
    key: str = typer.Option("path", "--key", help="Match rows by 'path' (as embed resolved it, or the stored "
                            "relpath/absolute path) or by 'id' (a manifest with an id column)."),
    root: str = typer.Option(None, "--root", help="The --root the pool was embedded with, if any."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Merge metadata columns into images that are already embedded (no re-embedding).

    Vectors and curate's tags are kept; each matched image also gets `folder`. Re-running is safe:
    an interrupted merge is finished by running it again.

    Example: curate meta labels.csv --collection street
    """
    from curate.meta import merge_metadata
    from curate.payload_fields import rename_message
    from curate.sources import SourceError

    if key not in ("path", "id"):
        fail(f"--key {key!r}: use path or id")
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s, write=True) as st:
            report = merge_metadata(st, s.collection, source, key=key, root=root)
    except (SourceError, StoreError) as e:
        fail(str(e))
    if report.renamed:
        err_console.print(f"warning: {rename_message(report.renamed, source)}", highlight=False, markup=False)
    if report.matched == 0:
        fail(f"{source}: none of its {report.unmatched} row(s) matched an image in {s.collection!r}; "
             f"check --key and --root", code=1)
    console.print(report.summary(s.collection), highlight=False, markup=False)


@app.command()
def drop(
    name: str = typer.Argument(..., help="The collection to delete, with all its vectors and tags."),
    yes: bool = typer.Option(False, "--yes", help="Really delete (required; there is no undo)."),
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Delete a collection: its points, every encoder's vectors and its metadata. Image files are untouched.

    Example: curate drop old-pool --yes
    """
    s = settings(store=store, qdrant_url=qdrant_url)
    try:
        with store_from(s, write=True) as st:
            if not st.has_collection(name):
                fail(f"collection {name!r} not found in {st.location}; known: "
                     f"{', '.join(st.list_collections()) or 'none'}")
            points = st.count(name)
            if not yes:
                fail(f"this deletes collection {name!r} ({points} image(s)) from {st.location}; add --yes to do it")
            st.drop_collection(name)
    except StoreError as e:
        fail(str(e))
    where = s.qdrant_url or s.store
    console.print(f"dropped collection {name!r} ({points} image(s)) from {where}", highlight=False, markup=False)
