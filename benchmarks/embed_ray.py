"""`curate embed --engine ray` next to the local engine, on the same JPEGs, encoder and machine.

    python -m benchmarks.embed_ray                                  # pixels on 2,000 JPEGs, then ViT-S-32 on 256
    python -m benchmarks.embed_ray --models pixels:n=2000:b=64 --actors 1,2 --json .bench/embed_ray.json

Images: the 2,000 textile JPEGs (250x250) of the conformal-clip-data package (the first N, listed in
a manifest). Weights: benchmarks/embed.py's (open_clip models randomly initialised, saved once as a
local checkpoint under .bench/embed/; the Ray actors rebuild the encoder from its spec, i.e. from
that file). `pixels` (a 16x16 thumbnail) costs next to
nothing to encode, so its rows measure the pipelines themselves (decode, transfer, store writes);
a ViT row measures a compute-bound run.

Per row, each engine embeds the N files into a fresh embedded store with `embed_pool`; the time is
embed_pool's own clock (from after the resume check to the last vector flushed): the Ray cluster is
started once before (2 CPUs, like these machines), so cluster start-up is excluded, but Ray Data's
task and actor start-up, like the local engine's DataLoader worker start-up, is included. *steady*
(local engine only) is the rate after the first batch came back; for Ray it means nothing, because
Ray Data computes many blocks ahead while the first one is still on its way back (preserve_order),
so "after the first batch" counts work done before it. Ray runs: R actors (--actors), each on
(CPUs - 1) / R CPUs; decode tasks get the remaining CPU (see curate.embed_ray.plan_actors).

    python -m benchmarks.embed_ray --writers --models pixels:n=2000:b=64

--writers: who writes to a server store. No Qdrant server runs here, so the "server" is
qdrant-client's local mode on a folder (one process at a time: ONE actor, which opens the folder
per batch, loading what is stored so far, and the driver's client closed meanwhile). Rows: the
local engine, then Ray with the driver writing (the store's worker_spec hidden, as for the
embedded store: vectors stream back in order) and Ray with the actor writing (only records come
back, batches in any order). Local mode is a Python in-process store, not a server: the rows
compare where the write runs, not a server's ingest rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.embed import git_rev, load, machine, random_checkpoint

MANIFESTS = Path(__file__).resolve().parent.parent / ".bench" / "embed_ray"

DEFAULT_MODELS = "pixels:n=2000:b=64,ViT-S-32:n=256:b=32"


def textile_manifest(n: int) -> Path:
    """A manifest of the first n of conformal-clip-data's 2,000 textile JPEGs."""
    import conformal_clip_data

    root = Path(conformal_clip_data.__file__).parent / "data" / "textile_images"
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    if len(files) < n:
        raise SystemExit(f"conformal-clip-data holds {len(files)} textile JPEGs, fewer than n={n}")
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    out = MANIFESTS / f"textile-{n}.csv"
    out.write_text("path\n" + "\n".join(files[:n]) + "\n")
    return out


def open_bench_store(root: Path, kind: str):
    """edge: the embedded store | qdrant-path: qdrant-client local mode (workers write) |
    qdrant-path-driver: the same with its worker_spec hidden, so the driver writes."""
    from curate.store import open_store
    from curate.store.remote import RemoteStore

    if kind == "edge":
        return open_store(str(root))
    store = RemoteStore(None, path=str(root))
    if kind == "qdrant-path-driver":
        store.worker_spec = lambda: None  # type: ignore[method-assign]
    return store


def run(encoder, folder: Path, batch: int, engine: str, actors: int | None, store_kind: str = "edge") -> dict:
    from curate.embed import EmbedOptions, embed_pool
    from curate.sources import discover

    pool = discover(folder)
    tmp = Path(tempfile.mkdtemp(prefix="curate-embed-ray-"))
    first: list[float] = []
    t0 = time.perf_counter()

    def on_progress(done: int, total: int) -> None:
        if not first:
            first.append(time.perf_counter() - t0)
            first.append(done)

    try:
        store = open_bench_store(tmp / "store", store_kind)
        opts = EmbedOptions(batch_size=batch, progress=False, engine=engine, actors=actors)
        load_before = load()
        report = embed_pool(pool, store, "bench", encoder, opts, on_progress=on_progress)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    steady_s = report.seconds - (first[0] if first else 0)
    steady_n = report.embedded - (first[1] if first else 0)
    writer = {"edge": "", "qdrant-path": ", qdrant-path", "qdrant-path-driver": ", qdrant-path"}[store_kind]
    if engine == "ray" and store_kind != "edge":
        writer += ", driver writes" if store_kind == "qdrant-path-driver" else ", actor writes"
    return {
        "engine": (engine if engine == "local" else f"ray, {actors} actor(s)") + writer,
        "n": report.embedded, "seconds": report.seconds, "rate": report.rate,
        "steady": steady_n / steady_s if steady_s > 0 and engine == "local" else None,
        "first_batch_s": first[0] if first else 0.0,
        "load": f"{load_before} -> {load()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="MODEL:n=N:b=B,... (pixels or an open_clip name)")
    ap.add_argument("--actors", default="1,2", help="Ray actor counts to run, comma-separated")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--writers", action="store_true",
                    help="into a qdrant-client local-path store: Ray with driver writes vs actor writes (1 actor)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from curate.encoders import load_encoder

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    try:
        for spec in args.models.split(","):
            name, *kv = spec.split(":")
            opt = dict(x.split("=") for x in kv)
            n, batch = int(opt.get("n", 2000)), int(opt.get("b", 64))
            folder = textile_manifest(n)
            weights = None if name == "pixels" else random_checkpoint(name)
            encoder = load_encoder(name, weights, device="cpu")
            if args.writers:
                runs = [run(encoder, folder, batch, "local", None, "qdrant-path")]
                runs += [run(encoder, folder, batch, "ray", 1, kind) for kind in ("qdrant-path-driver", "qdrant-path")]
            else:
                runs = [run(encoder, folder, batch, "local", None)]
                runs += [run(encoder, folder, batch, "ray", int(a)) for a in args.actors.split(",")]
            for r in runs:
                r.update(model=name, batch=batch, vs_local=r["rate"] / runs[0]["rate"])
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {machine()}, git {git_rev()}, "
          f"ray cluster of {args.cpus} CPUs")
    print("| model | N | B | engine | img/s | img/s / local | first batch s | steady img/s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steady = "-" if r["steady"] is None else f"{r['steady']:.1f}"
        print(f"| {r['model']} | {r['n']} | {r['batch']} | {r['engine']} | {r['rate']:.1f} | {r['vs_local']:.2f} | "
              f"{r['first_batch_s']:.1f} | {steady} | {r['load']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
