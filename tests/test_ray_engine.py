"""curate/ray_engine.py: argument checks that must answer in one line, fast, without a cluster."""

from __future__ import annotations

import socket
import time

import pytest

from curate.ray_engine import check_engine, check_reachable


def test_check_engine_refuses_unknown_engines():
    assert check_engine("ray") == "ray"
    with pytest.raises(ValueError, match="--engine must be one of local, ray"):
        check_engine("spark")


def test_unreachable_address_fails_fast_in_one_line():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}") as err:
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5 and "\n" not in str(err.value)


def test_reachable_address_passes_and_malformed_address_is_refused():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}")
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_reachable("somewhere")
