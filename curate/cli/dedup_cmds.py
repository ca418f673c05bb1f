"""Commands: dedup, slice, leaks. Parse options, call curate.dedup / curate.slices /
curate.leaks, render with rich; expected errors become one line on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
from curate.store import StoreError, parse_where

WhereOpt = typer.Option(None, "--where", "-w", help="Payload condition(s), e.g. 'width >= 256'; repeat to AND.")
OutOpt = typer.Option(None, "--out", "-o", help="Output folder (default: ./curate-out/COLLECTION).")


def _say(text: str) -> None:
    """Plain text out: paths and summaries hold brackets that rich would read as markup."""
    console.print(text, highlight=False, markup=False)


def _errors() -> tuple[type[BaseException], ...]:
    from curate.encoders import EncoderError

    return (StoreError, ValueError, EncoderError)


def _out_dir(out: str | None, s) -> Path:  # noqa: ANN001 - config.Settings
    return Path(out) if out else Path(s.out) / s.collection


def _check_threshold(flag: str, value: float | None) -> None:
    if value is not None and not (-1.0 <= value <= 1.0):
        fail(f"{flag} {value} is outside [-1, 1]; cosine similarity lives there")


def _where(where: list[str] | None):  # noqa: ANN202
    try:
        return parse_where(where)
    except ValueError as e:
        fail(str(e))


# ------------------------------------------------------------------------------------------------
@app.command()
def dedup(
    threshold: float = typer.Option(None, "--threshold", "-t", help="Near-duplicate cut on cosine similarity "
                                    "(default: derived from the pool's nearest-neighbour similarities, never below "
                                    "a floor per encoder family; --suggest shows how)."),
    keep: str = typer.Option("largest", "--keep", help="Which member of a group to keep: largest (most pixels, "
                             "then bytes), first (first relative path), central (most similar to the rest)."),
    linkage: str = typer.Option("star", "--linkage", help="star: every member within the cut of its kept image "
                                "(images visited in --keep order; each one not yet grouped keeps the rest of its "
                                "neighbours); complete: of every other member; single: union-find (chains A~B~C)."),
    exact_only: bool = typer.Option(False, "--exact-only", help="Only byte-identical files (sha256); no vectors."),
    mode: str = typer.Option("auto", "--mode", help="exact (all pairs), clustered (k-means, pairs within "
                             "clusters; for very large pools) or auto (exact up to 300k on CPU / 5M on GPU; "
                             "clustered with --engine ray)."),
    clusters: int = typer.Option(None, "--clusters", min=1, help="Clustered mode: k-means clusters "
                                 "(default N/4000)."),
    probes: int = typer.Option(2, "--probes", min=1, help="Clustered mode: clusters each image joins."),
    suggest: bool = typer.Option(False, "--suggest", help="Print the nearest-neighbour similarity histogram, "
                                 "the threshold derived from it (with the reasoning) and pairs near the cut; "
                                 "writes nothing."),
    sample: int = typer.Option(5000, "--sample", min=2, help="Images sampled for the nearest-neighbour "
                               "statistics behind the default threshold and --suggest."),
    force: bool = typer.Option(False, "--force", help="Write the groups even when near copies would remove more "
                               "than 20% of the pool (otherwise dedup stops and shows the distribution)."),
    tags: bool = typer.Option(True, "--tags/--no-tags", help="Write dup_group / is_duplicate to the payload."),
    center: bool = typer.Option(False, "--center", help="Compare vectors after subtracting the pool's mean: "
                                "far fewer look-alikes flagged (see BENCHMARKS); thresholds then mean "
                                "centered cosine."),
    verify: str = typer.Option("auto", "--verify", help="Confirm near copies on the images: each image's "
                               "--candidates nearest neighbours are checked (keypoints + RANSAC, or registration + "
                               "correlation for tiny images). auto: on unless --threshold is given or the image "
                               "files cannot be read; on: --threshold is the candidates' cosine floor "
                               "(default 0.5); off: group by the cosine cut."),
    candidates: int = typer.Option(8, "--candidates", min=1, help="With --verify: nearest neighbours of each "
                                   "image that are checked."),
    where: list[str] = WhereOpt,
    out: str = OutOpt,
    collection: str = CollectionOpt,
    encoder: str = EncoderOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    engine: str = EngineOpt,
    address: str = AddressOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Find exact and near-duplicate images; write groups, keep/remove manifests and payload tags.
    Never deletes or moves a file.

    Example: curate dedup --threshold 0.96 --keep largest --out dedup-out/
    """
    from curate.dedup import TooManyDuplicates, run_dedup, suggest_threshold

    _check_threshold("--threshold", threshold)
    conds = _where(where)
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    try:
        with engine_session("local" if suggest else engine, None if suggest else address) as ray, \
                store_from(s, write=not suggest) as st, _bar(quiet) as progress:
            if suggest:
                ns, pool, choice = suggest_threshold(st, s.collection, encoder, where=conds, sample=sample,
                                                     device=s.device, center=center)
                _print_suggestion(ns, pool, choice, threshold)
                _print_sample_verification(ns, pool, choice, threshold, verify, progress)
                return
            res = run_dedup(
                st, s.collection, encoder, _out_dir(out, s), where=conds, write_tags=tags, threshold=threshold,
                exact_only=exact_only, keep=keep, linkage=linkage, mode=mode, n_clusters=clusters, probes=probes,
                device=s.device, center=center, force=force, sample=sample, verify=verify, candidates=candidates,
                progress=progress, **({"engine": ray} if ray else {}),
            )
    except TooManyDuplicates as e:
        if e.sample is not None and e.cut is not None:
            _print_suggestion(e.sample, None, e.cut, e.result.threshold)
        fail(str(e))
    except _errors() as e:
        fail(str(e))
    if res.verify_note:
        err_console.print(res.verify_note, highlight=False, markup=False)
    if not quiet and res.verify is not None:
        _say(res.verify.line())
    if not quiet and res.cut is not None:
        _say(f"threshold {res.cut.cut:.4f} derived from the pool: " + "; ".join(res.cut.reasoning()[:3]))
    if not quiet and res.n_groups:
        t = Table(title="largest duplicate groups")
        for c in ("size", "kept", "duplicates (similarity)"):
            t.add_column(c, overflow="fold")
        for g in res.table.partition_by("group", maintain_order=True)[:10]:
            kept = g.filter(g["kept"])["path"][0]
            dups = [f"{p} ({'-' if v is None else f'{v:.3f}'})" for p, v in
                    g.filter(~g["kept"]).select("path", "similarity").iter_rows()][:3]
            more = f" +{len(g) - 4} more" if len(g) > 4 else ""
            t.add_row(str(len(g)), escape(kept), escape("\n".join(dups) + more))
        console.print(t)
    _say(res.summary())
    if res.files:
        _say("wrote " + ", ".join(res.files))


