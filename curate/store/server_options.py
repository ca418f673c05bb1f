"""Collection options for a Qdrant server or cluster; the embedded store has no use for them.

Kept free of qdrant-client imports so settings can be resolved without it."""

from __future__ import annotations

from dataclasses import dataclass

# Payload fields curate filters by, and the index type each one needs on a server
# (without an index a filtered count or scroll is a full scan of every shard).
PAYLOAD_INDEXES: dict[str, str] = {
    "failed": "bool",
    "labeled": "bool",
    "is_duplicate": "bool",
    "selected_round": "integer",
    "selection_name": "keyword",
    "dup_group": "keyword",  # the keeper's point id
    "path": "keyword",
    "relpath": "keyword",
    "sha256": "keyword",
}


@dataclass(frozen=True)
class ServerOptions:
    """None leaves the server's default (1 shard per node in a cluster, 1 replica, 1 write ack)."""

    shards: int | None = None
    replicas: int | None = None
    write_consistency: int | None = None
    on_disk: bool = False  # vectors and payload on disk (memory-mapped) instead of in RAM

    def __post_init__(self) -> None:
        for name in ("shards", "replicas", "write_consistency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} = {value!r}: use a whole number >= 1")
        if self.write_consistency and self.write_consistency > (self.replicas or 1):
            raise ValueError(f"write_consistency = {self.write_consistency} exceeds replicas = {self.replicas or 1}; "
                             "a write cannot be acknowledged by more copies than exist")

    @property
    def is_default(self) -> bool:
        return self == ServerOptions()
