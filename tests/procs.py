"""Process helpers for the orphan checks (the tree itself is read by curate.proctree)."""

from __future__ import annotations

import time
from pathlib import Path

from curate.proctree import all_pids as _all_pids
from curate.proctree import descendants  # noqa: F401 - the tests import it from here
from curate.proctree import stat as _stat


def still_alive(procs: dict[int, int]) -> dict[int, str]:
    """The processes of `procs` that still run (zombies count as gone), with their command lines."""
    alive = {}
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[2] == start:
            alive[pid] = cmdline(pid)
    return alive


def wait_gone(procs: dict[int, int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (alive := still_alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def with_env_token(name: str, value: str) -> dict[int, str]:
    """Live processes whose environment holds name=value, with their command lines."""
    needle = f"{name}={value}".encode()
    found = {}
    for pid in _all_pids():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        st = _stat(pid)
        if needle in env and st is not None and st[0] != "Z":
            found[pid] = cmdline(pid)
    return found
