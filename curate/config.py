"""Resolve settings in one place: flags > CURATE_* environment > ./curate.toml > defaults."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULTS = {
    "store": ".curate",
    "qdrant_url": None,
    "qdrant_api_key": None,
    "collection": "pool",
    "device": "auto",
    "out": "curate-out",
}


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """auto, cpu, cuda, cuda:N or mps; anything else is a one-line error, not a torch traceback."""
    if not _DEVICE.match(device.strip().lower()):
        raise ValueError(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device.strip().lower()


@dataclass(frozen=True)
class Settings:
    store: str
    qdrant_url: str | None
    qdrant_api_key: str | None
    collection: str
    device: str
    out: str


def _toml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e}); fix or remove it") from e
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
        )
    return data


def resolve(config_file: str | Path = "curate.toml", **flags: object) -> Settings:
    """Flags given as None fall through to the environment, then the TOML file, then defaults."""
    file_values = _toml(Path(config_file))
    values = {}
    for f in fields(Settings):
        flag = flags.get(f.name)
        env = os.environ.get(f"CURATE_{f.name.upper()}")
        if flag is not None:
            values[f.name] = flag
        elif env:
            values[f.name] = env
        elif f.name in file_values:
            value = file_values[f.name]
            if not isinstance(value, str):  # `store = 5` would otherwise fail deep inside pathlib
                raise ValueError(f"{config_file}: {f.name} = {value!r} must be a quoted string, "
                                 f'e.g. {f.name} = "{DEFAULTS[f.name] or "..."}"')
            values[f.name] = value
        else:
            values[f.name] = DEFAULTS[f.name]
    values["device"] = check_device(values["device"])
    return Settings(**values)
