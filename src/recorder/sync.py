"""`recorder sync`: deliver the writes that runs kept on disk while their store was away."""

from __future__ import annotations

import os

from .store import Store, backend_for
from .store.spool import Delivery, deliver, spools


def sync(store: str | os.PathLike | None = None) -> list[Delivery]:
    """Deliver every spool waiting for `store`, oldest run first; safe to run again."""
    backend = backend_for(store)
    target = Store(backend.connect(), backend.write_lock, backend.url)
    return [deliver(spool, target) for spool in spools(backend.spool_dir)]
