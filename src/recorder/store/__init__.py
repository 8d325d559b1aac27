"""The store: one data model over MongoDB, the embedded on-disk engine, or mongomock."""

from __future__ import annotations

import os

from .backends import Backend, backend_for, resolve_url
from .store import Store

__all__ = ["Backend", "Store", "backend_for", "open_store", "resolve_url"]


def open_store(store: str | os.PathLike | None = None) -> Store:
    """A Store for reading and for the CLI (runs write through their flusher)."""
    backend = backend_for(store)
    return Store(backend.connect(), backend.write_lock, backend.url)
