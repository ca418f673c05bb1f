"""Backbones for self-supervised training: image batch -> pooled feature vector.

`small-cnn` is sized for CPUs and small images (MNIST-size: ~15M multiply-adds per 32x32
image); `resnet18` is torchvision's, with the CIFAR-style stem (3x3 conv, no max-pool) when
images are 64 px or smaller, so they are not shrunk to 1x1 before the last stage;
`mobilenet_v2` is torchvision's feature extractor (1280-d), the usual start from ImageNet
weights (`--init`) on a CPU. Parameter names are torchvision's, so its checkpoints load as they are.

SimCLR's projection head is here too (torch only): with `--embed head`, `ssl:` embeds with
backbone + head."""

from __future__ import annotations

from pathlib import Path

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


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 without its classifier: `features`, then a global average."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.features = torchvision.models.mobilenet_v2(weights=None).features
        self.dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP: linear-BN-ReLU, linear-BN. Layout and parameter names are those of
    lightly's SimCLRProjectionHead, so runs checkpointed with lightly's head resume with this one."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out),
        )  # fmt: skip
        self.dim = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Projected(nn.Module):
    """Backbone, then projection head: the vector SimCLR's loss compares (by cosine). On MNIST its
    k-means clusters follow the digits better than the backbone's (BENCHMARKS.md), not on textures."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.dim = head.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_encoder(arch: str, input_size: int, output: str, dim: int) -> nn.Module:
    """The network an encoder folder holds: the backbone (`output` "backbone") or backbone + a
    projection head to `dim` ("head"); ValueError for anything else."""
    backbone = build_backbone(arch, input_size)
    if output == "backbone":
        return backbone
    if output == "head":
        return Projected(backbone, ProjectionHead(backbone.dim, backbone.dim, dim))
    raise ValueError(f"unknown output {output!r}; expected backbone or head")


def build_backbone(arch: str, input_size: int) -> nn.Module:
    """A fresh backbone with a `dim` attribute; ValueError naming the choices for an unknown arch."""
    if arch == "small-cnn":
        return SmallCNN()
    if arch == "resnet18":
        return _resnet18(input_size)
    if arch == "mobilenet_v2":
        return MobileNetV2()
    raise ValueError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")


def init_backbone(model: nn.Module, path: str | Path, arch: str, input_size: int) -> str:
    """Load pretrained weights into `model`, refusing unless they fill every tensor (a
    classifier head in the file is ignored); returns the file's sha256. ValueError otherwise."""
    from curate.encoders.base import EncoderError, file_sha256, load_strict, read_state_dict, tensors_matched

    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"--init {file}: no such file; give a local torchvision weights file (.pth/.pt)")
    try:
        sd = read_state_dict(file)
        if arch == "resnet18" and input_size <= 64 and tensors_matched(model, sd)[2] == ["conv1.weight"]:
            raise ValueError(
                f"--init {file}: its 7x7 ImageNet stem does not fit resnet18's 3x3 stem for images of 64 px "
                "or less; use --image-size 65 or more, or --arch mobilenet_v2"
            )
        load_strict(model, sd, file, f"{arch} (--arch)")
    except EncoderError as e:
        raise ValueError(f"--init: {e}") from None
    return file_sha256(file)
