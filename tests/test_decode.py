"""Every bad input ends as a DecodeError with the right kind, every odd-but-valid input as a
correct RGB image; nothing hangs."""

from __future__ import annotations

import io
import os
import pickle
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from make_bad_images import (
    BOMB_SIZE,
    EXIF_DISPLAY_SIZE,
    GRAY16_SIZE,
    UNICODE_NAME,
    exif_rotated_jpeg,
    write_bad_images,
)
from PIL import Image, ImageFile

from curate.decode import (
    DecodeError,
    decode_file,
    decode_image,
    read_bytes,
    sha256_hex,
    time_limit,
    to_rgb,
)

REASON_START = {
    "empty": "empty file",
    "truncated": "truncated image",
    "not_image": "not an image",
    "corrupt": "corrupt image",
    "bomb": "decompression bomb",
    "broken_symlink": "broken symlink",
    "permission": "permission denied",
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_images(folder)


def _decode(path, **kw):
    return decode_image(read_bytes(path), **kw)


def _kind(path) -> str:
    try:
        _decode(path)
    except DecodeError as e:
        assert e.reason.startswith(REASON_START[e.kind]), e.reason
        return e.kind
    return "ok"


def test_every_case_gets_its_expected_outcome(bad):
    folder, expected = bad
    got = {name: _kind(folder / name) for name in expected}
    assert got == expected
    # the helper covers what the issue lists, so the pipeline tests can rely on it
    kinds = set(expected.values())
    assert {"ok", "empty", "truncated", "not_image", "corrupt", "bomb", "broken_symlink"} <= kinds
    assert {"truncated.jpg", "truncated.png", "cmyk.jpg", "gray16.png", "exif_rotated.jpg", UNICODE_NAME} <= set(
        expected
    )


def test_ok_images_are_rgb_with_true_sizes_and_formats(bad):
    folder, expected = bad
    sizes = {
        "image.webp": ((64, 48), "WEBP"),
        "image.bmp": ((64, 48), "BMP"),
        "image.tiff": ((64, 48), "TIFF"),
        "ok.jpg": ((64, 48), "JPEG"),
        UNICODE_NAME: ((64, 48), "PNG"),
        "cmyk.jpg": ((24, 16), "JPEG"),
        "gray16.png": (GRAY16_SIZE, "PNG"),
        "animated.gif": ((20, 10), "GIF"),
        "one_bit.png": ((64, 48), "PNG"),
    }
    for name, (size, fmt) in sizes.items():
        img, info = _decode(folder / name)
        assert img.mode == "RGB", name
        assert img.size == size and (info["width"], info["height"]) == size, name
        assert info["format"] == fmt, name


def test_lossless_formats_keep_exact_pixels(bad):
    folder, _ = bad
    ref = np.asarray(_decode(folder / "ok.png")[0])
    for name in ("image.bmp", "image.tiff", UNICODE_NAME):
        assert np.array_equal(np.asarray(_decode(folder / name)[0]), ref), name


def test_exif_rotation_is_applied_to_size_and_pixels(bad):
    folder, _ = bad
    img, info = _decode(folder / "exif_rotated.jpg")
    assert img.size == EXIF_DISPLAY_SIZE
    assert (info["width"], info["height"]) == EXIF_DISPLAY_SIZE
    a = np.asarray(img).astype(int)
    top, bottom = a[10, 25], a[90, 25]  # stored left half (red) is displayed on top
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_draft_decodes_big_jpeg_smaller_but_reports_full_rotated_size():
    arr = np.zeros((800, 1600, 3), np.uint8)
    arr[:, :800] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, exif=exif)
    img, info = decode_image(buf.getvalue(), draft=(200, 200))
    assert (info["width"], info["height"]) == (800, 1600)  # full size, after rotation
    assert img.size == (200, 400)  # libjpeg at 1/4: still >= 200 on the short side
    assert np.asarray(img)[20, 100, 0] > 200  # red still on top after the rotation


def test_draft_never_goes_below_requested_size():
    buf = io.BytesIO()
    Image.new("RGB", (1000, 700), (0, 128, 0)).save(buf, "JPEG")
    img, info = decode_image(buf.getvalue(), draft=(224, 224))
    assert (info["width"], info["height"]) == (1000, 700)
    assert img.size == (500, 350)  # 1/2 scale: 1/4 would give 175 < 224


def test_cmyk_becomes_rgb_red(bad):
    folder, _ = bad
    px = np.asarray(_decode(folder / "cmyk.jpg")[0])[8, 12].astype(int)
    assert px[0] > 230 and px[1] < 25 and px[2] < 25, px


def test_16bit_gray_is_scaled_not_clipped(bad):
    folder, _ = bad
    a = np.asarray(_decode(folder / "gray16.png")[0]).astype(int)
    ramp = np.round(np.linspace(0, 65535, GRAY16_SIZE[0]) * 255 / 65535)
    assert np.abs(a[0, :, 0] - ramp).max() <= 1
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255 and 120 <= a[0, 32, 0] <= 135
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_transparency_is_composited_on_white(bad):
    folder, _ = bad
    pal = np.asarray(_decode(folder / "palette_transparent.png")[0])
    assert tuple(pal[8, 4]) == (255, 255, 255) and tuple(pal[8, 24]) == (0, 255, 0)
    rgba = np.asarray(_decode(folder / "rgba.png")[0])
    assert tuple(rgba[8, 4]) == (255, 255, 255) and tuple(rgba[8, 24]) == (0, 0, 255)


