"""Shared fixtures. Tests never download: the hub is switched off before anything imports it,
and the open_clip model under test is a tiny one whose checkpoint we write ourselves."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402 - HF_HUB_OFFLINE must be set before huggingface_hub is imported
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_CLIP = "curate-tiny"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_SEED = 1234


class TinyClip(NamedTuple):
    model: str  # open_clip model name, registered with open_clip
    checkpoint: str  # path to a state_dict file for that model


def register_tiny_clip(folder: str | Path) -> tuple[str, str]:
    """Register the "curate-tiny" open_clip config from `folder` (writing it and a seeded
    checkpoint there if missing) and return (model_name, checkpoint_path).

    Idempotent and deterministic, so DataLoader worker processes and other test modules can
    call it with the same folder and get the same model."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_CLIP}.json"
    checkpoint = folder / f"{TINY_CLIP}.pt"
    if not config.is_file():
        config.write_text(json.dumps(TINY_CLIP_CONFIG))
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(config)
    if not checkpoint.is_file():
        torch.manual_seed(TINY_CLIP_SEED)
        model = open_clip.create_model(TINY_CLIP, pretrained=None)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, checkpoint)  # never leave a half-written checkpoint for a parallel reader
    return TINY_CLIP, str(checkpoint)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> TinyClip:
    model, checkpoint = register_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    return TinyClip(model, checkpoint)


# Every process a test starts (and every process those start) inherits this token, so the session
# can check at its end that none of them outlived its parent (issue 7: orphaned forkservers).
_SESSION_TOKEN = f"{os.getpid()}-{os.urandom(4).hex()}"
os.environ["CURATE_TEST_SESSION"] = _SESSION_TOKEN


@pytest.fixture(scope="session", autouse=True)
def no_orphan_processes():
    yield
    from procs import descendants, with_env_token

    def orphans() -> dict[int, str]:
        ours = set(descendants(os.getpid())) | {os.getpid()}
        return {p: cmd for p, cmd in with_env_token("CURATE_TEST_SESSION", _SESSION_TOKEN).items() if p not in ours}

    deadline = time.monotonic() + 10  # processes that are exiting right now get a moment
    while (stray := orphans()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stray, f"processes started by tests outlived their parents: {stray}"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with 2 worker CPUs, shared by every --engine ray test (starting one costs
    ~4 s here). Yields its address, so subprocesses (`curate ... --address ADDR`) can join it; the
    test process itself stays connected, so in-process CLI calls reuse the connection."""
    ray = pytest.importorskip("ray")
    # Ray's memory monitor kills workers once the whole machine passes 95% memory: on a shared
    # developer machine another process's 12 GiB failed two tests whose own data are kilobytes
    os.environ.setdefault("RAY_memory_usage_threshold", "0.99")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
