"""Runs queried from Python with plain MongoDB filters."""

from __future__ import annotations

import os


def find_runs(filter: dict | None = None, store: str | os.PathLike | None = None, *,
              limit: int = 0) -> list[dict]:
    """Run documents matching a MongoDB filter, newest first:
    `find_runs({"config.lr": {"$lt": 0.01}, "status": "COMPLETED"})`."""
    from .store import open_store

    return open_store(store).find_runs(filter, limit=limit)


def connect(store: str | os.PathLike | None = None):
    """The pymongo-style database behind a store, for anything `find_runs` doesn't do."""
    from .store import open_store

    return open_store(store).db
