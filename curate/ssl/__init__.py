"""Self-supervised encoders trained on the pool itself (`curate train-encoder`).

archs.py    backbones (torch only: loading a trained encoder needs nothing else)
images.py   the pool's images, decoded once and kept small in memory
methods.py  SimCLR and DINO: lightly's heads, losses and view transforms, sized for small images
train.py    the training loop, pretrained starts (--init), checkpoints and resume

This module imports nothing heavy, so the CLI can validate options before torch loads.
"""

ARCHS = ("small-cnn", "resnet18", "mobilenet_v2")
METHODS = ("simclr", "dino")
CONFIG_FILE = "encoder.json"  # what `ssl:DIR` reads: arch, size, normalisation, training, pool
WEIGHTS_FILE = "encoder.pt"  # backbone state dict, loaded weights-only and strictly
STATE_FILE = "train_state.pt"  # backbone + head + optimizer after the last finished epoch
FORMAT = "curate-ssl/1"
