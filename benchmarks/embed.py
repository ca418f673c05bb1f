"""Embedding throughput: the full pipeline (JPEG files -> vectors in a fresh embedded store) next to
the model-only forward rate and the decode-only rate on the same machine.

    python -m benchmarks.embed                    # CPU: small open_clip ViT (N=512) + ViT-B-32 (N=64), ~3-5 min
    python -m benchmarks.embed --device cuda      # GPU: ViT-B-32, ViT-B-16, ViT-L-14 on N=20,000
    python -m benchmarks.embed --models bench-vit-s:n=1024:b=64 --repeat 2 --json .bench/embed.json

Images: N JPEG files of 500x375 at quality 90, made from the photos that ship with scikit-image
(random crop of 35-100% of the area, resize, random flip, mild colour/contrast jitter), cached
under .bench/embed/ (git-ignored). They are read from the page cache, not from a cold disk.

Weights: no weights can be downloaded here, and throughput does not depend on weight values, so
every model is randomly initialised (seed 0) and saved as a local checkpoint that goes through
curate's ordinary `load_encoder(model, pretrained=<file>)` path. `bench-vit-s` is a small open_clip
config defined below (ViT, width 256, 4 layers, patch 32, 224 px, embed dim 256).

What is measured, per model (each repeated --repeat times; the median is shown):
- model: `encoder.encode_images` on preprocessed tensors already on the device (the call the
  pipeline makes; it includes autocast/channels_last on CUDA, L2-normalisation and the copy of the
  vectors back to the CPU), batch size B, after warm-up batches.
- decode: the pipeline's own DataLoader (curate.embed.DecodeDataset, same workers, collate,
  prefetch, worker start method) iterated with no model: read + sha256 + PIL decode + preprocess.
  On CUDA also `decode nvJPEG`: the GPU-decode path (workers read bytes, nvJPEG + tensor
  preprocess on the device).
- pipeline: `curate.embed.embed_pool` into a fresh embedded (Qdrant Edge) store, default workers,
  batch size B; the time is embed_pool's own (from after the resume check to the last vector
  flushed), so process start-up and model load are excluded, but worker start-up is included.
  `steady` is the rate after the first batch arrived (worker start-up and first-batch latency
  excluded), which is what a pool of millions sees.
- bound: what the pipeline could reach if it were free: on CPU the model and the decoders share
  the same cores, so 1 / (1/model + 1/decode); on CUDA min(model, decode of the chosen path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Deliberately no heavy imports at module level: DataLoader workers (forkserver) re-import the main
# module, and that import must not add seconds to every worker's start-up.

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "embed"
WIDTH, HEIGHT, QUALITY = 500, 375, 90

SMALL = "bench-vit-s"
SMALL_CONFIG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 256, "patch_size": 32, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 1},
}
CPU_MODELS = f"{SMALL}:n=512:b=64,ViT-B-32:n=64:b=16"
GPU_MODELS = "ViT-B-32:n=20000:b=256,ViT-B-16:n=20000:b=256,ViT-L-14:n=20000:b=256"

# skimage.data photos that ship inside the package (no download); grey ones are converted to RGB.
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "moon", "brick", "grass", "gravel", "horse", "page",
)


# ---------------------------------------------------------------------------------------------
# Machine facts


def machine() -> str:
    from curate.device import cpu_name

    cores = len(os.sched_getaffinity(0))
    text = f"{cpu_name()}, {cores} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.1f}/{b:.1f}/{c:.1f}"


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "curate"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty(curate/)" if dirty else "")
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# Images


def _photos() -> list:
    import numpy as np
    import skimage.data
    from PIL import Image

    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is simply not used
            continue
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        out.append(Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8)).convert("RGB"))
    if not out:
        raise SystemExit("no scikit-image sample photos found; pip install scikit-image")
    return out


def _make_one(args: tuple[int, int, str]) -> None:
    """Image i of the set (deterministic in seed and i): crop, resize, flip, jitter, JPEG q90."""
    import numpy as np
    from PIL import Image, ImageEnhance

    i, seed, path = args
    if not _PHOTOS_CACHE:
        _PHOTOS_CACHE.extend(_photos())
    photos = _PHOTOS_CACHE
    rng = np.random.default_rng([seed, i])
    src = photos[int(rng.integers(len(photos)))]
    w, h = src.size
    area = rng.uniform(0.35, 1.0) * w * h
    aspect = (WIDTH / HEIGHT) * float(np.exp(rng.uniform(-0.15, 0.15)))
    cw = int(min(w, round((area * aspect) ** 0.5)))
    ch = int(min(h, round(cw / aspect)))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.8, 1.2)))
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.85, 1.15)))
    tmp = path + ".tmp"
    img.save(tmp, format="JPEG", quality=QUALITY)
    os.replace(tmp, path)


_PHOTOS_CACHE: list = []


def make_images(n: int, seed: int = 0) -> Path:
    """N JPEG files under .bench/embed/jpeg-<seed>-<n>/, made once and reused."""
    folder = CACHE / f"jpeg-{seed}-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(i, seed, str(folder / f"img_{i:06d}.jpg")) for i in range(n)]
    todo = [t for t in todo if not os.path.isfile(t[2])]
    if todo:
        t0 = time.perf_counter()
        procs = min(len(os.sched_getaffinity(0)), 16)
        if len(todo) > 500 and procs > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(procs) as pool:
                pool.map(_make_one, todo, chunksize=64)
        else:
            for t in todo:
                _make_one(t)
        print(f"made {len(todo)} JPEGs {WIDTH}x{HEIGHT} q{QUALITY} in {folder} "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return folder


# ---------------------------------------------------------------------------------------------
# Models


def random_checkpoint(model: str) -> str:
    """Register `model` (our small config if it is SMALL) and write a randomly initialised
    checkpoint for it once; returns the checkpoint path for load_encoder(pretrained=...)."""
    import open_clip
    import torch

    folder = CACHE / "models"
    folder.mkdir(parents=True, exist_ok=True)
    if model == SMALL and SMALL not in open_clip.list_models():
        cfg = folder / f"{SMALL}.json"
        cfg.write_text(json.dumps(SMALL_CONFIG))
        open_clip.add_model_config(cfg)
    ckpt = folder / f"{model}-random-seed0.pt"
    if not ckpt.is_file():
        torch.manual_seed(0)
        m = open_clip.create_model(model, pretrained=None)
        tmp = ckpt.with_suffix(".tmp")
        torch.save(m.state_dict(), tmp)
        os.replace(tmp, ckpt)
    return str(ckpt)


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Row:
    model: str
    device: str
    n: int
    batch: int
    workers: int
    params_m: float = 0.0
    model_rate: list[float] = field(default_factory=list)
    decode_rate: list[float] = field(default_factory=list)
    decode_steady: list[float] = field(default_factory=list)
    nvjpeg_rate: list[float] = field(default_factory=list)
    pipeline: dict[str, list[float]] = field(default_factory=dict)  # gpu_decode mode -> rates
    pipeline_steady: dict[str, list[float]] = field(default_factory=dict)
    first_batch_s: dict[str, list[float]] = field(default_factory=dict)
    model_cpu_ms: list[float] = field(default_factory=list)
    decode_cpu_ms: list[float] = field(default_factory=list)
    pipeline_cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(encoder, folder: Path, batch: int, min_images: int, min_seconds: float) -> tuple[float, float]:
    """encode_images on preprocessed tensors already on the device: (images/s after warm-up,
    CPU ms per image of this process)."""
    import torch

    from curate.decode import decode_image

    files = sorted(folder.iterdir())[:batch]
    size = (encoder.image_size, encoder.image_size)
    rows = [encoder.preprocess(decode_image(f.read_bytes(), draft=size)[0]) for f in files]
    while len(rows) < batch:
        rows.extend(rows[: batch - len(rows)])
    x = torch.stack(rows).to(encoder.device)
    warm = 3 if encoder.device.type == "cuda" else 1
    for _ in range(warm):
        encoder.encode_images(x)
    _sync(encoder.device)
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while done < min_images or time.perf_counter() - t0 < min_seconds:
        encoder.encode_images(x)  # returns CPU tensors: synchronises on CUDA
        done += batch
    return done / (time.perf_counter() - t0), 1000 * (time.process_time() - c0) / done


def decode_cpu(encoder, folder: Path, n: int) -> float:
    """CPU ms per image of one decode worker's work (read, sha256, PIL decode, preprocess), measured
    in this process on one thread, the way _worker_init sets workers up."""
    import torch

    from curate.decode import DEFAULT_MAX_PIXELS
    from curate.embed import DecodeDataset, _collate

    paths = sorted(str(p) for p in folder.iterdir())[:n]
    ds = DecodeDataset(paths, encoder.image_transform, encoder.image_size, 20.0, DEFAULT_MAX_PIXELS, jpeg_bytes=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _collate([ds[0]])  # warm caches
        c0 = time.process_time()
        _collate([ds[i] for i in range(len(ds))])
        return 1000 * (time.process_time() - c0) / len(ds)
    finally:
        torch.set_num_threads(threads)


def _loader(encoder, paths: list[str], batch: int, workers: int, jpeg_bytes: bool):
    """The DataLoader embed_pool's local driver builds (`curate.embed.decode_loader`)."""
    from curate.decode import DEFAULT_MAX_PIXELS
    from curate.embed import Decoder, _worker_context, decode_loader

    decoder = Decoder(encoder.image_transform, encoder.image_size, 20.0, DEFAULT_MAX_PIXELS, jpeg_bytes=jpeg_bytes)
    return decode_loader(paths, decoder, encoder, batch, workers,
                         _worker_context(encoder.image_transform) if workers else None)


