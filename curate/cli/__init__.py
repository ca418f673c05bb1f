"""The `curate` command line: a thin typer app. Each command module parses options, calls the
library, and renders results with rich; no analysis logic lives in the CLI."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="curate",
    help="Curate image pools: embed into Qdrant, select what to label, dedup, slice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on `app` when imported.
from curate.cli import dedup_cmds  # noqa: E402,F401,I001
from curate.cli import embed_cmds  # noqa: E402,F401
from curate.cli import evaluate_cmds  # noqa: E402,F401
from curate.cli import select_cmds  # noqa: E402,F401
from curate.cli import vectors_cmds  # noqa: E402,F401


def main() -> None:
    app()
