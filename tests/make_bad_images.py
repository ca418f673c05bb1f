"""Write every awkward input a real image pool contains into one folder.

`write_bad_images(folder)` returns {file name: expected kind}, where the kind is "ok" for
files that must decode, or the `curate.decode.DecodeError.kind` they must fail with. The
decode tests and the pipeline tests share it, so both check the same cases.

Pixel content is fixed so tests can assert on it (see the constants below).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# exif_rotated.jpg is stored 100x50 (left half red, right half blue) with EXIF orientation 6
# ("rotate 90 degrees clockwise to display"): it must come out 50x100, red on top.
EXIF_STORED_SIZE = (100, 50)
EXIF_DISPLAY_SIZE = (50, 100)
# gray16.png is 64x16, a left-to-right ramp over the full 16-bit range.
GRAY16_SIZE = (64, 16)
# cmyk.jpg is pure CMYK red (C=0, M=255, Y=255, K=0).
CMYK_RED = (0, 255, 255, 0)
# palette_transparent.png: left half transparent (must become white), right half green.
# rgba.png: left half fully transparent, right half opaque blue.
UNICODE_NAME = "unicode_日本語_café_🙂.png"
BOMB_SIZE = (100_000, 100_000)


def _gradient_rgb(w: int = 64, h: int = 48) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = BOMB_SIZE[0], height: int = BOMB_SIZE[1]) -> bytes:
    """A 60-byte PNG whose header claims width x height pixels: a decompression bomb that is
    cheap to write and must be refused before any pixel is allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    w, h = EXIF_STORED_SIZE
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(arr, "RGB"), "JPEG", quality=95, exif=exif)


def gray16_png() -> bytes:
    w, h = GRAY16_SIZE
    ramp = np.linspace(0, 65535, w).round().astype(np.uint16)
    arr = np.tile(ramp, (h, 1))
    return _encode(Image.fromarray(arr), "PNG")


def palette_transparent_png() -> bytes:
    img = Image.new("P", (32, 16), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.paste(1, (16, 0, 32, 16))
    return _encode(img, "PNG", transparency=0)


def rgba_png() -> bytes:
    arr = np.zeros((16, 32, 4), np.uint8)
    arr[:, 16:] = (0, 0, 255, 255)
    return _encode(Image.fromarray(arr, "RGBA"), "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel stream is garbage (header and chunk CRCs are valid)."""
    img = _gradient_rgb()
    raw = _encode(img, "PNG")
    ihdr_end = 8 + 25
    garbage = bytes((i * 37 + 11) % 256 for i in range(400))
    return raw[:ihdr_end] + _png_chunk(b"IDAT", garbage) + _png_chunk(b"IEND", b"")


def _files() -> dict[str, tuple[bytes, str]]:
    rgb = _gradient_rgb()
    jpeg = _encode(rgb, "JPEG", quality=90)
    png = _encode(rgb, "PNG")
    return {
        "ok.jpg": (jpeg, "ok"),
        "ok.png": (png, "ok"),
        "zero_bytes.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "random_bytes.jpg": (bytes((i * 131 + 7) % 256 for i in range(2048)), "not_image"),
        "corrupt.png": (corrupt_png(), "corrupt"),
        "text_file.jpg": (b"this is not an image, just text with a .jpg name\n" * 20, "not_image"),
        "bomb.png": (bomb_png(), "bomb"),
        "cmyk.jpg": (_encode(Image.new("CMYK", (24, 16), CMYK_RED), "JPEG", quality=95), "ok"),
        "gray16.png": (gray16_png(), "ok"),
        "palette_transparent.png": (palette_transparent_png(), "ok"),
        "rgba.png": (rgba_png(), "ok"),
        "one_bit.png": (_encode(rgb.convert("1"), "PNG"), "ok"),
        "exif_rotated.jpg": (exif_rotated_jpeg(), "ok"),
        "animated.gif": (animated_gif(), "ok"),
        "image.webp": (_encode(rgb, "WEBP", quality=90), "ok"),
        "image.bmp": (_encode(rgb, "BMP"), "ok"),
        "image.tiff": (_encode(rgb, "TIFF"), "ok"),
        UNICODE_NAME: (png, "ok"),
        "unreadable.jpg": (jpeg, "permission"),
    }


def write_bad_images(folder: Path) -> dict[str, str]:
    """Write every case into `folder` (flat) and return {file name: expected kind or "ok"}.

    unreadable.jpg is chmod 000; root reads it anyway, so its expected kind is "ok" when running
    as root. broken_symlink.jpg points at a file that does not exist."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    for name, (data, kind) in _files().items():
        (folder / name).write_bytes(data)
        expected[name] = kind
    os.chmod(folder / "unreadable.jpg", 0)
    if os.geteuid() == 0:
        expected["unreadable.jpg"] = "ok"
    link = folder / "broken_symlink.jpg"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(folder / "does_not_exist.jpg")
    expected["broken_symlink.jpg"] = "broken_symlink"
    return expected
