"""Do two versions of curate give byte-identical select and slice outputs? (manifests, tags, printed lines)

    python benchmarks/same_outputs.py OLD_TREE NEW_TREE [--n 3000]

Builds one small embedded store (unicode and plain paths, a `split` field, labeled / duplicate /
failed points), copies it once per tree, runs the same command sequence on each copy (real rounds
and slices write tags that later commands see), then compares every command's output, every file
written and every point's payload. Exit code 1 on any difference. Used to check that holding ids
as a bytes column (curate/store/idcolumn.py) changed no output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

COMMANDS = [
    ["select", "-n", "40", "-s", "kcenter", "--dry-run", "--name", "a"],
    ["select", "-n", "40", "-s", "kcenter", "--where", "split == 'train'", "--name", "b"],
    ["select", "-n", "30", "--name", "c"],
    ["select", "-n", "20", "-s", "kcenter", "--balance-by", "weather", "--dry-run", "--name", "d"],
    ["slice", "ex", "--example", "/d/4.png", "--top-k", "50"],
    ["slice", "w", "--example", "3.jpg", "--example-mode", "each", "-k", "5", "-w", "split == 'train'",
     "--dry-run"],
    ["slice", "bal", "-e", "/d/6.png", "-k", "20", "--balanced-by", "weather", "--exclude-near", "b"],
    ["slice", "f", "-w", "split == 'test'"],
    ["map", "--sample", "500", "--epochs", "30"],
    ["map", "--sample", "500", "--epochs", "30"],  # a rerun: reads the stored coordinates back
]


def build(path: Path, n: int, d: int = 32) -> None:
    from curate.store import open_store

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    pay = [{"path": f"/data/ünïcode/路径/{k}.jpg" if k % 2 else f"/d/{k}.png", "relpath": f"{k}.jpg",
            "split": "train" if k % 3 else "test", "weather": ["sun", "rain", "fog"][k % 3 if k % 7 else 0]}
           for k in range(n)]
    for k in range(0, 60, 6):
        pay[k]["labeled"] = True
    for k in range(1, 60, 6):
        pay[k]["is_duplicate"] = True
    with open_store(str(path)) as s:
        s.ensure_collection("pool")
        s.ensure_encoder("pool", "enc", {"dim": d})
        s.upsert_points("pool", ids + ["00000000-0000-4000-8000-000000000001"],
                        pay + [{"path": "/bad/x.jpg", "failed": True}])
        s.upsert_vectors("pool", "enc", ids, x)


def run_tree(tree: Path, store: Path, work: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    outs = []
    for argv in COMMANDS:
        out = [] if argv[0] == "map" else ["-o", str(work / "out"), "--device", "cpu"]
        full = [sys.executable, "-m", "curate", *argv, "--store", str(store), "-c", "pool", "--encoder", "enc",
                *out, "-q"]
        r = subprocess.run(full, env=env, capture_output=True, text=True, cwd=work)
        text = (r.stdout + r.stderr).replace(str(work), "WORK")
        outs.append(f"$ {' '.join(argv)}\nrc={r.returncode}\n" + re.sub(r"\d+\.\d+ ?s\b", "T s", text))
    dump = [sys.executable, "-c", "import json,sys; from curate.store import open_store\n"
            "with open_store(sys.argv[1]) as s: print(json.dumps(sorted(s.payloads('pool').items()), sort_keys=True))",
            str(store)]
    outs.append(subprocess.run(dump, env=env, capture_output=True, text=True, check=True).stdout)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="same_outputs_"))
    try:
        build(tmp / "store", args.n)
        got = {}
        for label, tree in (("old", args.old), ("new", args.new)):
            work = tmp / label
            work.mkdir()
            shutil.copytree(tmp / "store", work / "s")
            outs = run_tree(Path(tree).resolve(), work / "s", work)
            files = {str(p.relative_to(work / "out")): p.read_bytes() for p in sorted((work / "out").rglob("*"))
                     if p.is_file()}
            got[label] = (outs, files)
        (o_out, o_files), (n_out, n_files) = got["old"], got["new"]
        same = True
        for a, b in zip(o_out, n_out, strict=True):
            if a != b:
                same = False
                print(f"DIFFERENT output:\n--- old\n{a[:2000]}\n--- new\n{b[:2000]}")
        for name in sorted(set(o_files) | set(n_files)):
            if o_files.get(name) != n_files.get(name):
                same = False
                print(f"DIFFERENT file {name}")
        print(json.dumps({"commands": len(COMMANDS), "files": len(n_files), "payload_points": args.n + 1,
                          "identical": same}))
        print("\n".join(n_out[:-1]))
        sys.exit(0 if same else 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
