"""Encoders: the local-checkpoint path gives exactly the model's outputs, specs rebuild the same
encoder, missing weights fail at once with the way out, and the baseline is exact."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_CLIP_SEED, register_tiny_clip
from PIL import Image, ImageFilter

from curate.encoders import EncoderError, encoder_from_spec, load_encoder, weights_available
from curate.encoders import base as enc_base

SLUG = re.compile(r"^[A-Za-z0-9_.-]+$")


def _photo(h: int, w: int, seed: int) -> Image.Image:
    """Smooth colour fields plus sensor-like noise: what resize paths see in real photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    a = np.stack([np.sin(6 * x + seed) * 0.5 + 0.5, np.cos(4 * y) * 0.5 + 0.5, x * y], -1) * 255
    a = a + rng.normal(0, 8, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    sizes = [(48, 64), (64, 64), (100, 130), (130, 90), (75, 100), (200, 40)]
    return [_photo(h, w, i) for i, (h, w) in enumerate(sizes)]


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return load_encoder(tiny_clip.model, tiny_clip.checkpoint, device="cpu")


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    path = tmp_path_factory.mktemp("timm") / "resnet10t_ssl.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No cached weights anywhere, whatever this machine holds."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _batch(enc, imgs) -> torch.Tensor:
    return torch.stack([enc.preprocess(i) for i in imgs])


def _uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# open_clip through the local-checkpoint path


def test_local_checkpoint_gives_the_saved_models_outputs(clip, tiny_clip, photos):
    direct = open_clip.create_model(tiny_clip.model, pretrained=None)
    direct.load_state_dict(torch.load(tiny_clip.checkpoint, weights_only=True))
    direct.eval()
    x = _batch(clip, photos)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(direct.encode_image(x), dim=-1)
    got = clip.encode_images(x)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (len(photos), 64)
    assert torch.allclose(got, ref, atol=1e-6)
    torch.manual_seed(TINY_CLIP_SEED + 1)  # a differently initialised model must differ: weights were loaded
    other = open_clip.create_model(tiny_clip.model, pretrained=None).eval()
    with torch.inference_mode():
        assert not torch.allclose(torch.nn.functional.normalize(other.encode_image(x), dim=-1), ref, atol=1e-3)
    assert (clip.dim, clip.image_size, clip.has_text) == (64, 64, True)
    assert torch.allclose(got.norm(dim=1), torch.ones(len(photos)), atol=1e-5)


def test_encode_texts_normalized_and_in_the_image_space(clip, tiny_clip):
    texts = ["a photo of a dog", "a photo of a cat", "a photo of a dog"]
    t = clip.encode_texts(texts)
    assert t.shape == (3, 64) and t.dtype == torch.float32
    assert torch.allclose(t.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t[0], t[2]) and not torch.allclose(t[0], t[1], atol=1e-3)
    direct = open_clip.create_model(tiny_clip.model, pretrained=None)
    direct.load_state_dict(torch.load(tiny_clip.checkpoint, weights_only=True))
    tokens = open_clip.get_tokenizer(tiny_clip.model)(texts)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(direct.eval().encode_text(tokens), dim=-1)
    assert torch.allclose(t, ref, atol=1e-6)
    assert clip.encode_texts([]).shape == (0, 64)


def test_spec_round_trip_rebuilds_the_same_encoder(clip, photos):
    spec = json.loads(json.dumps(clip.spec))
    assert {"family", "model", "pretrained", "dim"} <= set(spec)
    again = encoder_from_spec(spec, device="cpu")
    x = _batch(clip, photos)
    assert again.name == clip.name
    assert torch.equal(again.encode_images(x), clip.encode_images(x))


def test_spec_refuses_a_changed_checkpoint(clip):
    spec = dict(clip.spec, checkpoint_sha256="0" * 64)
    with pytest.raises(EncoderError, match="changed since these vectors were made"):
        encoder_from_spec(spec, device="cpu")


def test_tiny_clip_registration_is_deterministic(tiny_clip, tmp_path):
    model, checkpoint = register_tiny_clip(tmp_path)
    assert model == tiny_clip.model
    assert enc_base.file_sha256(checkpoint) == enc_base.file_sha256(tiny_clip.checkpoint)


def test_name_includes_checkpoint_stem_and_hash(clip, tiny_clip):
    sha = enc_base.file_sha256(tiny_clip.checkpoint)
    assert clip.name == f"clip_curate-tiny_curate-tiny-{sha[:8]}"
    assert clip.spec["checkpoint_sha256"] == sha and SLUG.match(clip.name)


# ---------------------------------------------------------------------------------------------
# Failing fast, with the way out


def test_uncached_tag_offline_fails_at_once_with_the_way_out(empty_caches):
    t0 = time.monotonic()
    with pytest.raises(EncoderError) as e:
        load_encoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert time.monotonic() - t0 < 2
    assert "--pretrained" in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    assert not weights_available("ViT-B-32")


def test_unknown_tag_lists_known_tags_and_the_way_out():
    t0 = time.monotonic()
    with pytest.raises(EncoderError) as e:
        load_encoder("ViT-B-32", "no_such_tag", device="cpu")
    assert time.monotonic() - t0 < 2
    msg = str(e.value)
    assert "no_such_tag" in msg and "laion2b_s34b_b79k" in msg and "--pretrained" in msg
    assert "\n" not in msg


def test_unreachable_hub_fails_fast_without_offline_flag(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(enc_base, "_PROBES", {})
    t0 = time.monotonic()
    with pytest.raises(EncoderError) as e:
        load_encoder("ViT-B-32", device="cpu")
    assert time.monotonic() - t0 < 3
    assert "unreachable" in str(e.value) and "--pretrained" in str(e.value)


def test_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "weights" / "model.bin"
    with pytest.raises(EncoderError) as e:
        load_encoder("ViT-B-32", str(missing), device="cpu")
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
    assert not weights_available("ViT-B-32", str(missing))


def test_wrong_checkpoint_for_the_architecture(tiny_clip):
    with pytest.raises(EncoderError) as e:
        load_encoder("RN50", tiny_clip.checkpoint, device="cpu")
    assert tiny_clip.checkpoint in str(e.value) and "RN50" in str(e.value)


def test_unknown_models_and_devices():
    with pytest.raises(EncoderError, match="unknown open_clip model 'ViT-Q-99'"):
        load_encoder("ViT-Q-99")
    assert not weights_available("ViT-Q-99")
    with pytest.raises(EncoderError, match="unknown timm model"):
        load_encoder("timm:not_a_real_net")
    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="CUDA is not available"):
            load_encoder("pixels", device="cuda")


# ---------------------------------------------------------------------------------------------
# pixels


def test_pixels_matches_a_numpy_reference(photos):
    enc = load_encoder("pixels", device="cpu")
    got = enc.encode_images(_batch(enc, photos)).numpy()
    for img, row in zip(photos, got, strict=True):
        thumb = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR), np.float64) / 255.0
        ref = thumb.transpose(2, 0, 1).reshape(-1)
        ref /= np.linalg.norm(ref)
        np.testing.assert_allclose(row, ref, atol=1e-6)
    assert (enc.name, enc.dim, enc.image_size, enc.has_text) == ("pixels16", 768, 16, False)
    black = enc.encode_images(_batch(enc, [Image.new("RGB", (20, 20))]))
    gray = enc.encode_images(_batch(enc, [Image.new("RGB", (20, 20), (90, 90, 90))]))
    assert torch.allclose(black, gray) and torch.allclose(black, torch.full((1, 768), 768**-0.5))
    with pytest.raises(EncoderError, match="no text tower"):
        enc.encode_texts(["a dog"])
    assert encoder_from_spec(json.loads(json.dumps(enc.spec))).name == "pixels16"
    assert enc.encode_images(torch.zeros(0, 3, 16, 16)).shape == (0, 768)


