"""Commands: select (choose what to label next), labeled (record what has been labeled),
unselect (undo a round), export (hand a round to a labeling tool again)."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from curate.cli import app
from curate.cli.common import (
    CollectionOpt,
    DeviceOpt,
    EncoderOpt,
    QuietOpt,
    StoreOpt,
    UrlOpt,
    console,
    err_console,
    fail,
    settings,
    store_from,
)
from curate.cli.engine_opts import AddressOpt, EngineOpt, engine_session
from curate.select.config import AUTO_TYPICALITY_MAX
from curate.store import StoreError

STRATEGY_HELP = (
    f"auto (default: typicality when labeled+budget <= {AUTO_TYPICALITY_MAX}, else density-weighted k-center), "
    "kcenter, density-kcenter, typicality, density, uncertainty, similarity, random; with --predictions: "
    "uncertainty-kcenter, cluster-margin; badge (k-means++ seeding, e.g. on imported gradient embeddings)."
)


@app.command("select")
def select_cmd(
    budget: int = typer.Option(None, "--budget", "-n", min=1, help="How many images to pick."),
    fraction: float = typer.Option(None, "--fraction", help="Or pick this fraction of the selectable pool."),
    strategy: str = typer.Option(None, "--strategy", "-s", help=STRATEGY_HELP),
    config_file: str = typer.Option(None, "--config", help="Selection config (YAML/JSON) listing strategies "
                                    "with weights, thresholds and balance; flags below override its values."),
    balance_by: str = typer.Option(None, "--balance-by", help="Metadata key(s) for hard quotas, e.g. "
                                   "'weather' or 'weather,time_of_day' (joint cells); uniform by default."),
    balance_target: str = typer.Option(None, "--balance-target", help="Target table (.csv/.yaml/.json) of "
                                       "fractions or counts per mode (marginal: a .yaml/.json mapping each "
                                       "key to its table)."),
    balance_mode: str = typer.Option(None, "--balance-mode", help="joint (default: quotas per combination of "
                                     "the keys) or marginal (each key's quotas met at once)."),
    predictions: list[str] = typer.Option(None, "--predictions", help="Task-model predictions (.parquet/.csv "
                                          "with id or path, plus class probabilities or a score column); "
                                          "repeat it, or give a glob or folder, for ensemble members or "
                                          "MC-dropout passes."),
    uncertainty: str = typer.Option(None, "--uncertainty", help="entropy (default), margin, least_confidence "
                                    "(on the mean over files); bald, vote_entropy, variation_ratio (several "
                                    "files); or score (the file's score column)."),
    similar_to: list[str] = typer.Option(None, "--similar-to", help="Prefer images near this stored image "
                                         "(id or path); repeatable."),
    text: list[str] = typer.Option(None, "--text", help="Prefer images matching this prompt (encoders with a "
                                   "text tower); repeatable."),
    where: list[str] = typer.Option(None, "--where", help="Payload condition, e.g. 'width >= 256'; repeatable."),
    include_duplicates: bool = typer.Option(False, "--include-duplicates", help="Also pick images that dedup "
                                            "marked as duplicates."),
    min_distance: float = typer.Option(None, "--min-distance", help="k-center stops when every candidate is "
                                       "closer than this (Euclidean on unit vectors, 0-2) to a picked image."),
    seed: int = typer.Option(None, "--seed", help="Seed for k-means and random (default 0)."),
    name: str = typer.Option(None, "--name", help="Name of this selection (default round-N)."),
    out: str = typer.Option(None, "--out", "-o", help="Manifest file (.csv or .parquet) or folder; default "
                            "both formats under ./curate-out/COLLECTION/."),
    export_dir: str = typer.Option(None, "--export-dir", help="Also put the picked files here for a labeling tool."),
    export_mode: str = typer.Option("symlink", "--export-mode", help="symlink (default) or copy."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Preview: write NAME.preview.csv/.parquet only; do not "
                               "tag the store, export or use up a round number."),
    collection: str = CollectionOpt,
    encoder: str = EncoderOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    engine: str = EngineOpt,
    address: str = AddressOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Choose which images to label next; later rounds skip labeled and already picked images.

    Example: curate select --budget 500 --balance-by weather --where "width >= 256"

    Example: curate select --config select.yaml --export-dir to_label/
    """
    from curate.select.config import ConfigError, SelectionConfig, load_config, shorthand, with_overrides
    from curate.select.run import run_selection

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    keys = [k.strip() for k in balance_by.split(",") if k.strip()] if balance_by else None
    try:
        if config_file:
            if strategy or keys or balance_target or balance_mode or min_distance is not None:
                raise ConfigError("with --config, give strategies, balance and min_distance in the file, not "
                                  "as --strategy/--balance-by/--balance-target/--balance-mode/--min-distance")
            cfg = load_config(config_file)
        else:
            steps, label = shorthand(strategy or "auto", predictions=_one_or_many(predictions),
                                     similar=bool(similar_to or text), balance_by=keys,
                                     balance_target=balance_target, min_distance=min_distance,
                                     balance_mode=balance_mode)
            cfg = SelectionConfig(steps=steps, strategy=label)
        cfg = with_overrides(cfg, budget=budget, fraction=fraction, seed=seed, name=name, where=where or None,
                             include_duplicates=include_duplicates, predictions=_one_or_many(predictions),
                             uncertainty=uncertainty, similar_to=similar_to or None, text=text or None)
        say = (lambda _m: None) if quiet else (lambda m: err_console.print(m, highlight=False))
        with engine_session(engine, address) as ray, store_from(s, write=not dry_run) as st:
            res = run_selection(st, s.collection, cfg, encoder=encoder, device=s.device, out_dir=s.out, out=out,
                                export_dir=export_dir, export_mode=export_mode, dry_run=dry_run, log=say,
                                engine=_ray_engine(ray))
    except (ValueError, StoreError) as e:
        fail(str(e))
    for m in res.messages:
        err_console.print(f"[yellow]warning:[/] {m}", highlight=False)
    if not quiet and res.ids:
        cols = res.selection.columns
        t = Table(title=f"top picks ({res.strategy})")
        t.add_column("rank", justify="right")
        t.add_column("path", overflow="fold")
        shown = [k for k in ("distance", "density", "typicality", "uncertainty", "similarity", "group") if k in cols]
        for k in shown:
            t.add_column(k, justify="right")
        for r in range(min(10, len(res.ids))):
            vals = [cols[k][r] for k in shown]
            t.add_row(str(r + 1), str(res.paths[r] or res.ids[r]),
                      *[f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals])
        console.print(t)
    tag = " (dry run: store not tagged)" if res.dry_run else f" tagged selected_round={res.round}"
    console.print(
        f"selected {len(res.ids)} of {res.n_candidates} candidates as {res.name!r} with {res.strategy}{tag}; "
        f"manifest: {', '.join(str(p) for p in res.manifests)}"
        + (f"; exported {res.exported} files to {export_dir}" if export_dir and not res.dry_run else ""),
        highlight=False,
    )


