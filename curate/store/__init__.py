"""Stores: Qdrant Edge (embedded default) and a Qdrant server through qdrant-client."""

from __future__ import annotations

from curate.store.base import Store, StoreError, StoreLockedError
from curate.store.filters import Condition, parse_where
from curate.store.server_options import ServerOptions


def open_store(
    path: str = ".curate",
    url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    options: ServerOptions | None = None,
) -> Store:
    """A remote store when `url` is given (":memory:" for qdrant-client's local mode), else Edge at `path`.

    `create=False`: a missing embedded store is a one-line StoreError instead of a new empty folder.
    `options` (shards, replicas, ...) apply to new server collections; the embedded store ignores them."""
    if url:
        from curate.store.remote import RemoteStore

        return RemoteStore(url, api_key=api_key, options=options)
    from curate.store.edge import EdgeStore

    return EdgeStore(path, create=create)


__all__ = ["Condition", "ServerOptions", "Store", "StoreError", "StoreLockedError", "open_store", "parse_where"]
