"""The one small interface every encoder family implements, and what the families share:
name slugs, checkpoint fingerprints, a fast "can we reach the hub at all" check, local cache
look-ups, and a replay of a model's eval transform with torch ops for GPU-decoded batches."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from PIL import Image

LOCAL_FILE_HINT = "pass a local weights file with --pretrained path/to/weights.bin"
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".npz", ".tar")


class EncoderError(RuntimeError):
    """One-line, actionable: what failed and what the user can do about it."""


# ---------------------------------------------------------------------------------------------
# Names and checkpoint fingerprints

_NOT_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(*parts: str) -> str:
    """Join parts into a name usable as a Qdrant vector/collection name ([A-Za-z0-9_.-])."""
    cleaned = [_NOT_SLUG.sub("-", p).strip("-") for p in parts if p]
    return "_".join(c for c in cleaned if c)


def looks_like_path(value: str) -> bool:
    """Pretrained tags never contain a path separator or a checkpoint suffix; files usually do."""
    return (
        "/" in value
        or os.sep in value
        or value.startswith(("~", "."))
        or value.lower().endswith(CHECKPOINT_SUFFIXES)
        or os.path.isfile(value)
    )


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint, memoized on (path, size, mtime): hashing 600 MB takes ~1 s."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def checkpoint_label(path: str | Path, sha: str) -> str:
    """File stem + first 8 hex of its sha256, so two different files never share a vector name.
    Stems that already carry that prefix (torchvision names its files `arch-<sha256[:8]>.pth`)
    keep it once instead of twice."""
    stem = Path(path).stem
    return stem if sha[:8].lower() in stem.lower() else f"{stem}-{sha[:8]}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, loaded weights-only (no pickled code runs). Unwraps the
    usual containers ({"state_dict": ...}, {"model": ...}) and DataParallel's `module.` prefix."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickled objects, truncated files, not a checkpoint
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise EncoderError(f"cannot read {path} as a weights-only checkpoint: {first}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderError(f"{path} holds no state dict of tensors; pass a model's weights file")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _needed(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint must provide; BatchNorm's step counter is optional (old
    checkpoints lack it and torch fills it in)."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def tensors_matched(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[int, int, list[str]]:
    """(how many of the model's tensors the checkpoint provides with the right shape, how many
    the model has, the names of the first few it lacks)."""
    need = _needed(model)
    missing = [k for k, v in need.items() if k not in state_dict or tuple(state_dict[k].shape) != tuple(v.shape)]
    return len(need) - len(missing), len(need), missing[:3]


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path, what: str) -> None:
    """Load `state_dict` into `model`, refusing unless it fills every tensor (extra tensors, such
    as a classifier head the encoder drops, are ignored): a partial load would embed with random
    weights and look like it worked."""
    matched, total, missing = tensors_matched(model, state_dict)
    if matched < total:
        raise EncoderError(
            f"checkpoint {source} fills {matched} of {total} tensors of {what} (missing e.g. {', '.join(missing)}); "
            "it was saved from another architecture or library: pass the weights file of this model"
        )
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)


def local_checkpoint(value: str) -> Path:
    """Resolve a --pretrained value that looks like a file; a missing file is an error that
    names it, never a silent fallback to random weights."""
    p = Path(value).expanduser()
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise EncoderError(f"checkpoint file {p} {what}; {LOCAL_FILE_HINT}")
    return p.resolve()


# ---------------------------------------------------------------------------------------------
# Offline-first weight resolution

_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them at import)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hf_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """First of `filenames` already in the local Hugging Face cache; no network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = repo_id.partition("@")
    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo, name, cache_dir=str(hf_cache_dir()), revision=revision or None)
        except Exception:  # noqa: BLE001 - a malformed repo id is simply "not cached"
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def safetensors_first(filename: str) -> list[str]:
    """Hubs often hold a .safetensors twin of a .bin/.pth file; prefer it like the loaders do."""
    names = []
    if filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    names.append(filename)
    return names


def _hub_endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


