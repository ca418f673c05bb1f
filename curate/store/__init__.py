"""Stores: Qdrant Edge (embedded default) and a Qdrant server through qdrant-client."""

from __future__ import annotations

from curate.store.base import Store, StoreError, StoreLockedError
from curate.store.filters import Condition, parse_where


def open_store(
    path: str = ".curate", url: str | None = None, api_key: str | None = None, create: bool = True
) -> Store:
    """A remote store when `url` is given (":memory:" for qdrant-client's local mode), else Edge at `path`.

    `create=False`: a missing embedded store is a one-line StoreError instead of a new empty folder."""
    if url:
        from curate.store.remote import RemoteStore

        return RemoteStore(url, api_key=api_key)
    from curate.store.edge import EdgeStore

    return EdgeStore(path, create=create)


__all__ = ["Condition", "Store", "StoreError", "StoreLockedError", "open_store", "parse_where"]