def decode_only(encoder, folder: Path, batch: int, workers: int, gpu: bool = False) -> tuple[float, float, float]:
    """(total rate, steady rate after the first batch, first-batch seconds) of the decode side alone.
    gpu=True: workers read bytes, nvJPEG decode + tensor preprocess on the device."""
    from curate.embed import _gpu_decode

    paths = sorted(str(p) for p in folder.iterdir())
    n = first_n = 0
    t0 = time.perf_counter()
    t_first = None
    for b in _loader(encoder, paths, batch, workers, jpeg_bytes=gpu):
        if gpu and b.jpeg is not None:
            o = b.jpeg_offsets
            imgs = _gpu_decode(encoder, [b.jpeg[o[k]: o[k + 1]] for k in range(len(b.jpeg_rows))])
            encoder.preprocess_uint8([i for i in imgs if not isinstance(i, str)])
            _sync(encoder.device)
        elif encoder.device.type == "cuda" and b.pixels is not None:
            b.pixels.to(encoder.device, non_blocking=True)
            _sync(encoder.device)
        n += len(b.items)
        if t_first is None:
            t_first, first_n = time.perf_counter(), n
    t1 = time.perf_counter()
    steady = (n - first_n) / (t1 - t_first) if t_first and n > first_n else float("nan")
    return n / (t1 - t0), steady, (t_first or t1) - t0


