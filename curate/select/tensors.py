"""Moving embedding matrices onto the compute device, the way every strategy needs them.

Why a module: k-center, k-means and the density scores all hold the pool matrix in the storage
dtype (`curate.device.storage_dtype`: fp16 on GPU, fp32 on CPU) and all need products returned in
fp32, so that a fp16 GPU run compares the same fp32 numbers as a CPU run.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.device import pick_device, rows_per_chunk, storage_dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(device)


def to_storage(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The matrix on `device` in the storage dtype, without a full fp32 copy on the GPU.

    On CPU with a float32 C-contiguous numpy array this is zero-copy."""
    dtype = storage_dtype(device)
    if device.type == "cpu" and x.dtype in (np.float16, torch.float16):
        dtype = torch.float16  # an out-of-core (fp16 resident) pool stays fp16; products upcast per tile
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype).contiguous()
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix of vectors, got shape {x.shape}")
    if device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float16 if dtype == torch.float16 else np.float32))
    out = torch.empty(x.shape, dtype=dtype, device=device)
    step = rows_per_chunk(x.shape[1], torch.device("cpu"), fraction=0.02)
    for r0 in range(0, x.shape[0], step):  # host chunks: never a second fp32 copy of the pool
        out[r0 : r0 + step] = torch.from_numpy(np.ascontiguousarray(x[r0 : r0 + step], dtype=np.float32)).to(
            device, dtype
        )
    return out


def mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with fp32 output: fp16 inputs on GPU accumulate and return fp32 (no fp16 rounding of
    the products before a comparison); fp32 inputs use the plain GEMM/GEMV."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    squeeze = b.ndim == 1
    bb = b[:, None] if squeeze else b
    if a.device.type == "cpu":  # no fp32-output fp16 GEMM on CPU: upcast (callers pass row tiles)
        out = a.float() @ bb.float()
        return out[:, 0] if squeeze else out
    try:
        out = torch.mm(a, bb, out_dtype=torch.float32)
    except (TypeError, RuntimeError):  # no fp32-output GEMM for this backend: upcast
        out = a.float() @ bb.float()
    return out[:, 0] if squeeze else out


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared row norms in fp32, chunked so a fp16 matrix is never upcast whole."""
    if x.dtype == torch.float32:
        return torch.einsum("ij,ij->i", x, x)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    step = rows_per_chunk(x.shape[1], x.device, fraction=0.02)
    for r0 in range(0, x.shape[0], step):
        c = x[r0 : r0 + step].float()
        out[r0 : r0 + step] = torch.einsum("ij,ij->i", c, c)
    return out


def unit_rows(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """L2-normalized rows (zero rows stay zero), float32, or float16 for a fp16 (out-of-core)
    matrix. Store vectors already are; this makes the API safe for arbitrary input. `inplace`
    avoids a second copy of a large pool; rows are normalized in blocks, computed in fp32."""
    x = np.asarray(x)
    if x.dtype != np.float16:
        x = np.asarray(x, dtype=np.float32)
    out = x if inplace and x.flags.writeable else np.empty_like(x)
    step = max(1, (1 << 24) // max(1, x.shape[1])) if x.ndim == 2 else len(x)
    for r0 in range(0, len(x), step):
        c = x[r0 : r0 + step].astype(np.float32)
        out[r0 : r0 + step] = c / np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
    return out