def _probe_target(host: str, port: int) -> tuple[str, int]:
    """Through a proxy, the proxy is what must answer."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or 3128
    return host, port


_PROBES: dict[tuple[str, int], tuple[float, bool]] = {}


def reachable(host: str | None = None, port: int | None = None, timeout: float = 2.0) -> bool:
    """A TCP connect within `timeout` seconds, DNS included (run in a thread because
    getaddrinfo ignores socket timeouts). Remembered for a minute so a run asks once.

    Why: hub clients retry for ~47 s before giving up on a machine without internet; we want
    to fail at once with a useful message instead."""
    if host is None:
        host, port = _hub_endpoint()
    target = _probe_target(host, port or 443)
    now = time.monotonic()
    if target in _PROBES and now - _PROBES[target][0] < 60:
        return _PROBES[target][1]
    result: list[bool] = []

    def _connect() -> None:
        try:
            with socket.create_connection(target, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=_connect, daemon=True)
    t.start()
    t.join(timeout)
    ok = bool(result and result[0])
    _PROBES[target] = (now, ok)
    return ok


def require_online(what: str, host: str | None = None, port: int | None = None) -> None:
    """Raise at once, with the way out, when weights are not cached and cannot be fetched."""
    if offline_requested():
        raise EncoderError(f"{what} not in the local cache and HF_HUB_OFFLINE is set; {LOCAL_FILE_HINT}")
    if not reachable(host, port):
        where = host or _hub_endpoint()[0]
        raise EncoderError(f"{what} not in the local cache and {where} is unreachable; {LOCAL_FILE_HINT}")


# ---------------------------------------------------------------------------------------------
# Eval transform replayed on uint8 tensors


def _kind(op: object) -> str:
    name = op.__name__ if inspect.isfunction(op) else type(op).__name__
    if name in ("Resize", "CenterCrop", "Normalize"):
        return name.lower()
    if name in ("ToTensor", "MaybeToTensor"):
        return "to_unit"
    if name in ("MaybeConvertMode", "_convert_to_rgb", "convert_to_rgb"):
        return "skip"
    raise EncoderError(f"preprocess_uint8: transform step {name} has no tensor replay; use preprocess()")


class TensorPreprocess:
    """The same Resize / CenterCrop / Normalize objects as the PIL path, applied to tensors.

    torchvision's Resize and CenterCrop accept tensors and compute the same output sizes as on
    PIL; pixels are resized in float 0..255 with antialias and rounded like PIL's uint8 result,
    so GPU-decoded batches match the CPU path within a small tolerance."""

    def __init__(self, transform: Callable) -> None:
        steps = getattr(transform, "transforms", [transform])
        self.ops = [(_kind(t), t) for t in steps]

    def _one_group(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_rgb_float(x)
        unit = False
        for kind, op in self.ops:
            if kind in ("resize", "centercrop"):
                x = op(x)
            elif kind == "to_unit":
                x = x.clamp_(0, 255).round_().div_(255.0)
                unit = True
            elif kind == "normalize":
                x = op(x)
        return x if unit else x.div(255.0)

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            return self._one_group(images.to(device, non_blocking=True))
        items = list(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(items):
            if t.dim() != 3:
                raise EncoderError(f"preprocess_uint8: expected CHW uint8 tensors, got shape {tuple(t.shape)}")
            groups.setdefault(tuple(t.shape), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for idx in groups.values():
            batch = torch.stack([items[i] for i in idx]).to(device, non_blocking=True)
            for i, row in zip(idx, self._one_group(batch), strict=True):
                out[i] = row
        if not items:
            raise EncoderError("preprocess_uint8: empty batch")
        return torch.stack(out)  # type: ignore[arg-type]


def _to_rgb_float(x: torch.Tensor) -> torch.Tensor:
    """N x {1,2,3,4} x H x W uint8 -> N x 3 x H x W float in 0..255; alpha composited on white
    like decode.to_rgb does for PIL images."""
    x = x.float()
    c = x.shape[1]
    if c in (2, 4):
        alpha = x[:, -1:] / 255.0
        x = x[:, :-1] * alpha + 255.0 * (1.0 - alpha)
        c -= 1
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        raise EncoderError(f"preprocess_uint8: {c} channels; expected 1 to 4")
    return x.contiguous()


# ---------------------------------------------------------------------------------------------
# The interface


class Encoder(ABC):
    """Images (and, where the model has a text tower, texts) to L2-normalized float32 vectors.

    Attributes: `name` (a slug, the Qdrant vector name), `dim`, `spec` (JSON; rebuild with
    `encoder_from_spec`), `has_text`, `image_size`, `device`, and `image_transform`: a
    picklable PIL -> CHW float32 callable. Hand `image_transform` (not the bound `preprocess`
    method, which drags the whole model along) to DataLoader worker processes."""

    name: str
    dim: int
    spec: dict
    has_text: bool = False
    image_size: int
    device: torch.device
    image_transform: Callable[[Image.Image], torch.Tensor]

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB image -> CHW float32, exactly what encode_images expects."""
        return self.image_transform(img)

    @property
    def supports_uint8(self) -> bool:
        """Whether preprocess_uint8 can replay this model's transform with torch ops."""
        try:
            self._tensor_preprocess()
        except EncoderError:
            return False
        return True

    def _tensor_preprocess(self) -> TensorPreprocess:
        if getattr(self, "_tp", None) is None:
            self._tp = TensorPreprocess(self.image_transform)
        return self._tp

    def preprocess_uint8(self, batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 images straight from a decoder (e.g. torchvision.io.decode_jpeg on the GPU) ->
        normalized float NCHW on self.device, matching preprocess() within rounding.

        `batch` is an N x C x H x W uint8 tensor, or a list of C x H x W uint8 tensors of any
        sizes (grouped by size internally). C may be 1 (gray), 3 (RGB) or 2/4 (with alpha)."""
        return self._tensor_preprocess()(batch, self.device)

    @abstractmethod
    def _forward_images(self, x: torch.Tensor) -> torch.Tensor:
        """Model forward on a float NCHW batch already on self.device; unnormalized N x dim."""

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed float NCHW batch (any device) -> N x dim float32 unit rows on CPU.

        On CUDA: bf16 autocast and channels_last (tensor cores, ~2x); on CPU: plain fp32."""
        if batch.shape[0] == 0:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        x = batch.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self._forward_images(x)
            else:
                out = self._forward_images(x.float())
            out = F.normalize(out.float(), dim=-1)
        return out.cpu()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """N x dim unit rows on CPU; EncoderError for image-only encoders."""
        raise EncoderError(
            f"encoder {self.name} has no text tower; use an open_clip model (e.g. --model ViT-B-32) for text queries"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"
