"""The self-supervised objectives: what a method adds to the backbone, which views it draws
from an image, and its loss on one batch of those views.

Both use lightly's heads, losses and view transforms (what that package is for); the views are
scaled for small images: blur off and milder colour jitter at 64 px and below.

simclr  two views, a projection head, NT-Xent: images in the batch are each other's negatives;
        the encoder keeps the backbone, or with --embed head backbone + head (the head is our
        torch-only copy of lightly's, so `ssl:` loads without lightly).
dino    a student (backbone + DINO head) trained to match an EMA teacher's centred, sharpened
        output on two global crops, seeing also small local crops; no negatives, so it does not
        need large batches, and the teacher's backbone (a running average of the student's) is
        what the encoder keeps: it is the smoother of the two and the one DINO evaluates.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from curate.ssl.archs import Projected, ProjectionHead

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NORMALIZE = {"mean": list(MEAN), "std": list(STD)}


def _lightly(*names: str) -> list:
    """lightly is an optional dependency: only training needs it, never loading an encoder."""
    import importlib

    where = {
        "NTXentLoss": "lightly.loss.ntx_ent_loss",
        "SimCLRTransform": "lightly.transforms.simclr_transform",
        "DINOLoss": "lightly.loss.dino_loss",
        "DINOProjectionHead": "lightly.models.modules.heads",
        "DINOTransform": "lightly.transforms.dino_transform",
        "update_momentum": "lightly.models.utils",
    }
    try:
        return [getattr(importlib.import_module(where[n]), n) for n in names]
    except (ImportError, AttributeError) as e:
        raise ValueError(f"train-encoder needs the lightly package ({e}); pip install 'curate[ssl]'") from None


class SimCLR:
    def __init__(self, cfg, backbone: nn.Module) -> None:  # noqa: ANN001 - TrainConfig
        (loss_cls,) = _lightly("NTXentLoss")
        self.cfg = cfg
        self.backbone = backbone
        self.head = ProjectionHead(backbone.dim, backbone.dim, cfg.projection_dim)
        self.criterion = loss_cls(temperature=cfg.temperature)

    def trainable(self) -> dict[str, nn.Module]:
        """Modules whose parameters the optimizer updates (saved in the checkpoint by name)."""
        return {"backbone": self.backbone, "head": self.head}

    def extra(self) -> dict[str, nn.Module]:
        """Modules with state the optimizer does not own (also checkpointed)."""
        return {}

    outputs = ("backbone", "head")  # what `ssl:` can embed with (--embed); the first is the default

    def encoder(self, output: str) -> nn.Module:
        return Projected(self.backbone, self.head) if output == "head" else self.backbone

    def transform(self) -> Callable:
        small = self.cfg.image_size <= 64
        return _lightly("SimCLRTransform")[0](
            input_size=self.cfg.image_size,
            min_scale=self.cfg.min_scale,
            cj_strength=0.5 if small else 1.0,
            gaussian_blur=0.0 if small else 0.5,
            hf_prob=self.cfg.hflip,
            normalize=NORMALIZE,
        )

    def loss(self, views: list[torch.Tensor], autocast: bool, progress: float, epoch: int) -> torch.Tensor:
        x = torch.cat(views[:2])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            z = self.head(self.backbone(x))
        z0, z1 = z.float().chunk(2)
        return self.criterion(z0, z1)

    def after_step(self, progress: float) -> None:
        pass


class DINO:
    """Sizes for small pools on CPUs: a 512-wide head with a 1,024-way output (the paper's
    65,536 is for ImageNet), two local crops of half the side instead of six of 96 px."""

    def __init__(self, cfg, backbone: nn.Module) -> None:  # noqa: ANN001 - TrainConfig
        loss_cls, head_cls = _lightly("DINOLoss", "DINOProjectionHead")
        self.cfg = cfg
        self.backbone = backbone
        with warnings.catch_warnings():  # lightly's head uses torch's deprecated weight_norm: not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            self.head = head_cls(backbone.dim, 512, 64, cfg.dino_out)
            self.teacher_head = head_cls(backbone.dim, 512, 64, cfg.dino_out)  # weight norm defeats deepcopy
        self.teacher = copy.deepcopy(backbone)
        self.teacher_head.load_state_dict(self.head.state_dict())
        for p in (*self.teacher.parameters(), *self.teacher_head.parameters()):
            p.requires_grad = False
        # Teacher temperature warms up over the first third of the run (at most 30 epochs).
        warm = max(1, min(30, cfg.epochs // 3))
        self.criterion = loss_cls(cfg.dino_out, warmup_teacher_temp=0.04, teacher_temp=0.07,
                                  warmup_teacher_temp_epochs=warm, student_temp=0.1)  # fmt: skip

    def trainable(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head}

    def extra(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher, "teacher_head": self.teacher_head, "criterion": self.criterion}

    outputs = ("backbone",)  # the head's output is a softmax over `dino_out` prototypes, not an embedding

    def encoder(self, output: str) -> nn.Module:
        return self.teacher

    def transform(self) -> Callable:
        side = self.cfg.image_size
        small = side <= 64
        return _lightly("DINOTransform")[0](
            global_crop_size=side,
            global_crop_scale=(max(self.cfg.min_scale, 0.4), 1.0),
            local_crop_size=max(8, side // 2),
            local_crop_scale=(0.1, max(self.cfg.min_scale, 0.4)),
            n_local_views=self.cfg.local_views,
            hf_prob=self.cfg.hflip,
            cj_strength=0.5 if small else 1.0,
            gaussian_blur=(0.0, 0.0, 0.0) if small else (1.0, 0.1, 0.5),
            solarization_prob=0.0 if small else 0.2,
            normalize=NORMALIZE,
        )

    def loss(self, views: list[torch.Tensor], autocast: bool, progress: float, epoch: int) -> torch.Tensor:
        n_global = 2
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            glob = torch.cat(views[:n_global])
            with torch.no_grad():
                teacher_out = self.teacher_head(self.teacher(glob)).float().chunk(n_global)
            student_out = list(self.head(self.backbone(glob)).float().chunk(n_global))
            if len(views) > n_global:  # local crops share a size: one forward for all of them
                local = self.head(self.backbone(torch.cat(views[n_global:]))).float()
                student_out += list(local.chunk(len(views) - n_global))
        return self.criterion(list(teacher_out), student_out, epoch=epoch)

    def after_step(self, progress: float) -> None:
        """EMA of the student into the teacher, momentum 0.99 -> 1 on a cosine over the run."""
        update = _lightly("update_momentum")[0]
        m = 1.0 - (1.0 - 0.99) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        update(self.backbone, self.teacher, m)
        update(self.head, self.teacher_head, m)


METHOD_CLASSES = {"simclr": SimCLR, "dino": DINO}
