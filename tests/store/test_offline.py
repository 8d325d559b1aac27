"""A run whose store is unreachable from start to end keeps every write in its spool, and
the spool, applied to a store later (what `recorder sync` does), rebuilds the run exactly."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime

import pytest

from recorder.flusher import Flusher
from recorder.run import Run
from recorder.store import backends, open_store
from recorder.store.backends import Backend, backend_for
from recorder.store.files import sha256
from recorder.store.spool import Spool

START = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
STOP = datetime(2024, 3, 1, 12, 5, 0, 500000, tzinfo=UTC)
SOURCE = b"import recorder\nprint('train')\n"


def closed_port() -> int:
    """A port nothing listens on: bound once by us, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused(*_):
    raise ConnectionRefusedError("connection refused (test)")


def unreachable_backend(kind: str, tmp_path, monkeypatch) -> Backend:
    if kind == "connect raises":
        return Backend(url="mongodb://nowhere.invalid/db", kind="mongodb",
                       spool_dir=tmp_path / "spool", connect=refused)
    monkeypatch.setattr(backends, "SERVER_TIMEOUT_MS", 200)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return backend_for(f"mongodb://127.0.0.1:{closed_port()}/offline")  # nothing listens there


@pytest.mark.parametrize("kind", ["connect raises", "closed port"])
def test_an_unreachable_store_spools_every_write_and_the_spool_rebuilds_the_run(
        kind, tmp_path, monkeypatch, capfd):
    backend = unreachable_backend(kind, tmp_path, monkeypatch)
    uid = uuid.uuid4().hex
    run = Run(uid, {"lr": 0.01}, lambda collect: Flusher(backend, uid, collect, interval=0.02,
                                                         retry_interval=60.0))
    doc = {"uid": uid, "status": "RUNNING", "config": {"lr": 0.01}, "start_time": START,
           "experiment": {"name": "offline", "sources": [["train.py", sha256(SOURCE)]]},
           "environment": {"python": "3.11"}, "artifacts": []}
    run.start(doc, {sha256(SOURCE): SOURCE})
    logged = []
    for batch in range(5):  # several flushes, each of them spooled
        for step in range(batch * 300, (batch + 1) * 300):
            run.log("loss", 1.0 / (step + 1), step=step)
            logged.append((step, 1.0 / (step + 1)))
        run.log({"acc": batch / 10}, step=batch)
        time.sleep(0.05)
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x00weights\xff" * 1000)
    model_sha = run.artifact(model)
    run.info["best"] = 0.4

    delivered = run.finish({"status": "COMPLETED", "stop_time": STOP, "result": {"acc": 0.4},
                            "environment.torch": {"version": "2.3.0"}}, timeout=10.0)

    assert delivered is False
    assert run.id is None
    spool = Spool(backend.spool_dir, uid)
    assert run.spool_path == spool.path
    assert str(spool.path) in capfd.readouterr().err  # the user is told where the data is
    ops, unreadable = spool.read()
    assert unreadable == 0
    assert ops[0]["op"] == "insert_run"
    assert len(ops) > 3  # many flushes went to disk, not one final dump

    store = open_store(f"mongomock://{uuid.uuid4().hex}")
    for op in ops:
        store.apply(op)
    for op in ops:  # delivered twice, as after a sync that died halfway: still exact
        store.apply(op)

    stored = store.get_run("last")
    assert stored["_id"] == 1
    assert stored["uid"] == uid
    assert stored["status"] == "COMPLETED"
    assert stored["config"] == {"lr": 0.01}
    assert stored["result"] == {"acc": 0.4}
    assert stored["info"] == {"best": 0.4}
    assert stored["environment"] == {"python": "3.11", "torch": {"version": "2.3.0"}}
    assert stored["start_time"].replace(tzinfo=UTC) == START
    assert stored["stop_time"].replace(tzinfo=UTC) == STOP
    assert [a["file_id"] for a in stored["artifacts"]] == [model_sha]
    assert store.get_file(model_sha) == model.read_bytes()
    assert store.get_file(sha256(SOURCE)) == SOURCE

    metrics = store.metrics(1)
    assert sorted(metrics) == ["acc", "loss"]
    assert list(zip(metrics["loss"]["steps"], metrics["loss"]["values"])) == logged
    assert metrics["acc"]["steps"] == [0, 1, 2, 3, 4]
    assert metrics["acc"]["values"] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_a_spool_that_cannot_be_written_loses_writes_loudly_but_never_stops_the_run(
        tmp_path, capfd):
    (tmp_path / "full").write_text("a file where the spool folder should be")
    backend = Backend(url="mongodb://nowhere.invalid/db", kind="mongodb",
                      spool_dir=tmp_path / "full" / "spool", connect=refused)
    uid = uuid.uuid4().hex
    run = Run(uid, {}, lambda collect: Flusher(backend, uid, collect, interval=0.02,
                                               retry_interval=60.0))
    run.start({"uid": uid, "status": "RUNNING", "start_time": START}, {})
    for step in range(100):
        run.log("loss", float(step))
        time.sleep(0.001)
    assert run.finish({"status": "COMPLETED"}, timeout=5) is False
    assert run._flusher.lost > 0 and not run._flusher._thread.is_alive()
    err = capfd.readouterr().err
    assert "they are lost" in err and "the run goes on" in err
