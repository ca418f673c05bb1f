"""Imported first by the decode workers' forkserver (as a preload module): ties its life to the
curate process that started it, so a kill -9 of curate takes the forkserver (and with it, through
their own PR_SET_PDEATHSIG, the workers) down at once instead of leaving them running.

The forkserver alone would wait for its "alive" pipe to close, but every worker holds a copy,
and workers wait for the forkserver: neither would ever exit. Does nothing in any other process.
"""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_ENV = "CURATE_FORKSERVER_PARENT"  # set by curate.embed only while it starts the forkserver


def _guard() -> None:
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or os.getppid() != int(parent):
        return  # not a forkserver started by curate's main thread
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the workers' own watch on curate still ends them
        return
    if os.getppid() != int(parent):  # curate died between the check and prctl
        os._exit(0)


_guard()
