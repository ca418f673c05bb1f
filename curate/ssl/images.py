"""The images a self-supervised run trains on, decoded once and kept small in memory.

Augmentations crop and recolour every image twice per epoch; decoding full-size files that
often would dominate the run, so each image is decoded once (JPEG draft mode), shrunk so its
shorter side is the training size, and kept as a PIL image (a few KB each at 32-64 px)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from curate.decode import DecodeError, decode_file


@dataclass
class TrainImages:
    images: list[Image.Image]
    paths: list[str]  # one per image, in training order
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), skipped


def _shrink(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) <= side:
        return img
    scale = side / min(w, h)
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)


def load_images(
    paths: list[str], side: int, on_progress: Callable[[int, int], None] | None = None
) -> TrainImages:
    """Decode `paths` (sorted for a deterministic order); unreadable files are skipped and listed."""
    out = TrainImages([], [])
    ordered = sorted(paths)
    for i, path in enumerate(ordered, 1):
        try:
            img, _ = decode_file(path, draft=(side, side), timeout=60)
            out.images.append(_shrink(img, side))
            out.paths.append(path)
        except DecodeError as e:
            out.failed.append((path, e.reason))
        except Exception as e:  # noqa: BLE001 - any one bad file is skipped, never the whole run
            out.failed.append((path, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
        if on_progress is not None and (i % 256 == 0 or i == len(ordered)):
            on_progress(i, len(ordered))
    return out
