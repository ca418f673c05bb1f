"""open_clip models: any architecture open_clip knows, with a pretrained tag or a local file.

Weights are found offline first (local file, then the Hugging Face / open_clip caches); only
when they are missing and the hub answers a 2-second TCP probe do we let open_clip download.
Model construction itself is open_clip's factory (`create_model_and_transforms`): configs are
data there, and we do not repeat them here.
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
    local_checkpoint,
    looks_like_path,
    require_online,
    safetensors_first,
    slug,
    tensors_matched,
)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_TAG = "laion2b_s34b_b79k"
_HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"


@dataclass(frozen=True)
class Weights:
    """Where an open_clip model's weights come from: a registered tag or a local file."""

    model: str
    tag: str | None  # None for a local file
    file: Path | None  # the local checkpoint, for files
    cfg: dict  # open_clip's pretrained cfg for tags (hf_hub/url, mean/std, quick_gelu, ...)


def _open_clip():
    import open_clip  # deferred: importing it costs seconds, and pixels-only runs never need it

    return open_clip


def resolve_weights(model: str, pretrained: str | None) -> Weights:
    """Validate model and tag/file without touching the network."""
    oc = _open_clip()
    if model not in oc.list_models():
        raise EncoderError(
            f"unknown open_clip model '{model}'; try ViT-B-32, ViT-B-16 or ViT-L-14 "
            "(open_clip.list_models() lists all), 'timm:<name>' or 'pixels'"
        )
    tags = oc.list_pretrained_tags_by_model(model)
    if pretrained is None:
        if model == DEFAULT_MODEL:
            pretrained = DEFAULT_TAG
        elif tags:
            pretrained = tags[0]
        else:
            raise EncoderError(f"open_clip model '{model}' has no pretrained tags; {LOCAL_FILE_HINT}")
    # A registered tag wins over a same-named file in the working directory.
    cfg = {} if "/" in pretrained or os.sep in pretrained else oc.get_pretrained_cfg(model, pretrained)
    if not cfg and looks_like_path(pretrained):
        return Weights(model, None, local_checkpoint(pretrained), {})
    if not cfg:
        known = ", ".join(tags) or "none"
        raise EncoderError(f"unknown pretrained tag '{pretrained}' for {model} (known: {known}); or {LOCAL_FILE_HINT}")
    return Weights(model, pretrained.lower().replace("-", "_"), None, dict(cfg))


def cached_checkpoint(w: Weights) -> str | None:
    """The checkpoint file for `w` if it is already on this machine; never downloads."""
    if w.file is not None:
        return str(w.file)
    if w.cfg.get("file") and os.path.isfile(w.cfg["file"]):
        return w.cfg["file"]
    hub = w.cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        hit = hf_cached_file(repo, safetensors_first(filename or _HF_DEFAULT_FILE))
        if hit:
            return hit
    url = w.cfg.get("url", "")
    if url:
        candidate = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if candidate.is_file():
            return str(candidate)
    return None


def _fetch(w: Weights) -> str:
    """Cached file, or a download after a quick reachability check (open_clip's own loaders
    would retry for most of a minute on a machine without internet)."""
    hit = cached_checkpoint(w)
    if hit:
        return hit
    what = f"weights for {w.model} ({w.tag})"
    if w.cfg.get("hf_hub"):
        require_online(what)
    else:
        url = urlparse(w.cfg.get("url", ""))
        require_online(what, url.hostname, url.port or 443)
    try:
        path = _open_clip().pretrained.download_pretrained(w.cfg)
    except Exception as e:  # noqa: BLE001 - any download failure gets the same way out
        raise EncoderError(f"downloading {what} failed ({str(e).splitlines()[0][:200]}); {LOCAL_FILE_HINT}") from e
    if not path or not os.path.isfile(path):
        raise EncoderError(f"{what} could not be downloaded; {LOCAL_FILE_HINT}")
    return path


def _mismatch(model: str, checkpoint: str, e: Exception) -> str:
    """open_clip loads strictly; say how much of the checkpoint fits, not its whole key list."""
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    try:
        bare = _open_clip().create_model(model, pretrained=None)
        sd = _open_clip().factory.load_state_dict(checkpoint, weights_only=True)
        matched, total, _ = tensors_matched(bare, sd)
    except Exception:  # noqa: BLE001 - not even readable: the loader's own message says why
        return f"cannot load {checkpoint} into open_clip {model}: {first}"
    return (
        f"checkpoint {checkpoint} fills {matched} of {total} tensors of open_clip {model}; "
        "pass the weights file of this model"
    )


class OpenClipEncoder(Encoder):
    """An open_clip image+text model; vectors of image and text share one space."""

    has_text = True

    def __init__(self, weights: Weights, device: torch.device) -> None:
        oc = _open_clip()
        checkpoint = _fetch(weights)
        cfg = weights.cfg
        try:
            model, _, transform = oc.create_model_and_transforms(
                weights.model,
                pretrained=checkpoint,
                device=device,
                force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                image_mean=cfg.get("mean"),
                image_std=cfg.get("std"),
                image_interpolation=cfg.get("interpolation"),
                image_resize_mode=cfg.get("resize_mode"),
            )
        except Exception as e:  # noqa: BLE001 - e.g. a checkpoint of another architecture
            raise EncoderError(_mismatch(weights.model, checkpoint, e)) from e
        model.eval()
        self.model = model
        self.model_name = weights.model
        self.device = device
        self.image_transform = transform
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.dim = int(oc.get_model_config(weights.model)["embed_dim"])
        self._tokenizer = None
        if weights.file is not None:
            sha = file_sha256(weights.file)
            self.name = slug("clip", weights.model, checkpoint_label(weights.file, sha))
            self.spec = {
                "family": "open_clip",
                "model": weights.model,
                "pretrained": str(weights.file),
                "dim": self.dim,
                "checkpoint_sha256": sha,
            }
        else:
            self.name = slug("clip", weights.model, weights.tag or "")
            self.spec = {"family": "open_clip", "model": weights.model, "pretrained": weights.tag, "dim": self.dim}
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            try:
                self._tokenizer = _open_clip().get_tokenizer(self.model_name)
            except Exception as e:  # noqa: BLE001 - HF tokenizers may need the hub
                raise EncoderError(f"cannot load the tokenizer of {self.model_name}: {e}") from e
        return self._tokenizer(texts)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        tokens = self._tokenize(list(texts)).to(self.device)
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.model.encode_text(tokens)
            else:
                out = self.model.encode_text(tokens)
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu()
