"""Self-supervised training (curate train-encoder) and the ssl: encoder family, on tiny data:
the loss goes down, an interrupted run resumes to exactly the uninterrupted result, the trained
folder embeds like the network it holds, and loading is strict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("lightly", reason="lightly (the ssl/test extra) is needed for train-encoder tests")

from curate.cli import app  # noqa: E402
from curate.encoders import EncoderError, encoder_from_spec, load_encoder  # noqa: E402
from curate.ssl import CONFIG_FILE, STATE_FILE, WEIGHTS_FILE  # noqa: E402
from curate.ssl.archs import ProjectionHead, build_backbone, build_encoder  # noqa: E402
from curate.ssl.images import TrainImages  # noqa: E402
from curate.ssl.train import Run, TrainConfig, train  # noqa: E402

CPU = torch.device("cpu")
CFG = TrainConfig(image_size=16, epochs=2, batch_size=8, lr=3e-3, hflip=0.0)
DINO = TrainConfig(**{**CFG.settings(), "epochs": 2, "method": "dino", "dino_out": 64})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a loaded 2-core machine OpenMP's
    spinning barriers made each step ~30x slower (3 s instead of 0.08 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int = 16, side: int = 20) -> list[Image.Image]:
    """Blobs at different places and colours: enough structure for a contrastive loss."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        a = np.full((side, side, 3), 30, np.uint8)
        y, x = rng.integers(0, side - 8, 2)
        a[y : y + 8, x : x + 8] = rng.integers(80, 256, 3)
        out.append(Image.fromarray(a))
    return out


@pytest.fixture(scope="module")
def data() -> TrainImages:
    imgs = _images()
    return TrainImages(imgs, [f"/pool/{i:03d}.png" for i in range(len(imgs))])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("ssl") / "enc"
    report = train(data, CFG, out, CPU, source="/pool")
    return out, report


def _fixed_batch(run: Run, images: list[Image.Image]) -> list[torch.Tensor]:
    torch.manual_seed(0)
    transform = run.method.transform()
    return [torch.stack(v) for v in zip(*[transform(im) for im in images], strict=True)]


def test_loss_decreases_on_a_fixed_batch(data):
    run = Run(CFG, CPU)
    views = _fixed_batch(run, data.images)
    losses = [run.step(views, 3e-3) for _ in range(12)]
    assert losses[-1] < losses[0] - 0.3, losses


def test_dino_student_learns_the_teacher_on_a_fixed_batch(data):
    """Two global crops and two half-size local crops per image; the student's cross-entropy
    to the EMA teacher falls, and the teacher moves (EMA) while never getting gradients."""
    run = Run(DINO, CPU)
    views = _fixed_batch(run, data.images)
    assert [tuple(v.shape) for v in views] == [(16, 3, 16, 16)] * 2 + [(16, 3, 8, 8)] * 2
    teacher0 = {k: v.clone() for k, v in run.method.teacher.state_dict().items()}
    losses = [run.step(views, 3e-3, progress=i / 12) for i in range(5)]
    assert losses[-1] < losses[0] - 1.0, losses
    assert all(p.grad is None for p in run.method.teacher.parameters())
    moved = [k for k, v in run.method.teacher.state_dict().items() if not torch.equal(v, teacher0[k])]
    assert "features.0.weight" in moved


def test_training_writes_an_encoder_folder(trained, data):
    out, report = trained
    assert (report.epochs_done, report.epochs_run, report.images, report.resumed_from) == (2, 2, 16, 0)
    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert (cfg["arch"], cfg["output"], cfg["dim"], cfg["image_size"]) == ("small-cnn", "backbone", 256, 16)
    assert cfg["epochs_done"] == 2
    assert cfg["training"]["batch_size"] == 8 and cfg["training"]["epochs"] == 2
    assert cfg["pool"]["images"] == 16 and cfg["pool"]["source"] == "/pool" and len(cfg["losses"]) == 2
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporaries
    again = train(data, CFG, out, CPU)  # finished: nothing to do
    assert again.epochs_run == 0 and "already trained for 2 epochs" in again.summary()


