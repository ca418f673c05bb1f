"""Small WebP thumbnails, made once per image content and cached under the store.

Cache key: the image's sha256 (from `curate embed`), so a renamed or re-embedded file reuses its
thumbnail and a changed file gets a new one. The report gets copies (hard links when possible)
of just the thumbnails it shows, in one folder beside the HTML; full-size images are never copied.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

SIZE = 160  # longest side in pixels: sharp in a 120 px gallery tile on a 1.3x screen
QUALITY = 78


def cache_folder(store_location: str, fallback: Path) -> Path:
    """`<store>/.thumbs` for the embedded store; a folder under the outputs for a server."""
    loc = Path(store_location)
    return loc / ".thumbs" if loc.is_dir() else fallback / ".thumbs"


def make_thumb(src: str, dest: Path) -> bool:
    """Write one thumbnail; False when the source cannot be read (moved, deleted, corrupt)."""
    try:
        # The pool was decoded once already (up to curate's own pixel cap, under PIL's hard limit),
        # so PIL's size warning says nothing new here. Silence it locally: raising
        # Image.MAX_IMAGE_PIXELS would loosen the bomb check for every decode in the process.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                im.draft("RGB", (SIZE * 2, SIZE * 2))  # JPEG: decode at reduced scale, far faster
                im = ImageOps.exif_transpose(im)
                im.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
                rgb = im.convert("RGB")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        rgb.save(tmp, "WEBP", quality=QUALITY, method=4)
        os.replace(tmp, dest)
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def export_thumbs(
    items: list[tuple[str, str]],
    cache: Path,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> set[str]:
    """Make (or reuse) the thumbnails of (sha256, path) items and place them as `out_dir/<sha>.webp`.
    Returns the sha256 values that have a thumbnail."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    for k, (sha, path) in enumerate(items):
        if sha in done:
            continue
        cached = cache / sha[:2] / f"{sha}.webp"
        if not cached.exists() and not make_thumb(path, cached):
            continue
        target = out_dir / f"{sha}.webp"
        if not target.exists():
            try:
                os.link(cached, target)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(cached, target)
        done.add(sha)
        if progress and (k + 1) % 500 == 0:
            progress(k + 1, len(items))
    for old in out_dir.glob("*.webp"):  # thumbnails an earlier report showed and this one does not
        if old.stem not in done:
            old.unlink()
    return done
