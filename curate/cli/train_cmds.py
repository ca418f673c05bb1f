"""Command: train-encoder (a self-supervised encoder trained on the pool itself)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from curate.cli import app
from curate.cli.common import DeviceOpt, QuietOpt, StoreOpt, UrlOpt, console, err_console, fail, settings, store_from
from curate.ssl import ARCHS, CONFIG_FILE, METHODS, STATE_FILE, WEIGHTS_FILE
from curate.store import Condition, StoreError


def _is_path(source: str) -> bool:
    return Path(source).exists() or any(ch in source for ch in "*?[")


def _collection_paths(s, name: str) -> tuple[list[str], int]:  # noqa: ANN001 - config.Settings
    """Image paths stored in a collection's payload (`path`), without the images that failed."""
    with store_from(s) as store:
        if not store.has_collection(name):
            fail(f"{name!r} is neither a folder, glob or manifest nor a collection in {s.qdrant_url or s.store}")
        failed = len(store.ids_where(name, [Condition("failed", "==", True)]))
        paths = [
            p["path"]
            for batch in store.scan_payload(name, fields=["path", "failed"])
            for _, p in batch
            if p.get("path") and not p.get("failed")
        ]
    return paths, failed


@app.command("train-encoder")
def train_encoder(
    source: str = typer.Argument(..., help="Folder, glob or manifest of images, or the name of a collection "
                                 "in the store (its images' stored paths are read; failed images skipped)."),
    out: Path = typer.Option(..., "--out", "-o", help="Encoder folder to write (encoder.pt + encoder.json); "
                             "re-running the same command resumes after the last finished epoch."),
    method: str = typer.Option("simclr", "--method", help=f"Self-supervised method: {', '.join(METHODS)}."),
    arch: str = typer.Option("small-cnn", "--arch", help=f"Backbone: {', '.join(ARCHS)} (small-cnn suits CPUs)."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(256, "--batch-size", min=2),
    image_size: int = typer.Option(32, "--image-size", min=8, max=1024, help="Training and embedding side in px."),
    lr: float = typer.Option(1e-3, "--lr", min=1e-7, max=10.0, help="Peak AdamW learning rate (cosine schedule)."),
    temperature: float = typer.Option(0.5, "--temperature", min=0.01, max=10.0, help="NT-Xent temperature."),
    min_scale: float = typer.Option(0.25, "--min-scale", min=0.05, max=1.0, help="Smallest random crop, as a "
                                    "share of the image area (higher for small glyphs such as digits)."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Random horizontal flips (off for digits, text)."),
    seed: int = typer.Option(0, "--seed"),
    embed: str = typer.Option(None, "--embed", help="What ssl:OUT embeds with: backbone (default) or head "
                              "(SimCLR only: backbone + projection head, whose clusters suited selection on digits); "
                              "changing it on a finished run rewrites the folder without training."),
    init: Path = typer.Option(None, "--init", help="Start from a pretrained backbone: a local torchvision weights "
                              "file of --arch (e.g. ImageNet mobilenet_v2), loaded strictly, then adapted."),
    restart: bool = typer.Option(False, "--restart", help="Discard a previous run in --out and start over."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: one per core; "
                                "1 is often faster on a machine busy with other work)."),
    store: str = StoreOpt,
    qdrant_url: str = UrlOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a self-supervised encoder (SimCLR or DINO) on a pool's own images; embed with --model ssl:OUT.

    Example: curate train-encoder digits/ --arch small-cnn --epochs 10 --no-flip --out enc/digits
    """
    if method not in METHODS:
        fail(f"--method {method!r} is not implemented; choose one of {', '.join(METHODS)}")
    if embed not in (None, "head", "backbone"):
        fail(f"--embed {embed!r}: choose head or backbone")
    if arch not in ARCHS:
        fail(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if init is not None and not init.is_file():
        fail(f"--init {init}: no such file; give a local torchvision weights file (.pth/.pt) of --arch {arch}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; give a folder for the encoder")
    s = settings(store=store, qdrant_url=qdrant_url, device=device)
    failed_before = 0
    if _is_path(source):
        from curate.sources import SourceError, discover

        try:
            paths = discover(source).table["path"].to_list()
        except SourceError as e:
            fail(str(e))
        label = str(Path(source).resolve()) if Path(source).exists() else source
    else:
        try:
            paths, failed_before = _collection_paths(s, source)
        except StoreError as e:
            fail(str(e))
        label = f"collection {source} in {s.qdrant_url or Path(s.store).resolve()}"
    if restart:
        for name in (STATE_FILE, WEIGHTS_FILE, CONFIG_FILE):
            (out / name).unlink(missing_ok=True)

    # Heavy imports (torch, lightly) only once the options are known to be good.
    from curate.device import pick_device
    from curate.ssl.images import load_images
    from curate.ssl.train import TrainConfig, train

    try:
        dev = pick_device(s.device)
    except ValueError as e:
        fail(str(e))
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = TrainConfig(method=method, arch=arch, image_size=image_size, epochs=epochs, batch_size=batch_size,
                      lr=lr, temperature=temperature, min_scale=min_scale, hflip=0.5 if flip else 0.0, seed=seed,
                      init=str(init.expanduser().resolve()) if init else None, embed=embed)
    plain = not quiet and not err_console.is_terminal
    last = [0.0]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                  console=err_console, disable=quiet or plain) as bar:
        task = bar.add_task("decode", total=len(paths), info="")

        def on_step(epoch: int, step: int, steps: int, loss: float, ips: float) -> None:
            info = f"loss {loss:.3f}  {ips:,.0f} img/s"
            bar.update(task, description=f"epoch {epoch}/{epochs}", completed=step, total=steps, info=info)
            now = time.monotonic()
            if plain and (now - last[0] >= 5.0 or step == steps):
                last[0] = now
                err_console.print(f"epoch {epoch}/{epochs} step {step}/{steps} {info}", highlight=False)

        try:
            data = load_images(paths, image_size, lambda done, total: bar.update(task, completed=done))
            if data.failed:
                err_console.print(f"{len(data.failed)} image(s) could not be read and are skipped, e.g. "
                                  f"{data.failed[0][0]}: {data.failed[0][1]}", highlight=False, markup=False)
            report = train(data, cfg, out, dev, source=label, on_step=None if quiet else on_step)
        except ValueError as e:
            fail(str(e))
        except KeyboardInterrupt:
            done = _epochs_on_disk(out)
            err_console.print(f"interrupted: {done} epoch(s) saved in {out}; re-run the same command to resume")
            raise typer.Exit(130) from None
    if failed_before:
        err_console.print(f"{failed_before} image(s) marked failed in the collection were left out")
    console.print(report.summary(), highlight=False, markup=False)


def _epochs_on_disk(out: Path) -> int:
    import json

    try:
        return int(json.loads((out / CONFIG_FILE).read_text()).get("epochs_done", 0))
    except (OSError, ValueError):
        return 0
