"""Backbones for self-supervised training: image batch -> pooled feature vector.

`small-cnn` is sized for CPUs and small images (MNIST-size: ~15M multiply-adds per 32x32
image); `resnet18` is torchvision's, with the CIFAR-style stem (3x3 conv, no max-pool) when
images are 64 px or smaller, so they are not shrunk to 1x1 before the last stage."""

from __future__ import annotations

import torch
from torch import nn

from curate.ssl import ARCHS


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages (32, 64, 128, 256 channels), max-pool between, global average."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w), nn.MaxPool2d(2),
            *_block(4 * w, 8 * w),
        )  # fmt: skip
        self.dim = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _resnet18(input_size: int) -> nn.Module:
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    if input_size <= 64:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.dim = 512
    return model


def build_backbone(arch: str, input_size: int) -> nn.Module:
    """A fresh backbone with a `dim` attribute; ValueError naming the choices for an unknown arch."""
    if arch == "small-cnn":
        return SmallCNN()
    if arch == "resnet18":
        return _resnet18(input_size)
    raise ValueError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