def test_interrupted_run_resumes_to_the_uninterrupted_result(trained, data, tmp_path):
    full, _ = trained
    out = tmp_path / "enc"

    def stop_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, CFG, out, CPU, on_epoch=stop_after_first)
    assert json.loads((out / CONFIG_FILE).read_text())["epochs_done"] == 1
    resumed = train(data, CFG, out, CPU)
    assert (resumed.resumed_from, resumed.epochs_run, resumed.epochs_done) == (1, 1, 2)
    a = torch.load(full / STATE_FILE, weights_only=True)
    b = torch.load(out / STATE_FILE, weights_only=True)
    assert a["losses"] == b["losses"] and a["epoch"] == b["epoch"] == 2
    for part in ("backbone", "head"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])


def test_resume_refuses_other_settings_or_another_pool(trained, data):
    out, _ = trained
    with pytest.raises(ValueError, match="other settings: lr"):
        train(data, TrainConfig(**{**CFG.settings(), "epochs": 3, "lr": 1e-2}), out, CPU)
    fewer = TrainImages(data.images[:10], data.paths[:10])
    with pytest.raises(ValueError, match="another set of images"):
        train(fewer, TrainConfig(**{**CFG.settings(), "epochs": 3}), out, CPU)


def test_ssl_encoder_gives_the_backbones_vectors_identically_on_reload(trained, data):
    out, _ = trained
    enc = load_encoder(f"ssl:{out}", device="cpu")
    x = torch.stack([enc.preprocess(im) for im in data.images[:5]])
    assert x.shape == (5, 3, 16, 16)
    got = enc.encode_images(x)
    net = build_backbone("small-cnn", 16)
    net.load_state_dict(torch.load(out / WEIGHTS_FILE, weights_only=True))
    meta = json.loads((out / CONFIG_FILE).read_text())
    center, scale = torch.tensor(meta["center"]), torch.tensor(meta["scale"])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize((net.eval()(x) - center) / scale, dim=-1)
    assert got.shape == (5, 256) and torch.allclose(got, ref, atol=1e-6)
    again = encoder_from_spec(json.loads(json.dumps(enc.spec)), device="cpu")
    assert again.name == enc.name == f"ssl_enc_{enc.spec['checkpoint_sha256'][:8]}"
    assert torch.equal(again.encode_images(x), got)


def test_pool_stats_standardize_the_pools_features_and_old_folders_embed_raw(trained, data, tmp_path):
    """encoder.json's center/scale are the mean and std of each backbone feature over the pool
    (all 16 images here), so the pool's standardized features have mean 0 and std 1; a folder
    without them embeds the raw feature, and a finished one gets them on the next run."""
    out, _ = trained
    cfg = json.loads((out / CONFIG_FILE).read_text())
    enc = load_encoder(f"ssl:{out}", device="cpu")
    x = torch.stack([enc.preprocess(im) for im in data.images])
    with torch.inference_mode():
        feats = enc.model(x)
    assert len(cfg["center"]) == len(cfg["scale"]) == 256
    assert torch.allclose(torch.tensor(cfg["center"]), feats.mean(0), atol=1e-5)
    z = (feats - enc.center) / enc.scale
    assert torch.allclose(z.mean(0), torch.zeros(256), atol=1e-4)
    varying = feats.std(0) > 1e-3
    assert torch.allclose(z.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    old = tmp_path / "old"
    old.mkdir()
    (old / CONFIG_FILE).write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("center", "scale")}))
    (old / WEIGHTS_FILE).write_bytes((out / WEIGHTS_FILE).read_bytes())
    raw = load_encoder(f"ssl:{old}", device="cpu").encode_images(x)
    assert torch.allclose(raw, torch.nn.functional.normalize(feats, dim=-1), atol=1e-6)
    (old / CONFIG_FILE).write_text(json.dumps({**cfg, "center": cfg["center"][:10]}))
    with pytest.raises(EncoderError, match="center has 10 values, the small-cnn has 256"):
        load_encoder(f"ssl:{old}", device="cpu")
    for name in (STATE_FILE, WEIGHTS_FILE):
        (old / name).write_bytes((out / name).read_bytes())
    (old / CONFIG_FILE).write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("center", "scale")}))
    assert train(data, CFG, old, CPU).epochs_run == 0
    assert json.loads((old / CONFIG_FILE).read_text())["scale"] == cfg["scale"]