@contextmanager
def _bar(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback (stage, done, total) drawing a bar on stderr; None when quiet or not a terminal."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, object] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        yield update


def _print_sample_verification(ns, pool, choice, given, verify, progress) -> None:  # noqa: ANN001
    """What verification makes of the sampled nearest-neighbour pairs (the dry run of `--verify`)."""
    from curate.dedup import CANDIDATE_FLOOR, sample_verification

    try:
        got = sample_verification(ns, pool, verify, given, progress=progress)
    except ValueError as e:
        fail(str(e))
    if got is None:
        return
    if isinstance(got, str):
        _say(got)
        return
    ok, near, stats = got
    cut = float(given) if given is not None else choice.cut
    floor = CANDIDATE_FLOOR if given is None else float(given)
    sims = ns.sims[near]
    _say(f"verification (--verify {verify}): {len(near)} sampled nearest-neighbour pairs at cosine >= {floor:g}: "
         f"{int(ok.sum())} the same picture ({int((ok & (sims < cut)).sum())} of them below the cut {cut:.4f}), "
         f"{int((~ok).sum())} rejected ({int((~ok & (sims >= cut)).sum())} of them at or above the cut); "
         f"{stats.images} images decoded in {stats.decode_s:.1f} s, pairs checked in {stats.verify_s:.1f} s")


def _print_suggestion(ns, pool, choice, given: float | None) -> None:  # noqa: ANN001
    """Histogram over the data's own range, the derived threshold with its reasoning, and (with a
    pool) the sampled pairs closest to the cut that is in use."""
    thr = float(given) if given is not None else choice.cut
    counts, edges, dec = ns.histogram(marks=(thr, choice.cut))
    width = 40
    top = max(int(counts.max()), 1)
    _say(f"nearest-neighbour cosine of {len(ns.sims)} sampled images (of {ns.n_total}):")
    w = dec + 3
    for k, (c, lo, hi) in enumerate(zip(counts, edges[:-1], edges[1:], strict=True)):
        last = k == len(counts) - 1
        marks = [name for name, v in (("suggested", choice.cut), ("--threshold", given), ("median", choice.median_nn))
                 if v is not None and (lo <= v < hi or (last and v >= lo))]
        bar = "#" * int(round(width * c / top))
        close = "]" if last else ")"
        _say(f"  [{lo:{w}.{dec}f}, {hi:{w}.{dec}f}{close} {c:7d} {bar}" + (f"  <- {', '.join(marks)}" if marks else ""))
    for line in choice.reasoning():
        _say(line)
    if given is not None:
        above = float((ns.sims >= thr).mean())
        _say(f"with --threshold {thr:g}: {100 * above:.1f}% of sampled images have a neighbour at or above it")
    if pool is None:
        return
    near = ns.near_cut(thr)
    if len(near):
        t = Table(title=f"pairs near the cut ({thr:.4f}): look at them to place it")
        for c in ("cosine", "image", "nearest neighbour"):
            t.add_column(c, overflow="fold")
        for k in near:
            a = pool.name(pool.node_of_row[ns.rows[k]])
            b = pool.name(pool.node_of_row[ns.neighbours[k]])
            t.add_row(f"{ns.sims[k]:.4f}", escape(a), escape(b))
        console.print(t)
    else:
        _say(f"no sampled pair within 0.02 of {thr:.4f}")


# ------------------------------------------------------------------------------------------------
@app.command("slice")
def slice_cmd(
    name: str = typer.Argument(..., help="Slice name: payload tag slice_NAME and manifest slice_NAME.csv."),
    text: list[str] = typer.Option(None, "--text", help="Text query through the encoder's text tower; repeat "
                                   "to average several phrasings."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template with '{}' (repeatable) "
                                       "[default: 8 photo templates]."),
    example: list[str] = typer.Option(None, "--example", "-e", help="Example image: id, stored path or an image "
                                      "file; repeatable."),
    example_mode: str = typer.Option("mean", "--example-mode", help="mean: rank by the examples' mean; each: the "
                                     "top-k neighbours of every example."),
    cluster: int = typer.Option(None, "--cluster", min=0, help="Slice = k-means cluster C (0 = largest)."),
    clusters: int = typer.Option(20, "--clusters", min=1, help="k for --cluster."),
    top_k: int = typer.Option(None, "--top-k", "-k", min=1, help="Keep the K best (per example with --example-mode "
                              "each; split evenly over groups with --balanced-by)."),
    threshold: float = typer.Option(None, "--threshold", "-t", help="Keep cosine >= T to the query."),
    balanced_by: str = typer.Option(None, "--balanced-by", help="Payload key: equal counts per value."),
    exclude_near: str = typer.Option(None, "--exclude-near", help="Drop images near this set: a slice or "
                                     "selection name, 'where:EXPR', or a manifest file."),
    exclude_threshold: float = typer.Option(None, "--exclude-threshold", help="Cosine counted as near for "
                                            "--exclude-near (default: the dedup default of the encoder)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the slice; write neither tags nor manifest."),
    where: list[str] = WhereOpt,
    out: str = OutOpt,
    collection: str = CollectionOpt,
    encoder: str = EncoderOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Build a named evaluation slice by text, example images, cluster or payload filter.

    Example: curate slice night_rain --text "a street at night in the rain" --top-k 500 --balanced-by camera
    """
    from curate.slices import SliceRequest, build_slice, save_slice

    _check_threshold("--threshold", threshold)
    _check_threshold("--exclude-threshold", exclude_threshold)
    req = SliceRequest(
        name=name, texts=list(text or []), templates=list(template) if template else None,
        examples=list(example or []), example_mode=example_mode, cluster=cluster, n_clusters=clusters,
        where=_where(where), top_k=top_k, threshold=threshold, balanced_by=balanced_by,
        exclude_near=exclude_near, exclude_threshold=exclude_threshold,
    )
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    try:
        with store_from(s) as st:
            sl = build_slice(st, s.collection, encoder, req, device=s.device)
            if not dry_run:
                save_slice(st, s.collection, sl, _out_dir(out, s))
    except _errors() as e:
        fail(str(e))
    if not quiet:
        t = Table(title=f"slice {name}: top {min(10, len(sl.ids))}")
        for c in ("rank", "score", "path"):
            t.add_column(c, overflow="fold")
        for r, sc, p in sl.table.head(10).select("rank", "score", "path").iter_rows():
            t.add_row(str(r), "-" if sc != sc else f"{sc:.4f}", escape(p))
        console.print(t)
    if sl.shortfall:
        err_console.print(f"balance: {sl.shortfall}", highlight=False, markup=False)
    _say(sl.summary())
    if sl.files:
        _say(f"tagged slice_{name} on {len(sl.ids)} points; wrote {', '.join(sl.files)}")


# ------------------------------------------------------------------------------------------------
@app.command()
def leaks(
    a: str = typer.Argument(..., help="First set (e.g. the training selection): slice or selection name, "
                            "'where:EXPR' or a manifest file."),
    b: str = typer.Argument(..., help="Second set (e.g. the eval slice), same forms."),
    threshold: float = typer.Option(None, "--threshold", "-t", help="Cosine counted as a near copy "
                                    "[default 0.95; 0.99 for the pixels encoder; 0.80 with --center]."),
    center: bool = typer.Option(False, "--center", help="Compare vectors after subtracting the mean vector of "
                                "the two sets together (as dedup --center): fewer look-alikes; thresholds then "
                                "mean centered cosine."),
    out: str = OutOpt,
    collection: str = CollectionOpt,
    encoder: str = EncoderOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Near-duplicate (and byte-identical) pairs across two sets, with counts and a manifest.

    Example: curate leaks train_round1 night_rain --threshold 0.95
    """
    from curate.leaks import find_leaks, leaks_stem, write_leaks

    _check_threshold("--threshold", threshold)
    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    try:
        with store_from(s) as st:
            rep = find_leaks(st, s.collection, encoder, a, b, threshold=threshold, device=s.device,
                             center=center)
    except _errors() as e:
        fail(str(e))
    files = write_leaks(rep, _out_dir(out, s), leaks_stem(a, b))
    if not quiet and rep.n_pairs:
        t = Table(title=f"closest pairs (of {rep.n_pairs})")
        for c in ("cosine", "A", "B"):
            t.add_column(c, overflow="fold")
        for sim, pa, pb, ex in rep.pairs.head(10).select("similarity", "a_path", "b_path", "exact").iter_rows():
            t.add_row(f"{sim:.4f}" + (" (same bytes)" if ex else ""), escape(pa), escape(pb))
        console.print(t)
    _say(rep.summary())
    _say(f"wrote {files[0]}")