def test_gif_gives_first_frame_and_one_bit_gives_black_and_white(bad):
    folder, _ = bad
    gif = np.asarray(_decode(folder / "animated.gif")[0])
    assert tuple(gif[5, 10]) == (255, 0, 0)
    one = np.asarray(_decode(folder / "one_bit.png")[0])
    assert set(np.unique(one)) <= {0, 255} and len(np.unique(one)) == 2


def test_high_bit_depth_modes_scale_by_range():
    as_i = to_rgb(Image.fromarray(np.array([[0, 65535]], np.int32), "I"))
    assert np.asarray(as_i)[0, :, 0].tolist() == [0, 255]
    wide = to_rgb(Image.fromarray(np.array([[-10, 0, 90]], np.int32), "I"))  # beyond 16 bits: min-max
    assert np.asarray(wide)[0, :, 0].tolist() == [0, 26, 255]
    as_f = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F"))
    assert np.asarray(as_f)[0, :, 0].tolist() == [0, 128, 255]


def test_bombs_are_refused_before_decoding(bad):
    folder, _ = bad
    with pytest.raises(DecodeError) as e:
        _decode(folder / "bomb.png")
    assert e.value.kind == "bomb" and str(BOMB_SIZE[0] * BOMB_SIZE[1]) in e.value.reason
    # our own limit, below PIL's: refused with numbers, and no DecompressionBombWarning leaks
    data = read_bytes(folder / "ok.png")
    with pytest.raises(DecodeError) as e:
        decode_image(data, max_pixels=1000)
    assert e.value.kind == "bomb" and "64x48 = 3072 pixels > limit 1000" in e.value.reason


def test_pil_warning_range_is_not_a_warning(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3072 px: above PIL's warning, below its error
    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, _ = decode_image(buf.getvalue(), max_pixels=10_000)
    assert img.size == (64, 48)


def test_truncated_files_fail_without_global_pil_flag(bad):
    folder, _ = bad
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name in ("truncated.jpg", "truncated.png"):
        with pytest.raises(DecodeError) as e:
            _decode(folder / name)
        assert (e.value.kind, e.value.reason) == ("truncated", "truncated image")


def test_read_bytes_filesystem_failures(tmp_path):
    with pytest.raises(DecodeError) as e:
        read_bytes(tmp_path / "missing.jpg")
    assert (e.value.kind, e.value.reason) == ("not_found", "file not found")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(DecodeError) as e:
        read_bytes(tmp_path / "dir.jpg")
    assert (e.value.kind, e.value.reason) == ("not_file", "is a directory")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 100)
    with pytest.raises(DecodeError) as e:
        read_bytes(big, max_bytes=10)
    assert e.value.kind == "too_large" and "100 bytes" in e.value.reason
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(DecodeError) as e:
        read_bytes(loop)
    assert e.value.kind == "broken_symlink"


def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(DecodeError) as e:
        read_bytes(fifo)
    assert e.value.kind == "not_file" and time.monotonic() - t0 < 1


def test_unreadable_file(tmp_path):
    p = tmp_path / "secret.jpg"
    p.write_bytes(b"\xff\xd8 some bytes")
    p.chmod(0)
    if os.geteuid() == 0:  # root reads anything: the code path runs, the refusal cannot happen
        assert read_bytes(p) == b"\xff\xd8 some bytes"
    else:
        with pytest.raises(DecodeError) as e:
            read_bytes(p)
        assert (e.value.kind, e.value.reason) == ("permission", "permission denied")


def test_decode_file_adds_hash_and_size(bad):
    folder, _ = bad
    data = (folder / "ok.jpg").read_bytes()
    img, info = decode_file(folder / "ok.jpg", draft=(32, 32), timeout=5)
    assert info["sha256"] == sha256_hex(data) and info["bytes"] == len(data)
    assert img.size == (64, 48)  # draft never shrinks below the request
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_decode_error_survives_pickling():
    e = pickle.loads(pickle.dumps(DecodeError("truncated image", "truncated")))
    assert isinstance(e, DecodeError)
    assert (e.reason, e.kind, str(e)) == ("truncated image", "truncated", "truncated image")


def test_time_limit_interrupts_slow_work_and_restores_handler():
    def previous(signum, frame):
        pass

    old = signal.signal(signal.SIGALRM, previous)
    try:
        t0 = time.monotonic()
        with pytest.raises(DecodeError) as e, time_limit(0.3):
            time.sleep(5)
        elapsed = time.monotonic() - t0
        assert 0.25 < elapsed < 1.0
        assert (e.value.kind, e.value.reason) == ("timeout", "timed out after 0.3 s")
        assert signal.getsignal(signal.SIGALRM) is previous
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
        with time_limit(0.5):  # fast work is untouched
            x = sum(range(1000))
        assert x == 499500
    finally:
        signal.signal(signal.SIGALRM, old)


def test_time_limit_inner_longer_than_outer_keeps_outer_deadline():
    t0 = time.monotonic()
    with pytest.raises(DecodeError) as e, time_limit(0.3), time_limit(5):
        time.sleep(5)
    assert time.monotonic() - t0 < 1.0 and "0.3 s" in e.value.reason
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_time_limit_is_noop_off_main_thread_and_for_none():
    result = []

    def work():
        with time_limit(0.05):
            time.sleep(0.15)
        result.append("finished")

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert result == ["finished"]
    with time_limit(None):
        time.sleep(0.01)


def test_exif_jpeg_helper_is_really_stored_landscape():
    raw = Image.open(io.BytesIO(exif_rotated_jpeg()))
    assert raw.size == (100, 50) and raw.getexif()[0x0112] == 6