def pipeline(
    encoder, folder: Path, batch: int, workers: int | None, gpu_decode: str
) -> tuple[float, float, float, float]:
    """embed_pool into a fresh embedded store: (rate, steady rate after the first batch, first-batch s,
    CPU ms per image of the main process: model threads, collation, store writes). A mode ending in
    "-nowrite" (e.g. on-nowrite) runs that gpu_decode mode with the store's vector and payload writes
    replaced by no-ops: a diagnostic of what the writes cost, not a usable run."""
    nowrite = gpu_decode.endswith("-nowrite")
    gpu_decode = gpu_decode.removesuffix("-nowrite")
    from curate.embed import EmbedOptions, embed_pool
    from curate.sources import discover
    from curate.store import open_store

    pool = discover(folder)
    tmp = tempfile.mkdtemp(prefix="store-", dir=CACHE)
    stamps: list[tuple[float, int]] = []
    try:
        store = open_store(tmp)
        if nowrite:  # instance attributes shadow the methods for this store only
            store.upsert_points = lambda *a, **k: None
            store.upsert_vectors = lambda *a, **k: None
            store.count_vectors = lambda *a, **k: len(pool)
        try:
            c0 = time.process_time()
            report = embed_pool(
                pool, store, "bench", encoder,
                EmbedOptions(batch_size=batch, workers=workers, gpu_decode=gpu_decode, progress=False),
                on_progress=lambda done, total: stamps.append((time.perf_counter(), done)),
            )
            t1 = time.perf_counter()
            cpu = 1000 * (time.process_time() - c0) / len(pool)
            if report.embedded != len(pool) or report.failed:
                raise SystemExit(f"pipeline embedded {report.embedded} of {len(pool)} ({report.failed} failed)")
            if store.count_vectors("bench", encoder.name) != len(pool):
                raise SystemExit("pipeline: vectors missing from the store")
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # embed_pool's clock starts after its resume check (t1 - report.seconds); ours would add that check.
    first_t, first_n = stamps[0]
    steady = (len(pool) - first_n) / (t1 - first_t) if len(stamps) > 1 else float("nan")
    return report.rate, steady, first_t - (t1 - report.seconds), cpu