def _ray_engine(ray: object) -> object:
    if ray is None:
        return None
    from curate.select.ray_select import RayEngine

    return RayEngine(ray)


def _one_or_many(files: list[str] | None) -> str | list[str] | None:
    return None if not files else files[0] if len(files) == 1 else list(files)


@app.command("labeled")
def labeled_cmd(
    file: str = typer.Argument(..., help="Manifest (.csv/.parquet with an id or path column, e.g. a select "
                               "manifest) or a text file with one id or path per line."),
    unset: bool = typer.Option(False, "--unset", help="Remove the labeled mark instead."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Mark images as labeled: later selection rounds skip them and treat them as covered.

    Example: curate labeled curate-out/street/round-1.csv --collection street
    """
    from curate.select.run import mark_labeled

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s, write=True) as st:
            changed, same = mark_labeled(st, s.collection, file, unset=unset,
                                         log=lambda m: err_console.print(f"[yellow]warning:[/] {m}", highlight=False))
    except (ValueError, StoreError) as e:
        fail(str(e))
    state = "unlabeled" if unset else "labeled"
    console.print(f"marked {changed} image(s) as {state} in {s.collection!r}"
                  + (f"; {same} already were" if same else ""), highlight=False)


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)  # names may hold [..]


@app.command("unselect")
def unselect_cmd(
    round_: int = typer.Option(None, "--round", "-r", min=1, help="Round number to undo."),
    name: str = typer.Option(None, "--name", help="Or the round's selection name."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Undo a selection round: remove its tags (its images become selectable again) and move its
    manifests into an archive/ folder beside them. Labeled marks stay.

    Example: curate unselect --round 3 --collection street
    """
    from curate.select.rounds import unselect_round

    if (round_ is None) == (name is None):
        fail("give --round N or --name NAME (one of them)")
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s, write=True) as st:
            got, n, archived = unselect_round(st, s.collection, name if name is not None else round_, s.out,
                                              say=_warn)
    except (ValueError, StoreError) as e:
        fail(str(e))
    console.print(f"unselected round {got!r}: {n} image(s) untagged"
                  + (f"; manifest archived to {', '.join(str(a) for a in archived)}" if archived else
                     "; no manifest found to archive"), highlight=False, markup=False)


@app.command("export")
def export_cmd(
    ref: str = typer.Argument(..., help="Round number or selection name."),
    to: str = typer.Option(..., "--to", help="Folder to write into."),
    mode: str = typer.Option("symlink", "--mode", help="symlink (default), copy, labelstudio (a tasks JSON) "
                             "or cvat (links plus a CVAT manifest.jsonl)."),
    url_prefix: str = typer.Option(None, "--url-prefix", help="labelstudio: turn image paths into URLs, e.g. "
                                   "'/data/local-files/?d=' for Label Studio's local file serving."),
    collection: str = CollectionOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
) -> None:
    """Export a selection round again: the store's tags say which images, its manifest their order
    and scores.

    Example: curate export round-2 --to to_label/ --mode labelstudio
    """
    from curate.select.rounds import export_round

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection)
    try:
        with store_from(s) as st:
            name, done, missing, notes = export_round(
                st, s.collection, ref, to, mode, s.out, url_prefix,
                say=_warn)
    except (ValueError, StoreError, OSError) as e:
        fail(str(e))
    for m in notes[:-1] if mode in ("labelstudio", "cvat") else notes:
        _warn(m)
    if missing:
        _warn(f"{missing} source files not found (moved or deleted?)")
    where = notes[-1] if mode in ("labelstudio", "cvat") else to
    console.print(f"exported round {name!r}: {done} image(s) as {mode} to {where}", highlight=False, markup=False)
