"""Bytes to RGB images that never hang and never crash the run.

Every way a file can be bad ends in one exception type, `DecodeError`, with a short human
`reason` (shown to users) and a stable `kind` (for code and tests). The pipeline records the
error and moves on; one pathological file must not stop or stall a job of millions.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Larger than any camera sensor (a 100 MP medium-format frame), small enough that a bomb
# cannot take gigabytes. Note PIL itself refuses above 2 * Image.MAX_IMAGE_PIXELS (~179 MP)
# in Image.open; a caller who needs more must raise Image.MAX_IMAGE_PIXELS as well.
DEFAULT_MAX_PIXELS: int = 150_000_000
# A file larger than this is not read into memory at all.
DEFAULT_MAX_BYTES: int = 512 * 1024 * 1024

# Stable failure kinds (DecodeError.kind).
NOT_FOUND = "not_found"
BROKEN_SYMLINK = "broken_symlink"
PERMISSION = "permission"
NOT_FILE = "not_file"
EMPTY = "empty"
TOO_LARGE = "too_large"
IO_ERROR = "io_error"
NOT_IMAGE = "not_image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
BOMB = "bomb"
TIMEOUT = "timeout"
UNSUPPORTED = "unsupported"

_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # transpose/rotate by 90 or 270 degrees


class DecodeError(Exception):
    """A file that cannot become an image. `reason` is for people, `kind` for code."""

    def __init__(self, reason: str, kind: str = CORRUPT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # survives pickling across DataLoader worker processes
        return (type(self), (self.reason, self.kind))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


def _stat_or_raise(p: Path) -> os.stat_result:
    try:
        return os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise DecodeError("broken symlink", BROKEN_SYMLINK) from None
        raise DecodeError("file not found", NOT_FOUND) from None
    except PermissionError:
        raise DecodeError("permission denied", PERMISSION) from None
    except OSError as e:
        if os.path.islink(p):  # ELOOP and friends
            raise DecodeError(f"broken symlink ({e.strerror})", BROKEN_SYMLINK) from None
        raise DecodeError(f"cannot stat file ({e.strerror})", IO_ERROR) from None


def read_bytes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole file, turning every filesystem problem into a DecodeError.

    Non-regular files (directories, FIFOs, devices) are refused before open(), because
    opening a FIFO blocks forever and would hang a worker."""
    p = Path(path)
    st = _stat_or_raise(p)
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("is a directory", NOT_FILE)
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file", NOT_FILE)
    if st.st_size == 0:
        raise DecodeError("empty file", EMPTY)
    if st.st_size > max_bytes:
        raise DecodeError(f"file too large ({st.st_size} bytes > limit {max_bytes})", TOO_LARGE)
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except PermissionError:
        raise DecodeError("permission denied", PERMISSION) from None
    except OSError as e:
        raise DecodeError(f"read error ({e.strerror or e})", IO_ERROR) from None
    if not data:
        raise DecodeError("empty file", EMPTY)
    if len(data) > max_bytes:
        raise DecodeError(f"file too large (> limit {max_bytes} bytes)", TOO_LARGE)
    return data


# ---------------------------------------------------------------------------------------------
# Decoding


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only, and refuse bombs before any pixel is decoded."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognized format)", NOT_IMAGE) from None
    except Image.DecompressionBombError as e:
        raise DecodeError(f"decompression bomb ({e})", BOMB) from None
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, not a crash
        raise _classify(e) from None
    w, h = img.size
    if w * h > max_pixels:
        raise DecodeError(f"decompression bomb ({w}x{h} = {w * h} pixels > limit {max_pixels})", BOMB)
    if w <= 0 or h <= 0:
        raise DecodeError(f"corrupt image (size {w}x{h})", CORRUPT)
    return img


def _classify(e: BaseException) -> DecodeError:
    msg = str(e)
    if "truncated" in msg.lower() or isinstance(e, EOFError):
        return DecodeError("truncated image", TRUNCATED)
    short = msg.splitlines()[0][:120] if msg else ""
    return DecodeError(f"corrupt image ({type(e).__name__}: {short})", CORRUPT)


def _orientation(img: Image.Image) -> int:
    """EXIF orientation read from the header. JPEG only: for PNG, getexif() loads the pixels
    and would swallow a decode error here."""
    if img.format != "JPEG":
        return 1
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        return 1


