"""The one place where torch device, dtype and chunk sizes are chosen.

Every analysis asks this module instead of deciding on its own, so "the GPU makes it faster,
never different" holds: the same code path runs on CPU and GPU, only the device and the
storage dtype change.
"""

from __future__ import annotations

import os
import platform

import torch

from curate.config import check_device


def pick_device(preference: str | None = None) -> torch.device:
    """`preference` is "auto" (default), "cpu", "cuda" or "cuda:N"; CURATE_DEVICE overrides auto."""
    pref = check_device(preference or os.environ.get("CURATE_DEVICE") or "auto")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {pref}: CUDA is not available on this machine; use --device cpu")
    return torch.device(pref)


def storage_dtype(device: torch.device) -> torch.dtype:
    """Dtype for large embedding matrices: fp16 on GPU (half the bandwidth), fp32 on CPU
    (CPU fp16 matmuls are slow and not more accurate). Accumulation is always fp32."""
    return torch.float16 if device.type == "cuda" else torch.float32


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo), for benchmark reports; the architecture elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def rows_per_chunk(
    n_cols: int, device: torch.device, bytes_per_value: int = 4, fraction: float = 0.1, cap: int = 65536
) -> int:
    """How many rows of an (rows x n_cols) temporary fit in `fraction` of free memory.

    Used to size similarity tiles so memory stays O(N x chunk), never O(N^2)."""
    budget = free_memory_bytes(device) * fraction
    rows = int(budget // max(1, n_cols * bytes_per_value))
    return int(max(64, min(cap, rows)))
