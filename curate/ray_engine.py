"""`--engine ray`: the one place that imports Ray and joins or starts a Ray cluster.

Ray is an optional extra (`pip install -e '.[ray]'`); nothing else in curate imports it, so the
local engine never pays its import time, and a missing install is one actionable line."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from curate import ray_reaper

ENGINES = ("local", "ray")
INSTALL_HINT = "--engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')"


def check_engine(engine: str) -> str:
    """Validate an --engine value (before any heavy import)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, in one line, when a `host:port` cluster address does not answer: Ray itself
    retries an unreachable GCS for well over a minute before it raises."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address must be 'auto' or HOST:PORT of a Ray cluster, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ValueError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, or leave out --address to run a private local cluster"
        ) from None


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ValueError(INSTALL_HINT) from exc
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Yield the `ray` module with a connected cluster.

    Reuses a connection the caller already holds (tests, notebooks); otherwise connects to
    `address` ("auto" = the cluster `ray start` runs on this machine, or a `host:port`), or starts a
    private local cluster when `address` is None, and shuts down only what it started, so no Ray
    process of ours outlives the command."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if address not in (None, "auto"):
        check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:  # "auto" with no cluster running on this machine
        raise ValueError(f"no Ray cluster to join at --address {address}: {str(exc).splitlines()[0]}") from None
    reaper = ray_reaper.start() if address is None else None  # a private cluster dies with curate
    try:
        yield ray
    finally:
        ray.shutdown()
        ray_reaper.stop(reaper)