def parse_models(spec: str, n_default: int | None, b_default: int | None) -> list[tuple[str, int, int]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, *opts = item.split(":")
        kv = dict(o.split("=", 1) for o in opts)
        n = n_default or int(kv.get("n", 512))
        b = b_default or int(kv.get("b", 64))
        out.append((name, n, b))
    return out


def run_model(name: str, n: int, batch: int, args, device) -> Row:
    import torch

    from curate.embed import _default_workers
    from curate.encoders import load_encoder

    folder = make_images(n, args.seed)
    encoder = load_encoder(name, pretrained=random_checkpoint(name), device=device)
    workers = _default_workers() if args.workers is None else args.workers
    row = Row(name, device.type, n, batch, workers, load_before=load())
    row.params_m = sum(p.numel() for p in encoder.model.visual.parameters()) / 1e6
    modes = args.gpu_decode.split(",") if args.gpu_decode else (["on", "off"] if device.type == "cuda" else ["auto"])
    for r in range(args.repeat):
        print(f"[{name}] repeat {r + 1}/{args.repeat}: model-only ...", file=sys.stderr, flush=True)
        rate, cpu = model_only(encoder, folder, batch, min_images=min(n, 4 * batch) if device.type == "cpu"
                               else 20 * batch, min_seconds=args.min_seconds)
        row.model_rate.append(rate)
        row.model_cpu_ms.append(cpu)
        row.decode_cpu_ms.append(decode_cpu(encoder, folder, min(n, 128)))
        print(f"[{name}]   decode-only ...", file=sys.stderr, flush=True)
        total, steady, _ = decode_only(encoder, folder, batch, workers)
        row.decode_rate.append(total)
        row.decode_steady.append(steady)
        if device.type == "cuda":
            row.nvjpeg_rate.append(decode_only(encoder, folder, batch, workers, gpu=True)[1])
        for mode in modes:
            print(f"[{name}]   pipeline (gpu_decode={mode}) ...", file=sys.stderr, flush=True)
            rate, steady, first, cpu = pipeline(encoder, folder, batch, args.workers, mode)
            row.pipeline_cpu_ms.setdefault(mode, []).append(cpu)
            row.pipeline.setdefault(mode, []).append(rate)
            row.pipeline_steady.setdefault(mode, []).append(steady)
            row.first_batch_s.setdefault(mode, []).append(first)
    row.load_after = load()
    del encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------------------------
# Report


def _med(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def table(rows: list[Row]) -> str:
    head = ("| model | device | vision params | N | B | workers | model-only img/s | decode-only img/s "
            "(steady) | bound img/s | pipeline img/s (steady) | first batch s | pipeline / model-only "
            "(steady) | pipeline / bound (steady) | load avg before -> after |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = _med(r.model_rate)
        d, ds = _med(r.decode_rate), _med(r.decode_steady)
        for mode, rates in r.pipeline.items():
            p, ps = _med(rates), _med(r.pipeline_steady[mode])
            dec = _med(r.nvjpeg_rate) if r.device == "cuda" and mode.removesuffix("-nowrite") in ("on", "auto") else ds
            bound = min(m, dec) if r.device == "cuda" else 1.0 / (1.0 / m + 1.0 / ds)
            tag = f" (gpu_decode={mode})" if r.device == "cuda" else ""
            dec_txt = f"{_fmt(d)} ({_fmt(ds)})"
            if r.device == "cuda":
                dec_txt += f"; nvJPEG {_fmt(_med(r.nvjpeg_rate))}"
            lines.append(
                f"| {r.model}{tag} | {r.device} | {r.params_m:.1f} M | {r.n:,} | {r.batch} | {r.workers} | "
                f"{_fmt(m)} | {dec_txt} | {_fmt(bound)} | {_fmt(p)} ({_fmt(ps)}) | "
                f"{_med(r.first_batch_s[mode]):.2f} | {p / m:.2f} ({ps / m:.2f}) | "
                f"{p / bound:.2f} ({ps / bound:.2f}) | {r.load_before} -> {r.load_after} |"
            )
    return "\n".join(lines)


def cpu_table(rows: list[Row]) -> str:
    """Where the CPU time goes, per image. Robust to other load on a shared machine (wall-clock
    rates are not): on dedicated cores that both phases keep busy, pipeline / model-only is about
    model / (pipeline main process + decode)."""
    head = ("| model | device | model-only CPU ms/img | decode CPU ms/img (one worker) | pipeline main-process "
            "CPU ms/img | CPU-time ratio model / (main + decode) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in (r for r in rows if r.device == "cpu"):
        m, d = _med(r.model_cpu_ms), _med(r.decode_cpu_ms)
        for mode, cpus in r.pipeline_cpu_ms.items():
            p = _med(cpus)
            tag = f" (gpu_decode={mode})" if r.device == "cuda" else ""
            lines.append(f"| {r.model}{tag} | {r.device} | {m:.1f} | {d:.1f} | {p:.1f} | {m / (p + d):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default: cuda when available)")
    ap.add_argument("--models", default=None,
                    help=f"comma list of name[:n=N][:b=B] (CPU default {CPU_MODELS}; CUDA default {GPU_MODELS})")
    ap.add_argument("--n", type=int, default=None, help="images per model (overrides the per-model n)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the per-model b)")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: embed_pool's, one per core)")
    ap.add_argument("--gpu-decode", default=None, help="pipeline modes to run, e.g. on,off (CUDA default: on,off); "
                    "on-nowrite / off-nowrite: the same with the store writes stubbed out (diagnostic)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat every measurement; the median is reported")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="model-only: time at least this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the raw measurements here")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "initialized randomly" on purpose
    import torch

    from curate.device import pick_device

    device = pick_device(None if args.device == "auto" else args.device)
    models = parse_models(args.models or (GPU_MODELS if device.type == "cuda" else CPU_MODELS), args.n,
                          args.batch_size)
    command = "python -m benchmarks.embed " + " ".join(sys.argv[1:])
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    rows = [run_model(name, n, b, args, device) for name, n, b in models]
    print(f"# embed throughput, {started}\n")
    print(f"- machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} torch threads in the "
          f"main process; Python {platform.python_version()}; curate {git_rev()}")
    print(f"- command: `{command.strip()}` ({time.perf_counter() - t0:.0f} s)")
    print(f"- images: {WIDTH}x{HEIGHT} JPEG q{QUALITY} from scikit-image sample photos; weights: random init "
          f"(no downloads here; rates do not depend on weight values); median of {args.repeat} run(s)\n")
    print(table(rows))
    if any(r.device == "cpu" for r in rows):
        print()
        print(cpu_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"date": started, "machine": machine(), "command": command,
                                               "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