def test_embed_head_rewrites_a_finished_folder_to_embed_with_the_projection_head(trained, data, tmp_path):
    """--embed head on a finished SimCLR run: no training, the folder now holds backbone + head
    and ssl: gives the standardized head output of exactly the trained modules."""
    out, _ = trained
    enc_dir = tmp_path / "enc"
    enc_dir.mkdir()
    for f in out.iterdir():
        (enc_dir / f.name).write_bytes(f.read_bytes())
    report = train(data, TrainConfig(**{**CFG.settings(), "epochs": 2, "embed": "head"}), enc_dir, CPU)
    cfg = json.loads((enc_dir / CONFIG_FILE).read_text())
    assert report.epochs_run == 0 and (cfg["output"], cfg["dim"], len(cfg["scale"])) == ("head", 128, 128)
    enc = load_encoder(f"ssl:{enc_dir}", device="cpu")
    x = torch.stack([enc.preprocess(im) for im in data.images[:5]])
    run = Run(CFG, CPU)
    run.restore(enc_dir / STATE_FILE, torch.load(enc_dir / STATE_FILE, weights_only=True)["pool"])
    net = torch.nn.Sequential(run.method.backbone, run.method.head).eval()
    center, scale = torch.tensor(cfg["center"]), torch.tensor(cfg["scale"])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize((net(x) - center) / scale, dim=-1)
    got = enc.encode_images(x)
    assert got.shape == (5, 128) and torch.allclose(got, ref, atol=1e-6)
    assert enc.name != load_encoder(f"ssl:{out}", device="cpu").name  # other weights file, other vector name
    sd = torch.load(enc_dir / WEIGHTS_FILE, weights_only=True)
    torch.save({k: v for k, v in sd.items() if not k.startswith("head.layers.4.")}, enc_dir / WEIGHTS_FILE)
    with pytest.raises(EncoderError, match=r"fills \d+ of \d+ tensors of ssl small-cnn \+ projection head"):
        load_encoder(f"ssl:{enc_dir}", device="cpu")
    train(data, TrainConfig(**{**CFG.settings(), "epochs": 2}), enc_dir, CPU)  # back to the backbone
    assert (enc_dir / WEIGHTS_FILE).read_bytes() == (out / WEIGHTS_FILE).read_bytes()
    with pytest.raises(ValueError, match="--embed 'head': a dino encoder embeds with backbone"):
        Run(TrainConfig(**{**DINO.settings(), "embed": "head"}), CPU)


def test_projection_head_has_lightlys_layout_so_older_checkpoints_resume():
    from lightly.models.modules.heads import SimCLRProjectionHead

    theirs = SimCLRProjectionHead(256, 256, 128).state_dict()
    ours = ProjectionHead(256, 256, 128)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs, strict=True)
    enc = build_encoder("small-cnn", 16, "head", 128)
    assert enc.dim == 128 and enc(torch.zeros(2, 3, 16, 16)).shape == (2, 128)
    with pytest.raises(ValueError, match="unknown output 'neck'"):
        build_encoder("small-cnn", 16, "neck", 128)


