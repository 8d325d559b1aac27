"""Run: what the user's code talks to while it trains.

`log` only appends to an in-memory list and returns (about half a microsecond);
the flusher thread turns the buffer into chunk documents about every second.
"""

from __future__ import annotations

import hashlib
import operator
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import NoActiveRun

CHUNK_POINTS = 1000  # the most points in one chunk document
CHUNK_CLOSE = 100  # a chunk holding this many at a flush is closed there (MetricChunks)


def heartbeat_interval() -> float:
    """Seconds between heartbeats: $RECORDER_HEARTBEAT, else 5. A run silent for six of
    its own intervals is marked DIED."""
    try:
        value = float(os.environ.get("RECORDER_HEARTBEAT", "5"))
    except ValueError:
        return 5.0
    return value if value > 0 else 5.0

_active: Run | None = None


def current_run() -> Run | None:
    """The run in progress in this process, or None."""
    return _active


def active_run(action: str) -> Run:
    if _active is None:
        raise NoActiveRun(f"recorder.{action} was called outside a run: call it inside a "
                          "function decorated with @recorder.experiment")
    return _active


class Run:
    def __init__(self, uid: str, config: dict, flusher_factory, output=None,
                 redact: Callable[[str], str] = str):
        self.uid = uid
        self.config = config
        self.info: dict[str, Any] = {}
        self._points: list[tuple] = []
        self._next_step: dict[str, int] = {}
        self._chunks = MetricChunks(uid)
        self._artifacts: list[dict] = []
        self._files: dict[str, bytes] = {}
        self._documents: dict[str, dict[str, dict]] = {}
        self._emitted = 0
        self.counters: dict[str, int] = {}  # next step of things logged without one
        self.function_config: dict | None = None  # a decorated main's, under `recorder run`
        from .diagnose import Evidence  # not at import: `import recorder` stays light

        self.evidence = Evidence()  # for the diagnoses stored when the run ends
        self._sent: dict[str, Any] = {}
        self._updates: dict[str, Any] = {}
        self._output = output
        self._redact = redact
        self._output_version = -1
        self._last_beat = 0.0
        self.heartbeat_interval = heartbeat_interval()
        self._lock = threading.Lock()
        self._in_child = False
        self._warned_child = False
        self._flusher = flusher_factory(self._collect)

    @property
    def spool_path(self) -> Path:
        return self._flusher.spool.path

    @property
    def id(self) -> int | None:
        """The run's integer id in the store; None while the store is unreachable."""
        self._flusher.opened.wait(2.0)
        return self._flusher.run_id

    # -- the hot path ------------------------------------------------------------------

    def log(self, name: str | dict, value: Any = None, step: int | None = None) -> None:
        """Record `value` for metric `name` at `step` (default: the metric's next step)."""
        if self._in_child:
            return self._ignore_in_child()
        if type(name) is dict:
            for key, val in name.items():
                self.log(key, val, step)
            return
        kind = type(value)
        if kind is not float and kind is not int:
            value = _number(name, value)
        last = self._next_step.get(name)
        if last is None:  # first point of this metric
            _check_name(name)
        if step is None:
            step = last or 0
        elif type(step) is not int:
            step = _step(name, step)
        self._next_step[name] = step + 1
        self._points.append((name, step, value, time.time()))

    def log_step(self, step: int, points: list[tuple[str, float | int]]) -> None:
        """Several metrics at one step, already plain numbers (`recorder.watch`'s statistics):
        one call and one timestamp for them all."""
        if self._in_child:
            return self._ignore_in_child()
        now, following = time.time(), self._next_step
        for name, _ in points:
            if name not in following:
                _check_name(name)
        following.update(dict.fromkeys([name for name, _ in points], step + 1))
        self._points.extend([(name, step, value, now) for name, value in points])

    def _ignore_in_child(self) -> None:
        if not self._warned_child:
            self._warned_child = True
            print(f"recorder: warning: recorder.log in forked process {os.getpid()} is ignored: "
                  "log from the process that started the run", file=sys.__stderr__)

    # -- the rest of the user's surface ----------------------------------------------

    def artifact(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Store a file with the run; returns its sha256."""
        path = Path(path)
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._files[sha] = data
            self._artifacts.append({"name": name or path.name, "file_id": sha, "sha256": sha,
                                    "size": len(data)})
            self._updates["artifacts"] = list(self._artifacts)
        return sha

    def update(self, **fields: Any) -> None:
        """Fields of the run document to write with the next flush."""
        with self._lock:
            self._updates.update(fields)

    def add_files(self, files: dict[str, bytes]) -> None:
        """Files (by sha256) to store with the next flush: source files found after the start
        (`recorder run` reads a script's imported modules again when it ends)."""
        with self._lock:
            self._files.update(files)

    def emit(self, collection: str, doc: dict) -> str:
        """A document for `events` or `histograms`, written with the next flush. Emitting
        again with the returned `_id` replaces it (a summary that grows); returns the `_id`."""
        with self._lock:
            if "_id" not in doc:
                self._emitted += 1
                doc = {**doc, "_id": f"{self.uid}:{collection}:{self._emitted}"}
            self._documents.setdefault(collection, {})[doc["_id"]] = doc
            if collection == "events":
                self.evidence.add_event(doc)
        return doc["_id"]

    # -- for the flusher thread -------------------------------------------------------

    def _collect(self, final: bool = False) -> list[dict]:
        """Write operations for everything new since the last call."""
        ops = []
        with self._lock:
            files, self._files = self._files, {}
            updates, self._updates = self._updates, {}
            documents, self._documents = self._documents, {}
        if files:
            ops.append({"op": "files", "files": files})
        for collection, docs in documents.items():
            ops.append({"op": "documents", "collection": collection, "uid": self.uid,
                        "docs": list(docs.values())})
        n = len(self._points)
        if n:
            points = self._points[:n]
            del self._points[:n]  # appends made meanwhile stay: both are atomic under the GIL
            ops.append({"op": "metrics", "uid": self.uid, **self._chunks.add(points)})
            self.evidence.add_points(points)
        now = time.monotonic()
        if final:
            updates["diagnoses"] = self.evidence.findings()
        if final or now - self._last_beat >= self.heartbeat_interval:
            self._last_beat = now
            updates["heartbeat"] = utcnow()
            if self._output is not None and self._output.version != self._output_version:
                self._output_version = self._output.version
                updates["captured_out"] = self._redact(self._output.text())
            if self.info != self._sent.get("info"):
                updates["info"] = dict(self.info)
        changed = {k: v for k, v in updates.items() if self._sent.get(k, _MISSING) != v
                   or k == "heartbeat"}
        if changed:
            self._sent.update(changed)
            ops.append({"op": "update_run", "uid": self.uid, "set": changed})
        return ops

    def start(self, run_doc: dict, files: dict[str, bytes]) -> None:
        global _active
        _active = self
        self._sent.update(run_doc)
        first = [{"op": "insert_run", "doc": run_doc}]
        if files:
            first.append({"op": "files", "files": files})
        self._flusher.start(first)

    def finish(self, fields: dict, timeout: float) -> bool:
        """Write the final state; True when all of it reached the store (else it is spooled)."""
        global _active
        if _active is self:
            _active = None
        self.update(**fields)
        return self._flusher.close(timeout)

    def forget_in_child(self) -> None:
        self._in_child = True


class MetricChunks:
    """Points into chunk documents of at most `size` (CHUNK_POINTS) points per metric.

    A flush writes every point it has. A chunk is inserted the first time it is written and
    closed, never to be written again, as soon as a flush finds it holding `close`
    (CHUNK_CLOSE) points or more; a smaller one stays open and is replaced whole at the next
    flush. So a metric logged `close` times a second or faster has each point written once,
    and a slower one rewrites at most about `close` points a flush: replacing a growing
    1,000-point chunk every second cost the embedded store some 20 us of CPU per point, on
    the thread that competes with training for the GIL (tests/bench/bench_hooks.py). Every
    write can be repeated without duplicating a point.
    """

    def __init__(self, uid: str, size: int = CHUNK_POINTS, close: int = CHUNK_CLOSE):
        self.uid = uid
        self.size = size
        self.close = close
        self._open: dict[str, dict] = {}

    def add(self, points: list[tuple]) -> dict[str, list[dict]]:
        writes: dict[str, list] = {"insert": [], "replace": []}
        touched = {}
        for name, step, value, t in points:
            chunk = self._open.get(name)
            if chunk is None:
                chunk = self._open[name] = _new_chunk(name, 0)
            chunk["steps"].append(step)
            chunk["values"].append(value)
            chunk["timestamps"].append(t)
            touched[name] = chunk
            if len(chunk["steps"]) == self.size:
                self._write(chunk, writes, close=True)
                touched.pop(name)
        for chunk in touched.values():
            self._write(chunk, writes, close=len(chunk["steps"]) >= self.close)
        return writes

    def _write(self, chunk: dict, writes: dict[str, list], close: bool) -> None:
        writes["replace" if chunk.get("_written") else "insert"].append(self._doc(chunk))
        chunk["_written"] = True
        if close:
            self._open[chunk["name"]] = _new_chunk(chunk["name"], chunk["seq"] + 1)

    def _doc(self, chunk: dict) -> dict:
        return {"_id": f"{self.uid}:{chunk['seq']}:{chunk['name']}", "name": chunk["name"],
                "seq": chunk["seq"], "steps": list(chunk["steps"]),
                "values": list(chunk["values"]), "timestamps": list(chunk["timestamps"])}


def _new_chunk(name: str, seq: int) -> dict:
    return {"name": name, "seq": seq, "steps": [], "values": [], "timestamps": []}


def _number(name: str, value: Any) -> float | int | bool:
    """Ints, floats, bools, numpy scalars and 0-d tensors (their value, never their graph)."""
    _check_name(name)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    array_like = type(value).__module__.split(".")[0] in ("numpy", "torch")
    if array_like and hasattr(value, "item") and (getattr(value, "ndim", 0) == 0
                                                  or _numel(value) == 1):
        result = value.item()
        if isinstance(result, (bool, int, float)):
            return result
    raise TypeError(f"metric {name!r}: cannot log a {type(value).__name__}; log an int, float, "
                    "bool, numpy scalar or 0-d tensor")


def _step(name: str, step: Any) -> int:
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(f"metric {name!r}: step must be an integer, got {step!r}") from None


def _numel(value: Any) -> int:
    numel = getattr(value, "numel", None)
    return numel() if callable(numel) else getattr(value, "size", 0)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"metric names are non-empty strings, got {name!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)


_MISSING = object()
_now = time.time


def log(name: str | dict, value: Any = None, step: int | None = None) -> None:
    """Record a metric point in the current run: `log("loss", 0.3)`, `log({"a": 1}, step=5)`."""
    run = _active
    if run is None:
        active_run("log")
    kind = type(value)
    if (kind is float or kind is int) and (step is None or type(step) is int) \
            and not run._in_child:
        # the common case inlined (a known metric, a plain number): one call saved per point
        last = run._next_step.get(name)
        if last is not None:
            if step is None:
                step = last
            run._next_step[name] = step + 1
            run._points.append((name, step, value, _now()))
            return
    run.log(name, value, step)


def artifact(path: str | os.PathLike, name: str | None = None) -> str:
    """Store a file (a checkpoint, a figure) with the current run; returns its sha256."""
    return active_run("artifact").artifact(path, name)


def _forget_in_child() -> None:
    if _active is not None:
        _active.forget_in_child()


os.register_at_fork(after_in_child=_forget_in_child)
