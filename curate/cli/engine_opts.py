"""--engine / --address for the analyses (select, dedup): local by default, Ray on request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

EngineOpt = typer.Option("local", "--engine", help="local (default) or ray: run the heavy steps as Ray tasks "
                         "(needs pip install -e '.[ray]').")
AddressOpt = typer.Option(None, "--address", help="With --engine ray: a Ray cluster to join ('auto' = the one "
                          "'ray start' runs here, or host:port); default a private local cluster.")


@contextmanager
def engine_session(engine: str, address: str | None) -> Iterator[Any]:
    """None for the local engine, else the connected `ray` module (validated before any import)."""
    from curate.ray_engine import check_engine, ray_session

    if check_engine(engine) == "local":
        if address is not None:
            raise ValueError("--address needs --engine ray")
        yield None
        return
    with ray_session(address) as ray:
        yield ray
