"""Resolve settings in one place: flags > CURATE_* environment > ./curate.toml > defaults."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from curate.store.server_options import ServerOptions

DEFAULTS = {
    "store": ".curate",
    "qdrant_url": None,
    "qdrant_api_key": None,
    "collection": "pool",
    "device": "auto",
    "out": "curate-out",
    # Qdrant server/cluster collection options (new collections only; the embedded store ignores them)
    "shards": None,
    "replicas": None,
    "write_consistency": None,
    "on_disk": None,
}
_SERVER_KEYS = {"shards": int, "replicas": int, "write_consistency": int, "on_disk": bool}


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
    shards: int | None = None
    replicas: int | None = None
    write_consistency: int | None = None
    on_disk: bool | None = None

    @property
    def server_options(self) -> ServerOptions:
        return ServerOptions(self.shards, self.replicas, self.write_consistency, bool(self.on_disk))


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


def _server_value(name: str, value: object, source: str) -> int | bool:
    """shards/replicas/write_consistency as whole numbers, on_disk as a boolean, from env text or TOML."""
    kind = _SERVER_KEYS[name]
    if isinstance(value, str):
        text = value.strip().lower()
        if kind is bool and text in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text in ("1", "true", "yes", "on")
        if kind is int and text.isdigit():
            return int(text)
    elif isinstance(value, bool) == (kind is bool) and isinstance(value, kind):
        return value
    example = "true" if kind is bool else "3"
    raise ValueError(f"{source}: {name} = {value!r} must be {'true or false' if kind is bool else 'a whole number'}, "
                     f"e.g. {name} = {example}")


def resolve(config_file: str | Path = "curate.toml", **flags: object) -> Settings:
    """Flags given as None fall through to the environment, then the TOML file, then defaults."""
    file_values = _toml(Path(config_file))
    values = {}
    for f in fields(Settings):
        flag = flags.get(f.name)
        env = os.environ.get(f"CURATE_{f.name.upper()}")
        if f.name in _SERVER_KEYS:
            raw, source = ((flag, "flag") if flag is not None else (env, f"CURATE_{f.name.upper()}") if env
                           else (file_values.get(f.name), str(config_file)))
            values[f.name] = None if raw is None else _server_value(f.name, raw, source)
        elif flag is not None:
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
    settings = Settings(**values)
    settings.server_options  # noqa: B018 -- checks the combination (write_consistency <= replicas) up front
    return settings
