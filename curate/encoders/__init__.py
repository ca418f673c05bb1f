"""Encoders: one small interface (`Encoder`), one file per family.

Model strings: "pixels" -> the 16x16 thumbnail baseline; "timm:<arch>[.<tag>]" -> a timm
backbone; "torchvision:<arch>" -> a torchvision classifier's pooled features; "ssl:<folder>" ->
an encoder trained by `curate train-encoder`; anything else -> an open_clip architecture
(default ViT-B-32 / laion2b_s34b_b79k). `pretrained` is a tag of that family or a path to a
local checkpoint file. Local checkpoints load weights-only and must fill every tensor.
"""

from __future__ import annotations

import torch

from ..device import pick_device
from .base import Encoder, EncoderError
from .pixels import PixelsEncoder

__all__ = ["Encoder", "EncoderError", "encoder_from_spec", "load_encoder", "weights_available"]

DEFAULT_MODEL = "ViT-B-32"


def _device(device: str | torch.device | None) -> torch.device:
    try:
        return pick_device(str(device) if device is not None else None)
    except ValueError as e:
        raise EncoderError(str(e)) from None


def _family(model: str) -> str:
    if model in ("pixels", "pixels16"):
        return "pixels"
    for family in ("timm", "torchvision", "ssl"):
        if model.startswith(f"{family}:"):
            return family
    return "open_clip"


def load_encoder(
    model: str = DEFAULT_MODEL, pretrained: str | None = None, device: str | torch.device | None = None
) -> Encoder:
    """Build an encoder, offline first; raises EncoderError (one line, says what to do) when
    the model is unknown or its weights are neither local nor quickly downloadable."""
    dev = _device(device)
    family = _family(model)
    if family == "pixels":
        if pretrained:
            raise EncoderError("the pixels encoder has no weights; drop --pretrained")
        return PixelsEncoder(dev)
    if family == "timm":
        from . import timm_encoder

        return timm_encoder.TimmEncoder(timm_encoder.resolve_weights(model, pretrained), dev)
    if family == "torchvision":
        from . import torchvision_encoder

        return torchvision_encoder.TorchvisionEncoder(torchvision_encoder.resolve_weights(model, pretrained), dev)
    if family == "ssl":
        from . import ssl_encoder

        return ssl_encoder.SSLEncoder(ssl_encoder.resolve_weights(model, pretrained), dev)
    from . import open_clip_encoder

    return open_clip_encoder.OpenClipEncoder(open_clip_encoder.resolve_weights(model, pretrained), dev)


def encoder_from_spec(spec: dict, device: str | torch.device | None = None) -> Encoder:
    """Rebuild the encoder that produced stored vectors from its `spec`. A local checkpoint
    that changed since (different sha256) is refused: its vectors would not be comparable."""
    family = spec.get("family")
    if family == "pixels":
        enc: Encoder = load_encoder("pixels", None, device)
    elif family in ("timm", "torchvision"):
        enc = load_encoder(f"{family}:{spec['model']}", spec.get("pretrained"), device)
    elif family == "ssl":
        enc = load_encoder(f"ssl:{spec['pretrained']}", None, device)
    elif family == "open_clip":
        enc = load_encoder(spec["model"], spec.get("pretrained"), device)
    else:
        raise EncoderError(f"unknown encoder family {family!r} in spec {spec}")
    want_sha = spec.get("checkpoint_sha256")
    if want_sha and enc.spec.get("checkpoint_sha256") != want_sha:
        raise EncoderError(
            f"checkpoint {spec.get('pretrained')} changed since these vectors were made "
            f"(sha256 {want_sha[:8]} expected, {str(enc.spec.get('checkpoint_sha256'))[:8]} found); "
            "pass the original file"
        )
    if "dim" in spec and int(spec["dim"]) != enc.dim:
        raise EncoderError(f"encoder {enc.name} has dim {enc.dim} but the spec says {spec['dim']}")
    return enc


def weights_available(model: str = DEFAULT_MODEL, pretrained: str | None = None) -> bool:
    """True when `load_encoder(model, pretrained)` needs no download: pixels, an existing local
    file, or weights already in the local cache. Fast (no network, no model built)."""
    family = _family(model)
    if family == "pixels":
        return not pretrained
    try:
        if family == "timm":
            from . import timm_encoder as family_module
        elif family == "torchvision":
            from . import torchvision_encoder as family_module
        elif family == "ssl":
            from . import ssl_encoder as family_module
        else:
            from . import open_clip_encoder as family_module
        weights = family_module.resolve_weights(model, pretrained)
        return family_module.cached_checkpoint(weights) is not None
    except EncoderError:
        return False