# ---------------------------------------------------------------------------------------------
# GPU-decode path: uint8 tensors through torch ops


@pytest.mark.parametrize("family", ["clip", "pixels"])
def test_preprocess_uint8_matches_preprocess(family, clip, photos):
    enc = clip if family == "clip" else load_encoder("pixels", device="cpu")
    ref = _batch(enc, photos)
    got = enc.preprocess_uint8([_uint8(p) for p in photos])  # mixed sizes
    assert got.shape == ref.shape and got.device == enc.device
    diff = (got - ref).abs()
    std = 0.26 if family == "clip" else 1.0  # one grey level after normalization
    assert diff.max() <= 1.5 / 255 / std and diff.mean() < 0.3 / 255 / std
    cos = (enc.encode_images(got) * enc.encode_images(ref)).sum(1)
    assert cos.min() > 0.999
    same = [photos[0], photos[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    nchw = torch.stack([_uint8(p) for p in same])  # one N x C x H x W uint8 batch
    assert torch.allclose(enc.preprocess_uint8(nchw), enc.preprocess_uint8(list(nchw)))


def test_preprocess_uint8_handles_gray_and_alpha(clip, photos):
    img = photos[2]
    gray = img.convert("L")
    got = clip.preprocess_uint8([torch.from_numpy(np.array(gray))[None]])
    ref = clip.preprocess(gray.convert("RGB"))[None]
    assert (got - ref).abs().max() <= 1.5 / 255 / 0.26
    rgba = np.dstack([np.array(img), np.full(img.size[::-1], 0, np.uint8)])  # fully transparent
    white = clip.preprocess(Image.new("RGB", img.size, (255, 255, 255)))[None]
    got = clip.preprocess_uint8([torch.from_numpy(rgba).permute(2, 0, 1)])
    assert (got - white).abs().max() < 1e-5
    assert clip.supports_uint8


# ---------------------------------------------------------------------------------------------
# timm


def test_timm_local_checkpoint(timm_checkpoint, photos, empty_caches):
    model, path = timm_checkpoint
    enc = load_encoder("timm:resnet10t", path, device="cpu")
    x = _batch(enc, photos[:3])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model(x), dim=-1)
    got = enc.encode_images(x)
    assert torch.allclose(got, ref, atol=1e-6)
    assert (enc.dim, enc.has_text, enc.image_size) == (model.num_features, False, 176)
    sha = enc_base.file_sha256(path)
    assert enc.name == f"timm_resnet10t_resnet10t_ssl-{sha[:8]}" and SLUG.match(enc.name)
    with pytest.raises(EncoderError, match="no text tower"):
        enc.encode_texts(["a dog"])
    again = encoder_from_spec(json.loads(json.dumps(enc.spec)), device="cpu")
    assert torch.equal(again.encode_images(x), got)
    u = enc.preprocess_uint8([_uint8(p) for p in photos[:3]])
    assert (u - x).abs().max() <= 1.5 / 255 / 0.224
    assert weights_available("timm:resnet10t", path)
    t0 = time.monotonic()
    with pytest.raises(EncoderError, match="--pretrained"):
        load_encoder("timm:resnet10t", device="cpu")  # hub weights: not cached, offline
    assert time.monotonic() - t0 < 2
    assert not weights_available("timm:resnet10t")
    with pytest.raises(EncoderError, match="known tags: c3_in1k"):
        load_encoder("timm:resnet10t", "no_such_tag")


def test_names_are_valid_distinct_slugs(clip, timm_checkpoint):
    names = [clip.name, load_encoder("pixels").name, load_encoder("timm:resnet10t", timm_checkpoint[1]).name]
    assert all(SLUG.match(n) for n in names) and len(set(names)) == 3
    assert enc_base.slug("clip", "ViT-B-32", "laion2b_s34b_b79k") == "clip_ViT-B-32_laion2b_s34b_b79k"
    assert enc_base.slug("clip", "hf-hub:org/model name") == "clip_hf-hub-org-model-name"


def test_weights_available_is_fast_and_offline(tiny_clip, empty_caches):
    t0 = time.monotonic()
    assert weights_available("pixels")
    assert weights_available(tiny_clip.model, tiny_clip.checkpoint)
    assert not weights_available("ViT-B-32", "laion2b_s34b_b79k")
    assert not weights_available("ViT-B-32", "no_such_tag")
    assert time.monotonic() - t0 < 1


def test_image_transforms_pickle_for_worker_processes(clip, timm_checkpoint, photos):
    import pickle

    for enc in (clip, load_encoder("pixels"), load_encoder("timm:resnet10t", timm_checkpoint[1])):
        transform = pickle.loads(pickle.dumps(enc.image_transform))
        assert torch.equal(transform(photos[2]), enc.preprocess(photos[2])), enc.name


def test_a_tag_wins_over_a_same_named_file(tmp_path, monkeypatch, empty_caches):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "laion2b_s34b_b79k").write_bytes(b"not weights")
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE"):  # resolved as the tag, not the file
        load_encoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
