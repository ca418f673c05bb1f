"""Similarity to a query set: prefer images near given examples or a text prompt.

The score of an image is its highest cosine similarity to any query vector (one nearest-neighbour
search through `curate.kernels.topk_similarity`, so a pool of any size costs one tiled pass).
As a weight it is mapped to (1 + cos) / 2 in [0, 1]; as a threshold the raw cosine is used.
Queries come from stored images (ids or paths; their vectors are read from the store, nothing is
re-embedded) or from text prompts through the encoder's text tower.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from curate.kernels import topk_similarity


class QueryError(ValueError):
    pass


def max_similarity(X: np.ndarray, queries: np.ndarray, *, device: str | torch.device | None = None) -> np.ndarray:
    """Highest cosine similarity of every row of X to any query row."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or len(q) == 0:
        raise QueryError("similarity needs at least one query vector")
    sims, _ = topk_similarity(X, q, 1, device=device)
    return sims[:, 0].astype(np.float32)


def resolve_query_ids(refs: list[str], payloads: dict[str, dict[str, Any]]) -> list[str]:
    """Map query references (point ids, absolute or relative paths) to point ids. Every point has a
    payload (it is written before the vector), so `payloads` names them all."""
    by_path: dict[str, str] = {}
    for pid, p in payloads.items():
        for key in ("relpath", "path"):
            if p.get(key):
                by_path[str(p[key])] = pid
    out = []
    for ref in refs:
        if ref in payloads:
            out.append(ref)
        elif ref in by_path:
            out.append(by_path[ref])
        elif os.path.abspath(ref) in by_path:
            out.append(by_path[os.path.abspath(ref)])
        else:
            raise QueryError(f"query image {ref!r} is not in the collection; give a stored id or path")
    return out


def text_queries(spec: dict[str, Any], prompts: list[str], device: torch.device) -> np.ndarray:
    """Embed prompts with the stored encoder's text tower (same space as the image vectors)."""
    from curate.encoders import EncoderError, encoder_from_spec

    try:
        enc = encoder_from_spec(spec, device)
        if not getattr(enc, "has_text", False):
            raise QueryError(f"encoder {enc.name!r} has no text tower; query with --similar-to images instead")
        vecs = enc.encode_texts(list(prompts))
    except EncoderError as e:
        raise QueryError(f"--text: {e}") from e
    vecs = np.asarray(vecs.cpu().numpy() if isinstance(vecs, torch.Tensor) else vecs, dtype=np.float32)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