def test_ssl_loading_is_strict(trained, tmp_path):
    out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((out / CONFIG_FILE).read_text())
    (bad / CONFIG_FILE).write_text(json.dumps({**cfg, "arch": "resnet18", "dim": 512}))
    (bad / WEIGHTS_FILE).write_bytes((out / WEIGHTS_FILE).read_bytes())
    with pytest.raises(EncoderError, match=r"fills 0 of \d+ tensors of ssl resnet18"):
        load_encoder(f"ssl:{bad}", device="cpu")
    (bad / CONFIG_FILE).write_text(json.dumps(cfg))
    sd = torch.load(out / WEIGHTS_FILE, weights_only=True)
    torch.save({k: v for k, v in sd.items() if not k.startswith("features.0.")}, bad / WEIGHTS_FILE)
    with pytest.raises(EncoderError, match=r"fills \d+ of \d+ tensors of ssl small-cnn"):
        load_encoder(f"ssl:{bad}", device="cpu")
    with pytest.raises(EncoderError, match="no encoder.json; train an encoder there"):
        load_encoder(f"ssl:{tmp_path / 'nothing'}", device="cpu")
    with pytest.raises(EncoderError, match="drop --pretrained"):
        load_encoder(f"ssl:{out}", "x.pt", device="cpu")


def test_cli_trains_on_a_collection_skipping_failed_images_and_embeds_with_it(tmp_path):
    runner = CliRunner()
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, im in enumerate(_images(12)):
        im.save(pool / f"{i:02d}.png")
    (pool / "broken.png").write_bytes(b"not a png")
    store = str(tmp_path / "store")
    r = runner.invoke(app, ["embed", str(pool), "--model", "pixels", "--store", store, "-c", "px", "--workers", "0"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "enc"
    args = ["train-encoder", "px", "--out", str(out), "--epochs", "1", "--batch-size", "4", "--image-size", "16"]
    r = runner.invoke(app, [*args, "--store", store, "-q"])
    assert r.exit_code == 0, r.output
    assert "trained 1 epoch(s) on 12 images" in r.output and "1 image(s) marked failed" in r.output
    seen = json.loads((out / CONFIG_FILE).read_text())["pool"]
    assert seen["images"] == 12 and seen["source"].startswith("collection px in ")
    r = runner.invoke(app, ["embed", str(pool), "--model", f"ssl:{out}", "--store", store, "-c", "px",
                            "--workers", "0"])  # fmt: skip
    assert r.exit_code == 0 and "12 embedded" in r.output, r.output
    r = runner.invoke(app, ["train-encoder", "nope", "--out", str(out), "--store", store])
    assert r.exit_code == 2 and "neither a folder, glob or manifest nor a collection" in r.output
    r = runner.invoke(app, ["train-encoder", str(pool), "--out", str(out), "--arch", "vit-huge", "--store", store])
    assert r.exit_code == 2 and "--arch 'vit-huge': choose one of small-cnn, resnet18" in r.output


def test_cli_dino_and_init_options(tmp_path):
    runner = CliRunner()
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, im in enumerate(_images(8)):
        im.save(pool / f"{i:02d}.png")
    out = tmp_path / "enc"
    base = ["train-encoder", str(pool), "--out", str(out), "--image-size", "16", "--batch-size", "8", "-q"]
    r = runner.invoke(app, [*base, "--init", str(tmp_path / "nope.pth")])
    assert r.exit_code == 2 and "--init" in r.output and "no such file" in r.output, r.output
    r = runner.invoke(app, [*base, "--method", "byol"])
    assert r.exit_code == 2 and "choose one of simclr, dino" in r.output, r.output
    r = runner.invoke(app, [*base, "--embed", "neck"])
    assert r.exit_code == 2 and "--embed 'neck': choose head or backbone" in r.output, r.output
    r = runner.invoke(app, [*base, "--method", "dino", "--embed", "head"])
    assert r.exit_code == 2 and "a dino encoder embeds with backbone" in r.output, r.output
    r = runner.invoke(app, [*base, "--method", "dino", "--epochs", "1"])
    assert r.exit_code == 0 and "trained 1 epoch(s) on 8 images" in r.output, r.output
    assert json.loads((out / CONFIG_FILE).read_text())["training"]["method"] == "dino"


def test_missing_lightly_is_a_one_line_error(monkeypatch, data, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "lightly.loss.ntx_ent_loss", None)
    with pytest.raises(ValueError, match=r"needs the lightly package .*pip install 'curate\[ssl\]'"):
        train(data, CFG, tmp_path / "enc", CPU)


def test_dino_trains_resumes_exactly_and_embeds_with_the_teacher(data, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(data, DINO, full, CPU)

    def stop_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, DINO, part, CPU, on_epoch=stop_after_first)
    assert train(data, DINO, part, CPU).resumed_from == 1
    a = torch.load(full / STATE_FILE, weights_only=True)
    b = torch.load(part / STATE_FILE, weights_only=True)
    assert a["losses"] == b["losses"] and len(a["losses"]) == 2
    for part_name in ("backbone", "head", "teacher", "teacher_head", "criterion"):
        assert all(torch.equal(a[part_name][k], b[part_name][k]) for k in a[part_name]), part_name
    saved = torch.load(full / WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(saved[k], a["teacher"][k]) for k in saved)  # the encoder is the teacher
    assert not all(torch.equal(saved[k], a["backbone"][k]) for k in saved)
    enc = load_encoder(f"ssl:{full}", device="cpu")
    x = torch.stack([enc.preprocess(im) for im in data.images[:4]])
    assert torch.equal(enc.encode_images(x), load_encoder(f"ssl:{full}", device="cpu").encode_images(x))
    assert json.loads((full / CONFIG_FILE).read_text())["training"]["method"] == "dino"


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_init_loads_every_tensor_of_a_torchvision_checkpoint(arch, data, tmp_path):
    """A torchvision classifier's file (its head included) starts the backbone: every tensor
    is the file's; the run records the file's hash; another architecture's file is refused."""
    import torchvision

    size = 16 if arch == "mobilenet_v2" else 72  # resnet18 keeps its ImageNet stem above 64 px
    torch.manual_seed(1)
    ref = getattr(torchvision.models, arch)(weights=None)
    ckpt = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), ckpt)
    cfg = TrainConfig(**{**CFG.settings(), "arch": arch, "image_size": size, "init": str(ckpt), "epochs": 1})
    run = Run(cfg, CPU)
    run.start_from(str(ckpt))
    own = run.method.backbone.state_dict()
    want = ref.state_dict()
    assert len(own) > 50 and all(torch.equal(v, want[k]) for k, v in own.items())
    assert run.init_sha256 and len(run.init_sha256) == 64
    other = "resnet18" if arch == "mobilenet_v2" else "mobilenet_v2"
    torch.save(getattr(torchvision.models, other)(weights=None).state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"--init: checkpoint .*other.pth fills 0 of \d+ tensors"):
        Run(cfg, CPU).start_from(str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="no such file"):
        Run(cfg, CPU).start_from(str(tmp_path / "missing.pth"))


