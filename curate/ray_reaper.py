"""Takes down the private Ray cluster curate started when curate itself dies (kill -9, OOM).

`ray.shutdown()` ends the cluster on a normal exit or Ctrl-C. After a SIGKILL nothing in curate
runs: Ray's head processes notice their driver is gone, but its agents (dashboard, runtime env)
lived on for 1-2 minutes here. This reaper is a tiny separate process: it remembers the pids of
curate's process tree every half second and, when the pipe from curate closes without the "done"
byte (curate died), kills what is still alive of them; after a clean ray.shutdown() it just exits.
Run as `python -m curate.ray_reaper PID` with the pipe's read end on stdin. Linux only (/proc);
elsewhere it is not started.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from curate.proctree import descendants, stat

POLL_S = 0.5


DONE = b"d"  # curate shut Ray down itself: nothing to kill


def watch(root: int) -> None:
    seen: dict[int, int] = {}
    while True:
        seen |= {pid: start for pid, start in descendants(root).items() if pid != os.getpid()}
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready:
            got = sys.stdin.buffer.read1(1)
            if got == DONE:
                return
            if not got:  # EOF without DONE: curate died
                break
    for pid, start in seen.items():
        st = stat(pid)
        if st is not None and st[2] == start:  # the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start() -> subprocess.Popen | None:
    """Start the reaper for this process's tree; curate keeps the returned Popen (its stdin is the
    pipe) and calls `stop` after ray.shutdown()."""
    if not Path("/proc").is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "curate.ray_reaper", str(os.getpid())], stdin=subprocess.PIPE,
                            start_new_session=True)  # not in curate's group: a Ctrl-C must not end it first


def stop(reaper: subprocess.Popen | None) -> None:
    """After a clean ray.shutdown(): tell the reaper it is done (it kills nothing) and reap it."""
    if reaper is None:
        return
    try:
        reaper.stdin.write(DONE)  # type: ignore[union-attr]
        reaper.stdin.close()  # type: ignore[union-attr]
    except OSError:  # it is gone already
        pass
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
