"""Command: evaluate (simulate labeling with several strategies on a labeled sample; recommend one)."""

from __future__ import annotations

from pathlib import Path

import typer
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
from curate.store import StoreError


@app.command("evaluate")
def evaluate_cmd(
    labels: str = typer.Option(..., "--labels", help="CSV/Parquet of labeled pool images: an id or path column "
                               "and a label column."),
    label_column: str = typer.Option("label", "--label-column", help="The label column."),
    budgets: str = typer.Option("10,20,50,100", "--budgets", help="Cumulative labeling budgets, e.g. 10,20,50."),
    strategies: str = typer.Option("auto,kcenter,typicality,random", "--strategies", help="Comma-separated "
                                   "strategies; uncertainty, uncertainty-kcenter and cluster-margin use the "
                                   "previous round's probe as the task model."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Repetitions (test split and strategy seed)."),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Share of the labeled images held out "
                                        "to score the probe."),
    out: str = typer.Option(None, "--out", "-o", help="Folder for evaluate.csv, evaluate-summary.csv and "
                            "evaluate.png (default ./curate-out/)."),
    collection: str = CollectionOpt,
    encoder: str = EncoderOpt,
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Simulate labeling rounds with each strategy on a labeled sample and recommend one.

    A linear probe (logistic regression on the stored embeddings) is trained on each strategy's
    picks at each budget and scored on held-out labeled images, over several seeds.

    Example: curate evaluate --labels sample.csv --label-column class --budgets 10,20,50 --seeds 3
    """
    from curate.evaluate import (
        check_strategies,
        evaluate_store,
        parse_budgets,
        parse_list,
        plot_curves,
    )
    from curate.files import write_atomic

    s = settings(store=store, qdrant_url=qdrant_url, collection=collection, device=device)
    say = (lambda _m: None) if quiet else (lambda m: err_console.print(m, highlight=False))
    try:
        bud = parse_budgets(budgets)
        strat = check_strategies(parse_list(strategies, "strategies"))
        with store_from(s) as st:
            res = evaluate_store(st, s.collection, labels, label_column, bud, strat, seeds, encoder=encoder,
                                 test_fraction=test_fraction, device=s.device, log=say)
    except (ValueError, StoreError) as e:
        fail(str(e))
    folder = Path(out) if out else Path(s.out)
    csv = write_atomic(folder / "evaluate.csv", res.runs.write_csv)
    summary_csv = write_atomic(folder / "evaluate-summary.csv", res.summary.write_csv)
    png = plot_curves(res, folder / "evaluate.png")
    t = Table(title=f"test accuracy, mean ± std over {seeds} seed(s) ({res.n_pool} selectable, "
                    f"{res.n_test} test images, {res.classes} classes)")
    t.add_column("strategy")
    for b in bud:
        t.add_column(str(b), justify="right")
    t.add_column("mean", justify="right")
    for name in strat:
        part = res.summary.filter(res.summary["strategy"] == name).sort("budget")
        cells = [f"{m:.3f} ± {sd:.3f}" for m, sd in zip(part["mean"], part["std"], strict=True)]
        mark = " *" if name == res.recommended else ""
        t.add_row(name + mark, *cells, f"{part['mean'].mean():.3f}")
    console.print(t)
    console.print(f"recommended: {res.verdict}", highlight=False)
    console.print(f"wrote {csv}, {summary_csv}, {png}", highlight=False)
