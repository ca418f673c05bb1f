"""Self-supervised training on the pool's own images, resumable at every epoch.

The objectives (SimCLR, DINO) are in methods.py, built from lightly's losses, heads and view
transforms; the loop, the checkpoints and the encoder folder are ours. A run can start from a
pretrained backbone (`init`: a local torchvision checkpoint, loaded strictly) and adapt it to
the pool.

Every epoch is seeded from (seed, epoch), so a run resumed from the checkpoint of epoch k
trains exactly as the uninterrupted run would have. On CUDA the forward pass runs in bf16
autocast (no loss scaling needed); the loss is computed in float32.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from curate.files import write_atomic
from curate.ssl import CONFIG_FILE, FORMAT, METHODS, STATE_FILE, WEIGHTS_FILE
from curate.ssl.archs import build_backbone, init_backbone
from curate.ssl.images import TrainImages
from curate.ssl.methods import MEAN, METHOD_CLASSES, STD


@dataclass(frozen=True)
class TrainConfig:
    method: str = "simclr"
    arch: str = "small-cnn"
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    temperature: float = 0.5
    projection_dim: int = 128
    hflip: float = 0.5  # 0 for content whose mirror image means something else (digits, text)
    min_scale: float = 0.25
    seed: int = 0
    init: str | None = None  # a pretrained backbone's weights file to start from
    dino_out: int = 1024  # DINO head's output dimension
    local_views: int = 2  # DINO's small crops per image
    embed: str | None = None  # what `ssl:` embeds with: head or backbone; None: the method's first choice

    def settings(self) -> dict:
        """Everything that must match for a resume to continue the same run (not `epochs`:
        raising it continues a finished run, with the cosine schedule stretched; not `embed`:
        it only picks which trained modules the encoder folder keeps)."""
        return {k: v for k, v in asdict(self).items() if k not in ("epochs", "embed")}


DEFAULTS = TrainConfig().settings()  # what a checkpoint written before a setting existed used


@dataclass
class TrainReport:
    out: Path
    epochs_done: int
    epochs_run: int
    images: int
    failed: int
    losses: list[float] = field(default_factory=list)
    images_per_s: float = 0.0
    resumed_from: int = 0

    def summary(self) -> str:
        if self.epochs_run == 0:
            return f"{self.out}: already trained for {self.epochs_done} epochs; raise --epochs to train on"
        start = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        return (
            f"trained {self.epochs_run} epoch(s){start} on {self.images} images ({self.failed} failed), "
            f"loss {self.losses[0]:.3f} -> {self.losses[-1]:.3f}, {self.images_per_s:,.0f} img/s; "
            f"encoder in {self.out} (use --model ssl:{self.out})"
        )


def pool_fingerprint(paths: list[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # lightly's blur draws from numpy's global generator
    random.seed(seed)


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up over the first 10% of steps (at most 500), then cosine to zero."""
    warm = max(1, min(500, total // 10))
    return cfg.lr * min(1.0, (step + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class Run:
    """Backbone, the method's head(s), optimizer and the bookkeeping a checkpoint holds."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        if cfg.method not in METHODS:
            raise ValueError(f"--method {cfg.method!r} is not implemented; choose one of {', '.join(METHODS)}")
        _seed(cfg.seed)
        self.cfg, self.device = cfg, device
        self.method = METHOD_CLASSES[cfg.method](cfg, build_backbone(cfg.arch, cfg.image_size))
        outputs = self.method.outputs
        if cfg.embed is not None and cfg.embed not in outputs:
            raise ValueError(f"--embed {cfg.embed!r}: a {cfg.method} encoder embeds with {' or '.join(outputs)}")
        self.output = cfg.embed or outputs[0]
        self.modules = {**self.method.trainable(), **self.method.extra()}
        for m in self.modules.values():
            m.to(device)
        params = [p for m in self.method.trainable().values() for p in m.parameters()]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epoch = 0
        self.losses: list[float] = []
        self.init_sha256: str | None = None
        self.seconds = 0.0  # training wall time over all finished epochs, resumes included
        self.center: list[float] | None = None  # the encoder's feature mean and std over the pool (pool_stats)
        self.scale: list[float] | None = None

    @property
    def encoder(self) -> torch.nn.Module:
        """The network `ssl:DIR` embeds with (SimCLR: the backbone, or backbone + projection
        head with --embed head; DINO: the teacher's backbone)."""
        return self.method.encoder(self.output)

    def start_from(self, path: str) -> None:
        """Load a pretrained backbone (student and, for DINO, teacher) from a weights file."""
        self.init_sha256 = init_backbone(self.method.backbone, path, self.cfg.arch, self.cfg.image_size)
        if hasattr(self.method, "teacher"):
            self.method.teacher.load_state_dict(self.method.backbone.state_dict())

    def train_mode(self) -> None:
        for m in self.modules.values():
            m.train()

    def step(self, views: list[torch.Tensor], lr: float, progress: float = 0.0) -> float:
        """One optimizer step on a batch of views (each a [B, 3, H, W] tensor); `progress` in
        [0, 1] is how far the run is (DINO's teacher momentum follows it)."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        views = [v.to(self.device, non_blocking=True) for v in views]
        loss = self.method.loss(views, self.device.type == "cuda", progress, self.epoch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.method.after_step(progress)
        return float(loss.detach())

    def state(self, pool: dict) -> dict:
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "losses": list(self.losses),
            "settings": self.cfg.settings(),
            "pool": pool,
            "init_sha256": self.init_sha256,
            "seconds": self.seconds,
            **{name: m.state_dict() for name, m in self.modules.items()},
            "optimizer": self.opt.state_dict(),
        }

    def restore(self, path: Path, pool: dict) -> None:
        """Continue from a checkpoint of the same settings and pool; ValueError otherwise."""
        st = torch.load(path, map_location=self.device, weights_only=True)
        if st.get("format") != FORMAT:
            raise ValueError(f"{path} is not a curate train-encoder checkpoint; use another --out or --restart")
        before = {k: st["settings"].get(k, DEFAULTS[k]) for k in DEFAULTS}
        diff = [k for k, v in self.cfg.settings().items() if before.get(k) != v]
        if diff:
            was = ", ".join(f"{k} {before.get(k)!r} (now {getattr(self.cfg, k)!r})" for k in diff)
            raise ValueError(f"{path.parent} holds a run with other settings: {was}; use another --out or --restart")
        if st["pool"].get("paths_sha256") != pool["paths_sha256"]:
            raise ValueError(
                f"{path.parent} was trained on another set of images ({st['pool'].get('images')} images, now "
                f"{pool['images']}); use another --out or --restart"
            )
        if self.cfg.init and st.get("init_sha256") and Path(self.cfg.init).is_file():
            from curate.encoders.base import file_sha256

            if file_sha256(self.cfg.init) != st["init_sha256"]:
                raise ValueError(
                    f"--init {self.cfg.init} changed since this run started; use another --out or --restart"
                )
        for name, m in self.modules.items():
            m.load_state_dict(st[name], strict=True)
        self.opt.load_state_dict(st["optimizer"])
        self.epoch, self.losses = int(st["epoch"]), [float(x) for x in st["losses"]]
        self.init_sha256 = st.get("init_sha256")
        self.seconds = float(st.get("seconds", 0.0))


def encoder_config(run: Run, pool: dict) -> dict:
    """encoder.json: all `ssl:DIR` needs to embed, plus how and on what the encoder was trained."""
    cfg = run.cfg
    return {
        "format": FORMAT,
        "arch": cfg.arch,
        "output": run.output,  # backbone or head (backbone + projection head); absent: backbone
        "dim": int(run.encoder.dim),
        "image_size": cfg.image_size,
        "mean": list(MEAN),
        "std": list(STD),
        "weights": WEIGHTS_FILE,
        "epochs_done": run.epoch,
        "losses": [round(x, 5) for x in run.losses],
        "train_seconds": round(run.seconds, 1),
        "center": run.center,
        "scale": run.scale,
        "training": {**cfg.settings(), "init_sha256": run.init_sha256, "epochs": cfg.epochs, "device": run.device.type},
        "pool": pool,
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


STATS_SAMPLE = 2048


def pool_stats(run: Run, data: TrainImages) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each feature of the encoder over the pool (an evenly
    spaced sample of STATS_SAMPLE images, as `ssl:` embeds them); `ssl:` standardizes with them
    before L2-normalizing.

    Why: pooled post-ReLU features are all positive, so the raw vectors share one dominant
    direction and lie in a narrow cone, and a few high-variance features dominate the rest.
    Distances, k-means and a regularized probe trained on a few labels then see mostly the
    common part (typicality selection at 10-50 labels lost to `pixels`, see BENCHMARKS.md).
    Uses no randomness, so resumed runs stay identical."""
    from curate.encoders.ssl_encoder import eval_transform

    tf = eval_transform(run.cfg.image_size, list(MEAN), list(STD))
    rows = np.unique(np.linspace(0, len(data.images) - 1, min(STATS_SAMPLE, len(data.images))).astype(int))
    net = run.encoder
    net.eval()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(rows), 256):
            x = torch.stack([tf(data.images[r]) for r in rows[i : i + 256]]).to(run.device)
            feats.append(net(x).double().cpu())
    f = torch.cat(feats)
    std = f.std(0, unbiased=False).clamp_min(1e-6)  # a feature constant over the pool: left unscaled
    return f.mean(0).float().tolist(), std.float().tolist()


def save(run: Run, out: Path, pool: dict) -> None:
    """Weights and config first, the training state last: a crash between them leaves a state
    one epoch behind, whose re-run (seeded) writes the same weights again."""
    write_atomic(out / WEIGHTS_FILE, lambda tmp: torch.save(run.encoder.state_dict(), tmp))
    cfg_text = json.dumps(encoder_config(run, pool), indent=2)
    write_atomic(out / CONFIG_FILE, lambda tmp: tmp.write_text(cfg_text))
    write_atomic(out / STATE_FILE, lambda tmp: torch.save(run.state(pool), tmp))


StepHook = Callable[[int, int, int, float, float], None]  # epoch, step, steps, loss, images/s


def train(
    data: TrainImages,
    cfg: TrainConfig,
    out: str | Path,
    device: torch.device,
    source: str = "",
    on_step: StepHook | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train (or resume) into `out`; checkpoints after every epoch. `on_epoch(epoch, loss)` runs
    after that epoch's checkpoint is on disk."""
    out = Path(out)
    n = len(data.images)
    if n < 2:
        raise ValueError(f"{n} readable image(s); self-supervised training needs at least 2")
    pool = {
        "source": source,
        "images": n,
        "failed": len(data.failed),
        "paths_sha256": pool_fingerprint(data.paths),
    }
    run = Run(cfg, device)
    if (out / STATE_FILE).is_file():
        run.restore(out / STATE_FILE, pool)
    elif cfg.init:
        run.start_from(cfg.init)
    report = TrainReport(out, run.epoch, 0, n, len(data.failed), resumed_from=run.epoch)
    if run.epoch >= cfg.epochs:
        written = json.loads((out / CONFIG_FILE).read_text())
        # Finished before pool_stats existed, or with another --embed: rewrite the folder from
        # the checkpoint, without training.
        if "scale" not in written or written.get("output", "backbone") != run.output:
            run.center, run.scale = pool_stats(run, data)
            save(run, out, pool)
        return report
    transform = run.method.transform()
    bs = min(cfg.batch_size, n)
    steps = n // bs  # the last partial batch is dropped: tiny batches make NT-Xent noisy
    total = cfg.epochs * steps
    seen, t0 = 0, time.perf_counter()
    while run.epoch < cfg.epochs:
        epoch = run.epoch
        _seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(n).tolist()
        run.train_mode()
        epoch_loss, t_epoch = 0.0, time.perf_counter()
        for s in range(steps):
            per_image = [transform(data.images[i]) for i in order[s * bs : (s + 1) * bs]]
            views = [torch.stack(v) for v in zip(*per_image, strict=True)]
            done = epoch * steps + s
            loss = run.step(views, _lr(cfg, done, total), progress=done / total)
            epoch_loss += loss
            seen += bs
            if on_step is not None:
                on_step(epoch + 1, s + 1, steps, loss, seen / max(time.perf_counter() - t0, 1e-9))
        run.epoch += 1
        run.seconds += time.perf_counter() - t_epoch
        run.center, run.scale = pool_stats(run, data)
        run.losses.append(epoch_loss / steps)
        save(run, out, pool)
        report.epochs_run += 1
        if on_epoch is not None:
            on_epoch(run.epoch, run.losses[-1])
    report.epochs_done = run.epoch
    report.losses = run.losses[report.resumed_from :]
    report.images_per_s = seen / max(time.perf_counter() - t0, 1e-9)
    return report