def test_init_into_the_small_image_resnet_stem_says_what_to_do(tmp_path):
    import torchvision

    ckpt = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    cfg = TrainConfig(**{**CFG.settings(), "arch": "resnet18", "image_size": 32})
    with pytest.raises(ValueError, match="7x7 ImageNet stem does not fit .* use --image-size 65 or more"):
        Run(cfg, CPU).start_from(str(ckpt))


def test_training_from_init_records_it_and_resume_needs_the_same_file(data, tmp_path):
    import torchvision

    ckpt = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), ckpt)
    cfg = TrainConfig(**{**CFG.settings(), "arch": "mobilenet_v2", "init": str(ckpt), "epochs": 1, "batch_size": 16})
    train(data, cfg, tmp_path / "enc", CPU)
    meta = json.loads((tmp_path / "enc" / CONFIG_FILE).read_text())
    assert (meta["arch"], meta["output"], meta["dim"]) == ("mobilenet_v2", "backbone", 1280)
    assert meta["training"]["init"] == str(ckpt) and len(meta["training"]["init_sha256"]) == 64
    with pytest.raises(ValueError, match="other settings: init"):
        train(data, TrainConfig(**{**cfg.settings(), "init": None, "epochs": 2}), tmp_path / "enc", CPU)
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), ckpt)  # other weights, same path
    with pytest.raises(ValueError, match="changed since this run started"):
        train(data, TrainConfig(**{**cfg.settings(), "epochs": 2}), tmp_path / "enc", CPU)
