"""torchvision classification models as encoders: `torchvision:<arch>` (e.g. mobilenet_v2, resnet50).

Checkpoints saved from torchvision are what many teams have on disk. The model is built bare
(weights=None), then the weights file is loaded weights-only and must fill every tensor. The
vector is the pooled penultimate activation (the input of the last Linear layer; for models
without one, e.g. SqueezeNet, the global average of `features`), L2-normalized. Preprocessing
is the model's standard ImageNet eval transform from torchvision's weights registry.

`pretrained`: a local weights file, a registered tag (IMAGENET1K_V1, DEFAULT, ...) found in the
torch hub cache or downloaded after a quick reachability check, or None for DEFAULT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision import transforms as T

from .base import (
    LOCAL_FILE_HINT,
    Encoder,
    EncoderError,
    checkpoint_label,
    file_sha256,
    load_strict,
    local_checkpoint,
    looks_like_path,
    read_state_dict,
    require_online,
    slug,
)

PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _models():
    import torchvision.models as tvm  # the classification registry only (no detection/video)

    return tvm


@dataclass(frozen=True)
class TvWeights:
    arch: str
    tag: str | None  # a registered weights name (IMAGENET1K_V2), None for a local file
    file: Path | None

    def entry(self):  # noqa: ANN201 - a torchvision WeightsEnum member or None
        """The registry entry that describes these weights (its transforms, its url): the tag's,
        or for a file the entry whose download has that file name, else the model's DEFAULT."""
        try:
            enum = _models().get_model_weights(self.arch)
        except (ValueError, KeyError):
            return None
        if self.tag:
            return enum[self.tag]
        if self.file is not None:
            for member in enum:
                if os.path.basename(urlparse(member.url).path) == self.file.name:
                    return member
        return enum.DEFAULT


def resolve_weights(model: str, pretrained: str | None) -> TvWeights:
    """`model` is "torchvision:<arch>"; validate without building anything or touching the network."""
    tvm = _models()
    arch = model[len(PREFIX) :] if model.startswith(PREFIX) else model
    known = tvm.list_models(module=tvm)
    if arch not in known:
        close = [m for m in known if arch.split("_")[0] in m][:6]
        hint = f" (similar: {', '.join(close)})" if close else " (torchvision.models.list_models() lists them)"
        raise EncoderError(f"unknown torchvision classification model '{arch}'{hint}")
    enum = tvm.get_model_weights(arch)
    tags = [m.name for m in enum]
    if pretrained and looks_like_path(pretrained) and pretrained not in tags + ["DEFAULT"]:
        return TvWeights(arch, None, local_checkpoint(pretrained))
    tag = pretrained or "DEFAULT"
    if tag == "DEFAULT":
        tag = enum.DEFAULT.name
    if tag not in tags:
        raise EncoderError(
            f"unknown weights '{tag}' for torchvision {arch} (known: {', '.join(tags)}); or {LOCAL_FILE_HINT}"
        )
    return TvWeights(arch, tag, None)


def _hub_file(w: TvWeights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.entry().url).path)


def cached_checkpoint(w: TvWeights) -> str | None:
    """The weights file if it is already on this machine (a local file or the torch hub cache)."""
    if w.file is not None:
        return str(w.file)
    hit = _hub_file(w)
    return str(hit) if hit.is_file() else None


def _fetch(w: TvWeights) -> Path:
    hit = cached_checkpoint(w)
    if hit:
        return Path(hit)
    url = urlparse(w.entry().url)
    require_online(f"weights {w.tag} for torchvision {w.arch}", url.hostname, url.port or 443)
    dst = _hub_file(w)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:  # torchvision file names carry a sha256 prefix; the download is checked against it
        torch.hub.download_url_to_file(w.entry().url, str(dst), hash_prefix=dst.stem.rsplit("-", 1)[-1])
    except Exception as e:  # noqa: BLE001 - any download failure gets the same way out
        reason = str(e).splitlines()[0][:160]
        raise EncoderError(f"downloading {w.entry().url} failed ({reason}); {LOCAL_FILE_HINT}") from e
    return dst


def eval_transform(entry) -> T.Compose:  # noqa: ANN001 - a torchvision WeightsEnum member or None
    """The registry's ImageNet eval preset (resize, center crop, normalize) as a plain Compose of
    PIL-and-tensor transforms: picklable for workers and replayable on GPU-decoded batches."""
    resize, crop, mean, std = 256, 224, IMAGENET_MEAN, IMAGENET_STD
    interp = T.InterpolationMode.BILINEAR
    if entry is not None:
        preset = entry.transforms()
        resize, crop = int(preset.resize_size[0]), int(preset.crop_size[0])
        mean, std, interp = tuple(preset.mean), tuple(preset.std), preset.interpolation
    resize_op = T.Resize(resize, interpolation=interp, antialias=True)
    return T.Compose([resize_op, T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])


def _drop_classifier(model: torch.nn.Module) -> int | None:
    """Replace the last Linear layer by Identity; returns its input width, None if there is none."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = name
    if last is None:
        return None
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    width = int(parent.get_submodule(child).in_features)
    setattr(parent, child, torch.nn.Identity())
    return width


class _PooledFeatures(torch.nn.Module):
    """`features` + global average pooling, for models whose head is not a Linear layer."""

    def __init__(self, features: torch.nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


class TorchvisionEncoder(Encoder):
    """A torchvision classifier without its classifier: pooled penultimate features."""

    has_text = False

    def __init__(self, weights: TvWeights, device: torch.device) -> None:
        checkpoint = _fetch(weights)
        model = _models().get_model(weights.arch, weights=None)
        load_strict(model, read_state_dict(checkpoint), checkpoint, f"torchvision {weights.arch}")
        entry = weights.entry()
        self.image_transform = eval_transform(entry)
        self.image_size = int(self.image_transform.transforms[1].size[0])
        width = _drop_classifier(model)
        if width is None:
            if not hasattr(model, "features"):
                raise EncoderError(f"torchvision {weights.arch} has neither a Linear head nor `features` to pool")
            model = _PooledFeatures(model.features)
            with torch.inference_mode():
                width = int(model.eval()(torch.zeros(1, 3, self.image_size, self.image_size)).shape[1])
        self.model = model.eval().to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.device = device
        self.dim = width
        if weights.file is not None:
            sha = file_sha256(weights.file)
            self.name = slug("torchvision", weights.arch, checkpoint_label(weights.file, sha))
            self.spec = {
                "family": "torchvision",
                "model": weights.arch,
                "pretrained": str(weights.file),
                "dim": self.dim,
                "checkpoint_sha256": sha,
            }
        else:
            self.name = slug("torchvision", weights.arch, str(weights.tag))
            self.spec = {"family": "torchvision", "model": weights.arch, "pretrained": weights.tag, "dim": self.dim}

    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
