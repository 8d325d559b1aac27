"""One Store over a pymongo-style database: the only code that touches collections.

Every write is an operation (a plain dict, so the spool can keep it) applied by
`apply`, and every operation is idempotent: a retried or re-delivered write never
duplicates a run, a metric point or a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import RunNotFound
from . import files as fs

RUNS, METRICS, EVENTS, HISTOGRAMS, COUNTERS = "runs", "metrics", "events", "histograms", "counters"
EMBEDDINGS = "embeddings"
UIDS = "run_uids"  # uid -> run id by primary key: the embedded engine scans for any other field
DUPLICATE_KEY = 11000
DEFAULT_HEARTBEAT = 5.0  # seconds; a run records its own in meta.heartbeat_interval
STALE_BEATS = 6  # a RUNNING run silent for this many heartbeats has DIED


class Store:
    def __init__(self, db, write_lock: Callable[[], ContextManager] = contextlib.nullcontext,
                 url: str = ""):
        self.db = db
        self.url = url
        self._write_lock = write_lock
        self._run_ids: dict[str, int] = {}
        self._marked_dead = False

    # -- writes ------------------------------------------------------------------------

    def apply(self, op: dict) -> Any:
        """Carry out one write operation (see `ops` below for their shapes)."""
        with self._write_lock():
            return _HANDLERS[op["op"]](self, op)

    def _insert_run(self, op: dict) -> int:
        """The uid is claimed with its id before the run is inserted, so a retry after a
        failure at any point finds the same id and inserts the run at most once."""
        doc = op["doc"]
        claim = self.db[UIDS].find_one({"_id": doc["uid"]})
        if claim is None:
            run_id = self._next_run_id()
            self.db[UIDS].insert_one({"_id": doc["uid"], "run_id": run_id})
        else:
            run_id = claim["run_id"]
        if self.db[RUNS].find_one({"_id": run_id}, {"_id": 1}) is None:
            self.db[RUNS].insert_one({"_id": run_id, **doc})
        self._run_ids[doc["uid"]] = run_id
        return run_id

    def _next_run_id(self) -> int:
        """From a counter document: sorting runs to find the largest id scans them all."""
        counters = self.db[COUNTERS]
        if counters.find_one({"_id": RUNS}) is None:
            last = self.db[RUNS].find_one({}, {"_id": 1}, sort=[("_id", -1)])
            start = last["_id"] if last and isinstance(last["_id"], int) else 0
            counters.update_one({"_id": RUNS}, {"$max": {"seq": start}}, upsert=True)
        doc = counters.find_one_and_update({"_id": RUNS}, {"$inc": {"seq": 1}},
                                           return_document=True)
        return doc["seq"]

    def _update_run(self, op: dict) -> None:
        self.db[RUNS].update_one({"_id": self.run_id_for(op["uid"])}, {"$set": op["set"]})

    def _metrics(self, op: dict) -> None:
        """`insert` is a chunk's first write: a retried insert finds it there (and a later
        `replace` of it may already have grown it). `replace` rewrites an open chunk whole,
        so a retried one writes the same points again, never more (MetricChunks)."""
        run_id = self.run_id_for(op["uid"])
        for chunk in op["insert"]:
            try:
                self.db[METRICS].insert_one({**chunk, "run_id": run_id, "uid": op["uid"]})
            except Exception as exc:
                if getattr(exc, "code", None) != DUPLICATE_KEY:
                    raise
        for chunk in op["replace"]:
            doc = {**chunk, "run_id": run_id, "uid": op["uid"]}
            self.db[METRICS].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def _documents(self, op: dict) -> None:
        run_id = self.run_id_for(op["uid"])
        for doc in op["docs"]:
            doc = {**doc, "run_id": run_id, "uid": op["uid"]}
            self.db[op["collection"]].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def _files(self, op: dict) -> int:
        return fs.put_files(self.db, {sha: bytes(data) for sha, data in op["files"].items()})

    # -- reads -------------------------------------------------------------------------

    def run_id_for(self, uid: str) -> int | None:
        if uid not in self._run_ids:
            claim = self.db[UIDS].find_one({"_id": uid})
            if claim is None:
                return None
            self._run_ids[uid] = claim["run_id"]
        return self._run_ids[uid]

    def mark_dead(self, now: datetime | None = None) -> list[int]:
        """RUNNING runs whose heartbeat is older than STALE_BEATS beats become DIED (the
        process was killed, or its machine lost): written by the next read that sees them."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        dead = []
        for run in self.db[RUNS].find({"status": "RUNNING"}, {"heartbeat": 1, "meta": 1}):
            beat = _as_datetime(run.get("heartbeat"))
            meta = run.get("meta") if isinstance(run.get("meta"), dict) else {}
            interval = meta.get("heartbeat_interval") or DEFAULT_HEARTBEAT
            if beat is None or now - beat <= timedelta(seconds=STALE_BEATS * interval):
                continue
            with self._write_lock():  # unless it beat in the meantime
                result = self.db[RUNS].update_one(
                    {"_id": run["_id"], "status": "RUNNING", "heartbeat": run["heartbeat"]},
                    {"$set": {"status": "DIED", "stop_time": beat}})
            if result.modified_count:
                dead.append(run["_id"])
        return dead

    def find_runs(self, filter: dict | None = None, *, limit: int = 0,
                  projection: dict | None = None) -> list[dict]:
        self._mark_dead_once()
        cursor = self.db[RUNS].find(filter or {}, projection).sort("_id", -1)
        if limit:
            cursor = cursor.limit(limit)
        return list(cursor)

    def get_run(self, ref: int | str) -> dict:
        """A run by integer id, or `last` for the newest."""
        self._mark_dead_once()
        if str(ref).strip().lower() == "last":
            runs = self.find_runs(limit=1)
            if not runs:
                raise RunNotFound(f"no runs in {self.url or 'this store'}")
            return runs[0]
        try:
            run_id = int(ref)
        except (TypeError, ValueError):
            raise RunNotFound(f"{ref!r} is not a run id: give an integer id or 'last'") from None
        doc = self.db[RUNS].find_one({"_id": run_id})
        if doc is None:
            raise RunNotFound(f"no run {run_id} in {self.url or 'this store'}")
        return doc

    def _mark_dead_once(self) -> None:
        if not self._marked_dead:
            self._marked_dead = True
            self.mark_dead()

    def metrics(self, run_id: int) -> dict[str, dict[str, list]]:
        """Every metric of a run, its chunks joined in order: {name: {steps, values, timestamps}}."""
        series: dict[str, dict[str, list]] = {}
        chunks = sorted(self.db[METRICS].find({"run_id": run_id}),
                        key=lambda c: (c["name"], c.get("seq", 0)))
        for chunk in chunks:
            s = series.setdefault(chunk["name"], {"steps": [], "values": [], "timestamps": []})
            for key in s:
                s[key].extend(chunk.get(key, []))
        return series

    def documents(self, collection: str, run_id: int) -> list[dict]:
        """A run's events, histograms or embeddings, in step order."""
        docs = self.db[collection].find({"run_id": run_id})
        return sorted(docs, key=lambda d: (_number(d.get("step", d.get("first_step"))),
                                           str(d["_id"])))

    def count(self, collection: str, run_id: int) -> int:
        return self.db[collection].count_documents({"run_id": run_id})

    def get_file(self, sha: str) -> bytes | None:
        return fs.get_file(self.db, sha)

    def file_length(self, sha: str) -> int | None:
        """A stored file's size in bytes, or None when it is not in the store (`show`)."""
        meta = self.db["fs.files"].find_one({"_id": sha}, {"length": 1})
        return meta.get("length") if meta else None

    # -- removal -----------------------------------------------------------------------

    def delete_run(self, run_id: int) -> dict[str, int]:
        """Remove a run, its metrics, events and histograms, and the files no other run uses."""
        run = self.get_run(run_id)
        with self._write_lock():
            still_used = set()
            for other in self.db[RUNS].find({"_id": {"$ne": run_id}}):
                still_used.update(file_ids(other))
            removed = {c: self.db[c].delete_many({"run_id": run_id}).deleted_count
                       for c in (METRICS, EVENTS, HISTOGRAMS, EMBEDDINGS)}
            self.db[RUNS].delete_one({"_id": run_id})
            self.db[UIDS].delete_many({"run_id": run_id})
            removed["files"] = fs.delete_files(self.db, set(file_ids(run)) - still_used)
        return removed


def file_ids(run: dict) -> Iterable[str]:
    """Every GridFS file a run document refers to; entries of the wrong shape are skipped."""
    experiment = run.get("experiment") if isinstance(run.get("experiment"), dict) else {}
    git = run.get("git") if isinstance(run.get("git"), dict) else {}
    for entry in [*_list(experiment.get("sources")), *_list(git.get("untracked"))]:
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
            yield entry[1]
    if isinstance(git.get("diff_file_id"), str):
        yield git["diff_file_id"]
    for artifact in _list(run.get("artifacts")):
        if isinstance(artifact, dict) and isinstance(artifact.get("file_id"), str):
            yield artifact["file_id"]


def _as_datetime(value) -> datetime | None:
    """Heartbeats are datetimes; some wire servers hand back `$set` datetimes as text."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else \
            value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return _as_datetime(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _number(value) -> float:
    return value if isinstance(value, (int, float)) else float("inf")


def _list(value) -> list:
    return value if isinstance(value, list) else []


_HANDLERS = {
    "insert_run": Store._insert_run,
    "update_run": Store._update_run,
    "metrics": Store._metrics,
    "documents": Store._documents,
    "files": Store._files,
}
