"""`ssl:<folder>`: an encoder trained on the pool itself by `curate train-encoder`.

The folder holds encoder.json (architecture, output, input size, normalisation, how and on what
it was trained) and encoder.pt (the network's weights, loaded weights-only and strictly). The
network is the backbone (`output` "backbone", the default; folders written before `output`
existed hold it too) or the backbone and SimCLR's projection head ("head", `--embed head`). Its
output is standardized with the pool's mean and std recorded at training (`center`, `scale`;
absent in older folders, which embed the raw output), then L2-normalized; images are resized and
center-cropped to the training size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import transforms as T

from curate.ssl import CONFIG_FILE, FORMAT

from .base import Encoder, EncoderError, file_sha256, load_strict, read_state_dict, slug

PREFIX = "ssl:"


@dataclass(frozen=True)
class SSLWeights:
    folder: Path
    config: dict

    @property
    def file(self) -> Path:
        return self.folder / self.config["weights"]


def resolve_weights(model: str, pretrained: str | None) -> SSLWeights:
    """`model` is "ssl:<folder>"; reads and checks the config, builds nothing."""
    if pretrained:
        raise EncoderError("an ssl: encoder folder holds its own weights; drop --pretrained")
    folder = Path(model[len(PREFIX) :] if model.startswith(PREFIX) else model).expanduser()
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise EncoderError(
            f"{folder} has no {CONFIG_FILE}; train an encoder there with: curate train-encoder POOL --out {folder}"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise EncoderError(f"{cfg_path} is not readable JSON ({e}); re-run curate train-encoder") from None
    missing = [k for k in ("arch", "dim", "image_size", "mean", "std", "weights") if k not in config]
    if config.get("format") != FORMAT or missing:
        raise EncoderError(f"{cfg_path} is not a {FORMAT} encoder config (missing {', '.join(missing) or 'format'})")
    return SSLWeights(folder.resolve(), config)


def cached_checkpoint(w: SSLWeights) -> str | None:
    return str(w.file) if w.file.is_file() else None


def eval_transform(size: int, mean: list[float], std: list[float]) -> T.Compose:
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class SSLEncoder(Encoder):
    has_text = False

    def __init__(self, weights: SSLWeights, device: torch.device) -> None:
        from curate.ssl.archs import build_encoder

        cfg = weights.config
        if not weights.file.is_file():
            raise EncoderError(f"{weights.file} is missing; re-run curate train-encoder --out {weights.folder}")
        output = cfg.get("output", "backbone")
        try:
            model = build_encoder(cfg["arch"], int(cfg["image_size"]), output, int(cfg["dim"]))
        except ValueError as e:
            raise EncoderError(f"{weights.folder}: {e}") from None
        what = f"ssl {cfg['arch']}" + (" + projection head" if output == "head" else "")
        load_strict(model, read_state_dict(weights.file), weights.file, what)
        if int(cfg["dim"]) != model.dim:
            raise EncoderError(f"{weights.folder}: config says dim {cfg['dim']}, the {cfg['arch']} has {model.dim}")
        self.model = model.eval().to(device)
        self.device = device
        self.dim = int(model.dim)
        self.image_size = int(cfg["image_size"])
        self.image_transform = eval_transform(self.image_size, cfg["mean"], cfg["std"])
        self.center, self.scale = (self._stat(cfg, k, weights.folder, device) for k in ("center", "scale"))
        sha = file_sha256(weights.file)
        # Folder name + weights hash: readable, and a retrained folder never reuses a vector name.
        self.name = slug("ssl", weights.folder.name, sha[:8])
        self.spec = {
            "family": "ssl",
            "model": cfg["arch"],
            "pretrained": str(weights.folder),
            "dim": self.dim,
            "checkpoint_sha256": sha,
        }

    def _stat(self, cfg: dict, key: str, folder: Path, device: torch.device) -> torch.Tensor | None:
        values = cfg.get(key)
        if values is None:
            return None
        if len(values) != self.dim:
            raise EncoderError(f"{folder}: {key} has {len(values)} values, the {cfg['arch']} has {self.dim}")
        return torch.tensor(values, dtype=torch.float32, device=device)

    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.center is not None:
            out = out.float() - self.center
        if self.scale is not None:
            out = out.float() / self.scale
        return out
