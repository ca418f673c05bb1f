"""timm image backbones (DINOv2-style self-supervised models and the rest), image-only.

`timm:<arch>` with `pretrained` a timm tag ("lvd142m"), None (timm's default tag) or a local
checkpoint file. Same offline-first rules as open_clip: cache, then a 2-second probe, then a
download; never minutes of retries. Preprocessing is timm's own eval transform for the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from .base import (
    LOCAL_FILE_HINT,
    Encoder,
    EncoderError,
    checkpoint_label,
    file_sha256,
    hf_cached_file,
    load_strict,
    local_checkpoint,
    looks_like_path,
    read_state_dict,
    require_online,
    safetensors_first,
    slug,
    tensors_matched,
)

PREFIX = "timm:"


def _timm():
    import timm  # deferred: slow import, and only timm runs need it

    return timm


@dataclass(frozen=True)
class TimmWeights:
    arch: str  # architecture without tag, e.g. "vit_small_patch14_dinov2"
    tag: str | None  # resolved pretrained tag, None for a local file
    file: Path | None
    cfg: dict  # timm's pretrained cfg (hf_hub_id, url, ...) for tags

    @property
    def full_name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else self.arch


def _is_tag(arch: str, value: str) -> bool:
    """A registered tag wins over a same-named file in the working directory."""
    if "/" in value or os.sep in value:
        return False
    return f"{arch}.{value}" in _timm().list_pretrained(f"{arch}.*")


def resolve_weights(model: str, pretrained: str | None) -> TimmWeights:
    """`model` is "timm:<arch>[.<tag>]"; validate without touching the network."""
    timm = _timm()
    from timm.models import get_pretrained_cfg, split_model_name_tag

    name = model[len(PREFIX) :] if model.startswith(PREFIX) else model
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise EncoderError(f"unknown timm model '{arch}'; timm.list_models('*dino*') lists candidates")
    if pretrained and looks_like_path(pretrained) and not _is_tag(arch, pretrained):
        return TimmWeights(arch, None, local_checkpoint(pretrained), {})
    if pretrained:
        if tag and tag != pretrained:
            raise EncoderError(f"timm model '{name}' already names tag '{tag}'; drop --pretrained {pretrained}")
        tag = pretrained
    try:
        cfg = get_pretrained_cfg(f"{arch}.{tag}" if tag else arch, allow_unregistered=False)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        known = ", ".join(t.split(".", 1)[-1] for t in timm.list_pretrained(f"{arch}.*")) or "none"
        raise EncoderError(
            f"no pretrained weights '{tag or 'default'}' for timm {arch} (known tags: {known}); or {LOCAL_FILE_HINT}"
        )
    return TimmWeights(arch, cfg.tag or tag, None, cfg.to_dict())


def cached_checkpoint(w: TimmWeights) -> str | None:
    """The weights file if it is already on this machine (HF cache or torch hub cache)."""
    if w.file is not None:
        return str(w.file)
    if w.cfg.get("file") and os.path.isfile(w.cfg["file"]):
        return w.cfg["file"]
    if w.cfg.get("hf_hub_id"):
        names = (
            safetensors_first(w.cfg["hf_hub_filename"])
            if w.cfg.get("hf_hub_filename")
            else ["model.safetensors", "pytorch_model.bin"]
        )
        hit = hf_cached_file(w.cfg["hf_hub_id"], names)
        if hit:
            return hit
    if w.cfg.get("url"):
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.cfg["url"]).path)
        if candidate.is_file():
            return str(candidate)
    return None


def _create(w: TimmWeights) -> torch.nn.Module:
    timm = _timm()
    checkpoint = cached_checkpoint(w)
    what = f"weights for timm {w.full_name}"
    if checkpoint is None:
        if w.cfg.get("hf_hub_id"):
            require_online(what)
        else:
            url = urlparse(w.cfg.get("url", ""))
            require_online(what, url.hostname, url.port or 443)
    overlay = None
    if checkpoint:
        # A file replaces the registry source; keep the registry's loader for its own format
        # (original .npz releases load through the model's custom loader, which fails on a
        # missing array by itself).
        custom = w.cfg.get("custom_load") is True or checkpoint.endswith(".npz")
        if not custom:
            return _create_strict(w, checkpoint)
        overlay = {"file": checkpoint, "custom_load": custom}
    try:
        return timm.create_model(w.full_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as e:  # noqa: BLE001 - wrong architecture, broken file, failed download
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        source = checkpoint or "the hub"
        raise EncoderError(f"cannot load {what} from {source}: {first}; {LOCAL_FILE_HINT}") from e


def _create_strict(w: TimmWeights, checkpoint: str) -> torch.nn.Module:
    """timm's own loader turns strict off for a headless model (num_classes=0) and only logs
    what did not match, so a checkpoint of another library left the model random. Build the
    model bare and require the file to fill every tensor, as is or after the model's own
    converter for original (non-timm) releases."""
    import sys

    model = _timm().create_model(w.full_name, pretrained=False, num_classes=0)
    what = f"timm {w.arch}"
    sd = read_state_dict(checkpoint)
    matched, total, _ = tensors_matched(model, sd)
    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is not None and matched < total:
        try:
            converted = convert(sd, model)
        except Exception:  # noqa: BLE001 - a converter for another format: keep the raw tensors
            converted = None
        if isinstance(converted, dict) and tensors_matched(model, converted)[0] > matched:
            sd = converted
    load_strict(model, sd, checkpoint, what)
    return model


class TimmEncoder(Encoder):
    """A timm backbone with its classifier removed (num_classes=0): pooled features."""

    has_text = False

    def __init__(self, weights: TimmWeights, device: torch.device) -> None:
        from timm.data import create_transform, resolve_data_config

        model = _create(weights).eval().to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = device
        data_cfg = resolve_data_config(model=model)
        self.image_transform = create_transform(**data_cfg, is_training=False)
        self.image_size = int(data_cfg["input_size"][-1])
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if weights.file is not None:
            sha = file_sha256(weights.file)
            self.name = slug("timm", weights.arch, checkpoint_label(weights.file, sha))
            self.spec = {
                "family": "timm",
                "model": weights.arch,
                "pretrained": str(weights.file),
                "dim": self.dim,
                "checkpoint_sha256": sha,
            }
        else:
            self.name = slug("timm", weights.full_name)
            self.spec = {"family": "timm", "model": weights.arch, "pretrained": weights.tag, "dim": self.dim}

    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
