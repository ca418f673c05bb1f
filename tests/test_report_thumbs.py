"""Thumbnails: made for large images without loosening the decoder's bomb check for the process."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image


def test_thumbnail_of_a_large_image_leaves_the_bomb_limit_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so a 40x40 image is "large" for PIL
    from curate.report.thumbs import SIZE, make_thumb  # importing it must not change the limit

    assert Image.MAX_IMAGE_PIXELS == 1000
    src = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a leaked warning fails the test
        assert make_thumb(str(src), tmp_path / "t" / "big.webp")
    with Image.open(tmp_path / "t" / "big.webp") as thumb:
        assert thumb.size == (40, 40) and max(thumb.size) <= SIZE
    assert Image.MAX_IMAGE_PIXELS == 1000
