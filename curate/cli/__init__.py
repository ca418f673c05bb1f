"""The `curate` command line: a thin typer app. Each command module parses options, calls the
library, and renders results with rich; no analysis logic lives in the CLI."""

from __future__ import annotations

import typer

from curate.cli.help import CurateGroup

app = typer.Typer(
    name="curate",
    cls=CurateGroup,
    help="Curate image pools: embed into Qdrant, select what to label, dedup, slice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: no panels that cut lines, copyable examples
)


def _version(value: bool) -> None:
    if value:
        from curate import __version__

        typer.echo(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Curate image pools: embed into Qdrant, select what to label, dedup, slice."""


# Each module registers its commands on `app` when imported; `curate --help` lists them in
# workflow order (CurateGroup.ORDER), whatever the import order.
from curate.cli import dedup_cmds  # noqa: E402,F401,I001
from curate.cli import embed_cmds  # noqa: E402,F401
from curate.cli import evaluate_cmds  # noqa: E402,F401
from curate.cli import select_cmds  # noqa: E402,F401
from curate.cli import store_cmds  # noqa: E402,F401
from curate.cli import train_cmds  # noqa: E402,F401
from curate.cli import vectors_cmds  # noqa: E402,F401
from curate.cli import view_cmds  # noqa: E402,F401


def main() -> None:
    app()