def _apply_draft(img: Image.Image, draft: tuple[int, int] | None) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the requested size."""
    if draft is None or img.format != "JPEG":
        return
    if _orientation(img) in _SWAPPING_ORIENTATIONS:  # the draft size is meant for the displayed image
        draft = (draft[1], draft[0])
    img.draft("RGB", draft)


def _load(img: Image.Image) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by someone: truncated files will decode as "
            "partly grey images instead of being reported",
            RuntimeWarning,
            stacklevel=3,
        )
    try:
        img.load()
    except DecodeError:  # a time_limit() alarm fired inside load()
        raise
    except Exception as e:  # noqa: BLE001
        raise _classify(e) from None


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        from PIL import ImageOps

        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - keep the pixels even when EXIF is malformed
        return img


def _on_white(img: Image.Image) -> Image.Image:
    """Transparent pixels become white, like every image viewer shows them on a page."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale to 8-bit by scaling, not clipping.

    PIL's own convert("L") clips everything above 255 to white, which turns a normal 16-bit
    photo into a white square. 16-bit data is scaled by 255/65535; other ranges by min-max."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = a.astype(np.float32) * (255.0 / 65535.0)
    elif img.mode == "F" and a.size and np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0:
        out = a.astype(np.float32) * 255.0
    elif img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535:
        out = a.astype(np.float32) * (255.0 / 65535.0)
    else:
        a = np.nan_to_num(a.astype(np.float64))
        lo, hi = float(a.min()), float(a.max())
        out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Every PIL mode to 8-bit RGB: alpha onto white, CMYK and palettes converted, high bit
    depth scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return _on_white(img)
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_l(img).convert("RGB")
    try:
        return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - exotic modes PIL cannot convert
        raise DecodeError(f"unsupported image mode {mode} ({e})", UNSUPPORTED) from None


def decode_image(
    data: bytes,
    *,
    draft: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, dict]:
    """Decode bytes into a fully loaded RGB image with the EXIF orientation applied.

    Returns (image, info) where info holds "width", "height" (of the full-size image after
    EXIF rotation, even when `draft` decoded it smaller) and "format" (PIL's name, e.g. "JPEG").
    `draft=(w, h)`: JPEGs are decoded by libjpeg at the largest 1/2, 1/4 or 1/8 scale that is
    still at least (w, h) - several times faster for big photos that get resized anyway.
    Animated images give their first frame. Raises DecodeError for anything else."""
    if not data:
        raise DecodeError("empty file", EMPTY)
    with warnings.catch_warnings():
        # We enforce max_pixels ourselves; PIL's warning for big-but-allowed images is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _open(data, max_pixels)
        fmt = img.format or "unknown"
        full_w, full_h = img.size
        _apply_draft(img, draft)
        _load(img)
        loaded_size = img.size
        img = _exif_transpose(img)
        if img.size != loaded_size and img.size == loaded_size[::-1]:
            full_w, full_h = full_h, full_w
        img = to_rgb(img)
    return img, {"width": int(full_w), "height": int(full_h), "format": fmt}


def decode_file(
    path: str | Path,
    *,
    draft: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float | None = None,
) -> tuple[Image.Image, dict]:
    """read_bytes + decode_image under one time limit; info also gets "bytes" and "sha256"."""
    with time_limit(timeout):
        data = read_bytes(path)
        img, info = decode_image(data, draft=draft, max_pixels=max_pixels)
    info["bytes"] = len(data)
    info["sha256"] = sha256_hex(data)
    return img, info


# ---------------------------------------------------------------------------------------------
# Time limit


def _alarm_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise DecodeError("timed out after N s") in the block after `seconds` of wall time.

    Uses SIGALRM, so it works only on the main thread of a process (DataLoader workers are
    processes: it works there); elsewhere, or with seconds None/<= 0, it is a no-op. Python
    checks signals between bytecodes, so pure-C work (one huge resize) finishes first; PIL
    decodes in chunks and is interrupted between them. An outer time_limit still fires on time:
    the earlier deadline is armed, and the previous handler and timer are restored on exit."""
    if not seconds or seconds <= 0 or not _alarm_usable():
        yield
        return
    start = time.monotonic()
    deadline = start + seconds
    old_delay, old_interval = signal.getitimer(signal.ITIMER_REAL)
    outer_deadline = start + old_delay if old_delay > 0 else None

    def _handler(signum, frame):  # noqa: ANN001 - signal handler signature
        if outer_deadline is not None and outer_deadline <= deadline and callable(old_handler):
            old_handler(signum, frame)
        raise DecodeError(f"timed out after {seconds:g} s", TIMEOUT)

    old_handler = signal.signal(signal.SIGALRM, _handler)
    first = min(seconds, old_delay) if outer_deadline is not None else seconds
    signal.setitimer(signal.ITIMER_REAL, first)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer_deadline is not None:
            remaining = outer_deadline - time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), old_interval)
