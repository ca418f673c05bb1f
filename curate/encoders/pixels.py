"""`pixels`: a 16x16 thumbnail, flattened and L2-normalized (768 numbers).

An honest baseline, not a semantic encoder. It knows nothing about objects or scenes: two
photos of the same dog on different backgrounds are far apart, two different dogs on the same
lawn are close. It exists for tests and demos (runs anywhere, offline, instantly, no weights)
and as a yardstick: a selection or dedup result that a real encoder cannot beat against
`pixels` has not shown that it uses semantics at all.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T

from .base import Encoder

SIDE = 16


def pixels_transform(side: int = SIDE) -> T.Compose:
    """PIL bilinear resize (antialiased when shrinking, so it averages areas) to side x side,
    then 0..1 floats. No mean is subtracted: the vector is the thumbnail itself."""
    return T.Compose([T.Resize((side, side), interpolation=T.InterpolationMode.BILINEAR, antialias=True), T.ToTensor()])


class PixelsEncoder(Encoder):
    """Vector = thumbnail.flatten() (channel-major: all R, then G, then B) / its L2 norm.

    An all-black image has no direction; it gets the same vector as every uniform gray image
    (all components 1/sqrt(768)), its limit as brightness goes to zero."""

    has_text = False

    def __init__(self, device: torch.device, side: int = SIDE) -> None:
        self.side = side
        self.device = device
        self.image_size = side
        self.dim = 3 * side * side
        self.name = f"pixels{side}"
        self.spec = {"family": "pixels", "model": "pixels", "pretrained": None, "dim": self.dim, "side": side}
        self.image_transform = pixels_transform(side)

    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        v = x.float().flatten(1)
        dark = (v.abs().sum(dim=1, keepdim=True) == 0).expand_as(v)
        return torch.where(dark, torch.ones_like(v), v)

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return self.image_transform(img.convert("RGB") if img.mode != "RGB" else img)
