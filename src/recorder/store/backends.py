"""Turn a store URL into a pymongo-style database (DESIGN.md 3).

| URL                                  | backend                                   |
|--------------------------------------|-------------------------------------------|
| `mongodb://…`, `mongodb+srv://…`     | pymongo: a real MongoDB, replica set, Atlas |
| a path, or nothing (`./.recorder`)   | litemongo (SQLite files) under a file lock |
| `mongomock://[name]`                 | mongomock, in memory, per process         |

Backends are imported only when their scheme is used: `import recorder` stays fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import StoreError
from ..redact import mask_url_passwords

DEFAULT_STORE = ".recorder"
DATABASE = "recorder"
SERVER_TIMEOUT_MS = 2000
_MONGOMOCK_CLIENTS: dict[str, Any] = {}
# One thread imports a driver at a time. While `preload`'s thread imported pymongo, the
# flusher's own `import pymongo` was seen (1 run in 50, 16 processes on 2 cores, CPython
# 3.11) to get the module half initialised: "module 'pymongo' has no attribute 'MongoClient'".
_DRIVER_IMPORT = threading.Lock()


@dataclass
class Backend:
    """A database plus what the store needs to know about where it lives."""

    url: str  # absolute path or URL, passwords masked: safe to print and record
    kind: str  # "mongodb" | "embedded" | "mongomock"
    spool_dir: Path
    connect: Callable[[], Any]  # -> pymongo-style database; may be slow (imports, network)
    write_lock: Callable[[], ContextManager] = field(default=contextlib.nullcontext)
    driver: str = "pymongo"  # the module `connect` imports

    def preload(self) -> None:
        """Start importing the driver in the background (it takes ~200 ms), so that the
        flusher finds it ready instead of competing with the training loop for the GIL."""
        threading.Thread(target=_import_quietly, args=(self.driver,), daemon=True).start()


def _import_quietly(module: str) -> None:
    try:
        _driver(module)
    except ImportError:  # the flusher reports it when it connects
        pass


def _driver(module: str):
    with _DRIVER_IMPORT:
        return importlib.import_module(module)


def resolve_url(store: str | os.PathLike | None) -> str:
    """The store a run uses: the argument, else RECORDER_STORE, else ./.recorder."""
    chosen = store if store is not None else os.environ.get("RECORDER_STORE") or DEFAULT_STORE
    return os.fspath(chosen)


def backend_for(store: str | os.PathLike | None) -> Backend:
    url = resolve_url(store)
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("mongodb", "mongodb+srv"):
        return Backend(
            url=mask_url_passwords(url),
            kind="mongodb",
            spool_dir=user_spool_dir(mask_url_passwords(url)),
            connect=lambda: _mongodb(url),
        )
    if scheme == "mongomock":
        return Backend(url=url, kind="mongomock", spool_dir=user_spool_dir(url),
                       connect=lambda: _mongomock(url), driver="mongomock")
    if scheme == "file":
        url = urlsplit(url).path
    elif scheme:
        raise StoreError(
            f"unknown store URL scheme {scheme!r} in {mask_url_passwords(url)!r}: "
            "use mongodb://, mongodb+srv://, mongomock://, or a directory path"
        )
    path = Path(url).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"store path {str(path)!r} exists and is not a directory")
    lock = FileLock(path / "lock")
    return Backend(url=str(path), kind="embedded", spool_dir=path / "spool",
                   connect=lambda: _embedded(path), write_lock=lock.hold, driver="litemongo")


def user_spool_dir(url: str) -> Path:
    """Where writes for a server store wait while it is unreachable (documented in README):
    one folder per store, named by a hash of its URL (password masked), so `recorder sync`
    delivers each spool to the store it was meant for."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(base) / "recorder" / "spool" / digest


def _mongodb(url: str):
    pymongo = _driver("pymongo")
    try:
        client = pymongo.MongoClient(
            url,
            serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
            connectTimeoutMS=SERVER_TIMEOUT_MS,
            socketTimeoutMS=10_000,
        )
    except (ValueError, pymongo.errors.ConfigurationError) as exc:
        # a URL pymongo cannot read (an unescaped `/` in the password: a plain ValueError),
        # or an SRV name that does not resolve: one line, the password masked
        reason = mask_url_passwords(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise StoreError(f"cannot use the store {mask_url_passwords(url)}: {reason}") from None
    return client.get_default_database(DATABASE)


def _mongomock(url: str):
    mongomock = _driver("mongomock")
    if url not in _MONGOMOCK_CLIENTS:
        _MONGOMOCK_CLIENTS[url] = mongomock.MongoClient()
    return _MONGOMOCK_CLIENTS[url][DATABASE]


def _embedded(path: Path):
    litemongo = _driver("litemongo")
    # litemongo checks, then creates its folders: two processes opening a new store at
    # once made one fail with "File exists" (seen with 8). Created here, race-free.
    (path / "db" / DATABASE).mkdir(parents=True, exist_ok=True)
    return litemongo.connect(str(path / "db"))[DATABASE]


class FileLock:
    """One exclusive `fcntl` lock per store, held around every write and id allocation.

    litemongo loses concurrent `$push`es and overwrites same-`_id` inserts across
    processes (DESIGN.md 3); serialising writers makes it lose nothing. Re-entrant
    within a thread, shared between the threads of one process.
    """

    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self):
        with self._thread_lock:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None
