"""Shared fixtures: the store backends every contract test runs on (DESIGN.md 6).

`store_url` is parametrized over
- `mongomock`: `mongomock://<unique name>`, in memory;
- `embedded`: a directory under `tmp_path` (litemongo over SQLite, under the file lock);
- `nx27017`: `mongodb://127.0.0.1:PORT/<unique db>` on one `nx-27017` server per session
  (a MongoDB wire-protocol server over SQLite, from the dev extra);
- `mongodb`: a real MongoDB, only when `RECORDER_TEST_MONGO_URL` is set (`docker/compose.yml`
  starts one); each test gets its own database, dropped afterwards.

A test that a backend cannot pass says so with `@pytest.mark.xfail_on("nx27017", reason=...)`:
it becomes a strict xfail on that backend only, so it fails loudly once the backend can.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from recorder.store import Store, open_store

REAL_MONGO_ENV = "RECORDER_TEST_MONGO_URL"
BACKENDS = ["mongomock", "embedded", "nx27017"] + (
    ["mongodb"] if os.environ.get(REAL_MONGO_ENV) else [])
PYMONGO_BACKENDS = {"nx27017", "mongodb"}  # a real pymongo database behind the store
NX_START_TIMEOUT = 10.0


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "xfail_on(*backends, reason): a strict xfail on the named store backends")


def pytest_collection_modifyitems(items):
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("store_url")
        for mark in item.iter_markers("xfail_on"):
            if backend in mark.args:
                item.add_marker(pytest.mark.xfail(strict=True, reason=mark.kwargs["reason"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nx_executable() -> str | None:
    """On PATH, or beside this interpreter (a venv that was not activated)."""
    beside = Path(sys.executable).parent / "nx-27017"
    return shutil.which("nx-27017") or (str(beside) if beside.exists() else None)


class NxServer:
    """One nx-27017 process on a fixed port and data folder, which can be killed (SIGKILL)
    and started again on the same port with the same data: a database outage, for real.

    `--data-dir` gives every logical database its own SQLite file: with `--db FILE` all
    databases share one connection, and a collection written in one database shows up in
    every other (seen with 0.8.1), which would mix the tests' stores.
    """

    def __init__(self, home: Path):
        self.exe = _nx_executable()
        if self.exe is None:
            pytest.skip("the nx-27017 executable is not installed (pip install -e '.[dev]')")
        self.home = home
        (home / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> NxServer:
        import pymongo

        with open(self.home / "stdout.txt", "ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--data-dir", str(self.home / "data"),
                 "--pid-file", str(self.home / "nx.pid"), "--log-file", str(self.home / "nx.log")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_for_ping(pymongo, self.address, self.proc, self.home)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def nx_server(tmp_path_factory) -> str:
    """One nx-27017 server for the session; yields its `mongodb://127.0.0.1:PORT` address."""
    server = NxServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server.address
    finally:
        server.stop()


@pytest.fixture
def nx_outage(tmp_path):
    """A server of the test's own, to kill and restart."""
    server = NxServer(tmp_path / "nx")
    try:
        yield server
    finally:
        server.stop()


def _wait_for_ping(pymongo, address: str, proc: subprocess.Popen, home: Path) -> None:
    deadline = time.monotonic() + NX_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"nx-27017 exited with {proc.returncode} at start:\n{_tail(home)}")
        client = pymongo.MongoClient(address, serverSelectionTimeoutMS=250)
        try:
            client.admin.command("ping")
            return
        except pymongo.errors.PyMongoError:
            if time.monotonic() > deadline:
                pytest.fail(f"nx-27017 did not answer a ping at {address} within "
                            f"{NX_START_TIMEOUT:.0f} s:\n{_tail(home)}")
            time.sleep(0.1)
        finally:
            client.close()


def _tail(home: Path) -> str:
    text = "".join(p.read_text(errors="replace") for p in (home / "stdout.txt", home / "nx.log")
                   if p.exists())
    return text[-3000:]


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def with_database(url: str, name: str) -> str:
    """`url` naming database `name`, keeping its credentials and options."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """A fresh, empty store on each backend."""
    backend = request.param
    if backend == "mongomock":
        yield f"mongomock://{unique_name()}"
    elif backend == "embedded":
        yield str(tmp_path / "store")
    else:
        import pymongo

        server = (request.getfixturevalue("nx_server") if backend == "nx27017"
                  else os.environ[REAL_MONGO_ENV])
        name = unique_name()
        yield with_database(server, name)
        client = pymongo.MongoClient(server, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(name)
        finally:
            client.close()


@pytest.fixture
def backend(request, store_url) -> str:
    """The name of the backend `store_url` is on: mongomock, embedded, nx27017 or mongodb."""
    return request.node.callspec.params["store_url"]


@pytest.fixture
def make_store(store_url):
    """`make_store()`: a new `Store` on this test's URL (no cached run ids), closed after."""
    opened: list[Store] = []

    def make() -> Store:
        store = open_store(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        close = getattr(getattr(store.db, "client", None), "close", None)
        if close is not None:
            close()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


@pytest.fixture
def isolated_git(tmp_path, monkeypatch):
    """Keep the machine's git config, any enclosing repository and RECORDER_STORE out of a
    test that makes repositories in tmp_path."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                 "RECORDER_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


@pytest.fixture
def interruptible():
    """A context manager: children started inside take Ctrl-C as at a terminal. A shell's
    background job (CI, nohup) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt; a handler in this process becomes the default action in the child."""

    @contextlib.contextmanager
    def taking_ctrl_c():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    return taking_ctrl_c
