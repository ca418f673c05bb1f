"""Run the pair verification of curate.dedup.verify over candidate pairs of a pool's image files:
decode each image once (only images in some candidate pair), keep its small signature in memory,
verify the pairs on a few threads (OpenCV releases the GIL), count what happened."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from curate.decode import DecodeError, decode_image, read_bytes
from curate.dedup.verify import WORK_SIDE, Signature, signature, thumb_vector, verify_pair

VERIFY_MODES = ("auto", "on", "off")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class VerifyStats:
    candidates: int = 0  # candidate pairs from the nearest neighbours (byte-identical ones included)
    from_thumbs: int = 0  # of those, pairs only the thumbnails' nearest neighbours proposed
    exact: int = 0  # candidates with the same bytes: no verification needed
    verified: int = 0  # pairs the images confirm as the same picture
    rejected: int = 0
    unreadable: int = 0  # pairs rejected because an image could not be read or decoded
    images: int = 0  # images decoded
    decode_s: float = 0.0
    verify_s: float = 0.0
    decode_cpu_s: float = 0.0  # CPU time of the process (all threads): robust to a busy machine
    verify_cpu_s: float = 0.0
    k: int = 0
    floor: float = 0.0
    workers: int = 1

    def line(self) -> str:
        ips = self.images / self.decode_s if self.decode_s else 0.0
        pps = (self.candidates - self.exact) / self.verify_s if self.verify_s else 0.0
        bad = f", {self.unreadable} with an unreadable image" if self.unreadable else ""
        extra = f", {self.from_thumbs} more from thumbnail neighbours" if self.from_thumbs else ""
        return (f"verified {self.candidates} candidate pairs (top-{self.k} neighbours at cosine >= {self.floor:g}"
                f"{extra}) "
                f"on the images: {self.verified} same picture, {self.rejected} rejected{bad}, {self.exact} "
                f"byte-identical; {self.images} images decoded at {ips:.0f}/s, {pps:.0f} pairs/s")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def unreadable_paths(paths: Sequence[str]) -> list[str]:
    """Paths that are not readable regular files (cheap: a stat per path, no decoding)."""
    return [p for p in paths if not (os.path.isfile(p) and os.access(p, os.R_OK))]


def _load(path: str) -> Signature | None:
    try:
        img, _ = decode_image(read_bytes(path), draft=(WORK_SIDE, WORK_SIDE))
        return signature(img)
    except (DecodeError, OSError, ValueError):
        return None


def load_signatures(paths: Sequence[str], nodes: np.ndarray, sigs: dict[int, Signature | None], ex: ThreadPoolExecutor,
                    progress: Progress | None = None) -> int:
    """Decode the images of `nodes` not in `sigs` yet (each image once per run); returns how many."""
    need = [int(i) for i in nodes if int(i) not in sigs]
    for n, (node, sig) in enumerate(zip(need, ex.map(lambda i: _load(paths[i]), need), strict=True), 1):
        sigs[node] = sig
        if progress and (n % 64 == 0 or n == len(need)):
            progress("decode", n, len(need))
    return len(need)


def verify_pairs(
    paths: Sequence[str],
    a: np.ndarray,
    b: np.ndarray,
    *,
    same_bytes: np.ndarray | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    sigs: dict[int, Signature | None] | None = None,
) -> tuple[np.ndarray, VerifyStats]:
    """Bool mask over pairs (a[k], b[k]) (indices into `paths`): True where the two images show the
    same picture. Pairs flagged in `same_bytes` are True without looking at the images. `sigs`: the
    signatures decoded so far (filled in; the images already there are not decoded again)."""
    n_pairs = len(a)
    ok = np.zeros(n_pairs, dtype=bool)
    exact = np.zeros(n_pairs, dtype=bool) if same_bytes is None else np.asarray(same_bytes, dtype=bool)
    ok[exact] = True
    todo = np.flatnonzero(~exact)
    workers = workers or default_workers()
    stats = VerifyStats(candidates=n_pairs, exact=int(exact.sum()), workers=workers)
    need = np.unique(np.concatenate([a[todo], b[todo]])) if len(todo) else np.empty(0, np.int64)
    sigs = {} if sigs is None else sigs
    t, c = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        decoded = load_signatures(paths, need, sigs, ex, progress)
        stats.images, stats.decode_s, stats.decode_cpu_s = decoded, time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()

        def check(k: int) -> tuple[bool, bool]:
            sa, sb = sigs[int(a[k])], sigs[int(b[k])]
            if sa is None or sb is None:
                return False, True
            return verify_pair(sa, sb).same, False

        # Keypoint checks spend their time in OpenCV, which releases the GIL: threads scale them (2x on
        # 2 cores). The tiny-image check is many small numpy/OpenCV calls that hold it: threads made
        # it 2x slower (measured: 257 pairs/s on 1 thread, 124 on 4), so those pairs run here.
        def local(k: int) -> bool:
            sa, sb = sigs[int(a[k])], sigs[int(b[k])]
            return sa is not None and sb is not None and sa.local and sb.local

        threaded = np.array([local(int(k)) for k in todo], dtype=bool)
        results = zip(todo[threaded], ex.map(check, todo[threaded]), strict=True)
        serial = ((k, check(int(k))) for k in todo[~threaded])
        for n, (k, (same, bad)) in enumerate(itertools.chain(results, serial), 1):
            ok[k] = same
            stats.unreadable += bad
            if progress and (n % 256 == 0 or n == len(todo)):
                progress("verify", n, len(todo))
    stats.verify_s, stats.verify_cpu_s = time.perf_counter() - t, time.process_time() - c
    stats.verified = int(ok[todo].sum())
    stats.rejected = len(todo) - stats.verified
    return ok, stats


class PairVerifier:
    """Checks candidate pairs of pool points (indices into `paths`) on their image files; keeps the
    counts of its last call in `stats` for the summary."""

    def __init__(self, paths: Sequence[str], *, hashes: Sequence[str | None] | None = None,
                 workers: int | None = None, progress: Progress | None = None) -> None:
        self.paths, self.hashes, self.workers, self.progress = paths, hashes, workers, progress
        self.stats = VerifyStats()
        self.sigs: dict[int, Signature | None] = {}
        self._thumb_decode = (0, 0.0, 0.0)  # images, wall s, CPU s spent decoding for thumbnails()

    def thumbnails(self, nodes: np.ndarray) -> np.ndarray:
        """[len(nodes), THUMB_SIDE^2] thumbnail vectors (curate.dedup.verify.thumb_vector) of these
        points' images, decoding each once; the signatures stay for the verification that follows."""
        t, c = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=self.workers or default_workers()) as ex:
            n = load_signatures(self.paths, nodes, self.sigs, ex, self.progress)
        self._thumb_decode = (n, time.perf_counter() - t, time.process_time() - c)
        return np.stack([thumb_vector(self.sigs[int(i)]) for i in nodes]) if len(nodes) else \
            np.zeros((0, 1), np.float32)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        same = None
        if self.hashes is not None:
            h = self.hashes
            same = np.array([bool(h[x]) and h[x] == h[y] for x, y in zip(a.tolist(), b.tolist(), strict=True)],
                            dtype=bool)
        ok, self.stats = verify_pairs(self.paths, a, b, same_bytes=same, workers=self.workers,
                                      progress=self.progress, sigs=self.sigs)
        n, wall, cpu = self._thumb_decode
        self.stats.images += n
        self.stats.decode_s += wall
        self.stats.decode_cpu_s += cpu
        return ok
