"""What `curate embed` does with bad arguments and hostile file names: fail fast in one line,
before torch is imported; never abort a folder over one name; never let a name drive the terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

# Runs the CLI in a fresh interpreter, so sys.modules shows what the command imported.
_FRESH = """
import json, sys
from typer.testing import CliRunner
from curate.cli import app
res = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": res.exit_code, "out": res.output, "torch": "torch" in sys.modules}))
"""


def _fresh_cli(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _FRESH, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _pool(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_bad_source_and_device_fail_before_torch_is_imported(tmp_path):
    store = str(tmp_path / "store")
    got = _fresh_cli("embed", str(tmp_path / "nonexist"), "--store", store)
    assert got["code"] == 2 and "no such folder" in got["out"] and len(got["out"].strip().splitlines()) == 1
    assert got["torch"] is False
    _pool(tmp_path / "pool")
    got = _fresh_cli("embed", str(tmp_path / "pool"), "--device", "tpu", "--store", store)
    assert got["code"] == 2 and "tpu" in got["out"] and "--device" in got["out"]
    assert len(got["out"].strip().splitlines()) == 1
    assert got["torch"] is False
    assert not (tmp_path / "store").exists()  # nothing was opened or created
