"""The store contract, the same on every backend (DESIGN.md 3 and 6).

Writes go through `Store.apply` with the operations a run's flusher produces, so what is
checked here is what a run, a retried flush, or `recorder sync` does to the database.
"""

from __future__ import annotations

import math
import os
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import RunNotFound
from recorder.run import MetricChunks
from recorder.store import open_store
from recorder.store.files import CHUNK_BYTES, sha256

NX_FILES = ("nx-27017 0.8.1 serves fs.files/fs.chunks from its own GridFS adapter, which "
            "acknowledges replace_one(upsert=True) there but stores nothing (n: 0), so the "
            "files recorder.store.files writes are never stored")
NX_DELETE_FILES = ("nx-27017 0.8.1's GridFS adapter stores nothing on replace_one(upsert=True) "
                   "into fs.files/fs.chunks and rejects delete_many({'_id': {'$in': [...]}}) on "
                   "fs.files (\"File with id {'$in': [...]} not found\")")
NX_NONFINITE = ("nx-27017 keeps documents as SQLite JSON, which has no NaN/Inf; "
                "a real MongoDB and the embedded store do")
NX_ID_SORT = ("nx-27017 0.8.1 sorts integer _id values as text (9 before 41 before 100), so "
              "sorting runs by _id does not find the largest id once ids reach 10")
NX_SET_DATETIME = ("nx-27017 0.8.1 stores a datetime written through $set as a string "
                   "('2024-01-02 03:04:05.678000'); inserted datetimes come back as datetimes")


def new_uid() -> str:
    return uuid.uuid4().hex


def insert_run(store, uid: str | None = None, **fields) -> int:
    return store.apply({"op": "insert_run", "doc": {"uid": uid or new_uid(), **fields}})


def as_utc(value: datetime) -> datetime:
    """Stores give naive UTC datetimes back (pymongo's default), at millisecond precision."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- run ids -------------------------------------------------------------------------------

def test_insert_run_allocates_increasing_ids_from_the_counter(store):
    ids = [insert_run(store, status="RUNNING") for _ in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert store.db["counters"].find_one({"_id": "runs"})["seq"] == 5


def test_insert_run_is_idempotent_by_uid(store, make_store):
    op = {"op": "insert_run", "doc": {"uid": new_uid(), "status": "RUNNING"}}
    first = store.apply(op)
    assert store.apply(op) == first
    # a fresh Store (as `recorder sync` in another process) finds the run by its uid
    assert make_store().apply(op) == first
    assert store.db["runs"].count_documents({}) == 1
    assert insert_run(store) == first + 1  # the retries took no id


@pytest.mark.xfail_on("nx27017", reason=NX_ID_SORT)
def test_a_missing_counter_continues_after_the_largest_run_id(store):
    store.db["runs"].insert_many([{"_id": 3, "uid": new_uid()}, {"_id": 41, "uid": new_uid()},
                                  {"_id": 7, "uid": new_uid()}])
    assert store.db["counters"].count_documents({}) == 0
    assert insert_run(store) == 42
    assert insert_run(store) == 43


def test_update_run_sets_fields_including_dotted_paths(store):
    uid = new_uid()
    run_id = insert_run(store, uid, status="RUNNING", config={"lr": 0.1},
                        environment={"python": "3.11.7", "packages": {"numpy": "2.0"}})
    store.apply({"op": "update_run", "uid": uid,
                 "set": {"status": "COMPLETED", "result": {"acc": 0.5},
                         "environment.torch": {"version": "2.3.0", "cuda": None}}})
    run = store.get_run(run_id)
    assert run["status"] == "COMPLETED"
    assert run["result"] == {"acc": 0.5}
    assert run["environment"] == {"python": "3.11.7", "packages": {"numpy": "2.0"},
                                  "torch": {"version": "2.3.0", "cuda": None}}
    assert run["config"] == {"lr": 0.1}


# -- metrics -------------------------------------------------------------------------------

def metric_ops(uid: str, flushes: list[list[tuple]], size: int, close: int = 100) -> list[dict]:
    """The `metrics` operations a run's flusher makes for these batches of points."""
    chunks = MetricChunks(uid, size=size, close=close)
    return [{"op": "metrics", "uid": uid, **chunks.add(batch)} for batch in flushes]


def points(name: str, steps, scale: float = 1.0) -> list[tuple]:
    return [(name, step, step * scale, 1_700_000_000.0 + step) for step in steps]


def expected_series(pts: list[tuple]) -> dict:
    return {"steps": [p[1] for p in pts], "values": [p[2] for p in pts],
            "timestamps": [p[3] for p in pts]}


def test_a_retried_flush_never_duplicates_a_point(store):
    uid = new_uid()
    run_id = insert_run(store, uid)
    loss = points("loss", range(10))
    ops = metric_ops(uid, [loss[:2], loss[2:9], loss[9:]], size=5, close=3)
    # steps 0-1: a first write, left open (under 3); 0-4: rewritten full; 5-8: written once
    # and closed (3 or more at a flush); 9: a first write, open
    assert [len(op["insert"]) for op in ops] == [1, 1, 1]
    assert [len(op["replace"]) for op in ops] == [0, 1, 0]
    for op in ops:  # every flush delivered twice, as after a write that failed late
        store.apply(op)
        store.apply(op)
    for op in ops:  # and all of them again, as `recorder sync` re-delivering a spool
        store.apply(op)
    assert store.metrics(run_id) == {"loss": expected_series(loss)}
    assert store.count("metrics", run_id) == 3  # 5 + 4 + 1 points


def test_metrics_joins_chunks_in_step_order_across_many_chunks(store):
    uid = new_uid()
    run_id = insert_run(store, uid)
    loss, acc = points("loss", range(40), 0.5), points("acc", range(0, 80, 2), 0.25)
    interleaved = [p for pair in zip(loss, acc) for p in pair]
    batches = [interleaved[i:i + 7] for i in range(0, len(interleaved), 7)]
    for op in metric_ops(uid, batches, size=3):  # 14 chunks per metric: seq 10 after 9
        store.apply(op)
    assert store.metrics(run_id) == {"loss": expected_series(loss), "acc": expected_series(acc)}
    assert store.count("metrics", run_id) == 28


def test_metrics_of_one_run_are_not_another_runs(store):
    a, b = new_uid(), new_uid()
    run_a, run_b = insert_run(store, a), insert_run(store, b)
    for op in metric_ops(a, [points("loss", range(5))], 2) + metric_ops(
            b, [points("loss", range(3), 2.0)], 2):
        store.apply(op)
    assert store.metrics(run_a)["loss"]["steps"] == [0, 1, 2, 3, 4]
    assert store.metrics(run_b)["loss"]["values"] == [0.0, 2.0, 4.0]


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=8),
       retries=st.lists(st.integers(1, 3), min_size=8, max_size=8),
       chunk=st.integers(1, 5))
def test_any_flush_split_and_retry_keeps_every_point_once(sizes, retries, chunk):
    """On mongomock only: a property over many splits is about the ops, not the backend."""
    store = open_store(f"mongomock://{uuid.uuid4().hex}")
    uid = new_uid()
    run_id = insert_run(store, uid)
    total = sum(sizes)
    pts = points("m", range(total))
    batches, start = [], 0
    for n in sizes:
        batches.append(pts[start:start + n])
        start += n
    for op, times in zip(metric_ops(uid, batches, chunk), retries):
        for _ in range(times):
            store.apply(op)
    assert store.metrics(run_id) == ({"m": expected_series(pts)} if total else {})


# -- files ---------------------------------------------------------------------------------

BIG = os.urandom(2 * CHUNK_BYTES + 1000)  # three chunks
FILES = {sha256(data): data for data in (b"", b"print('hello')\n", BIG)}


@pytest.mark.xfail_on("nx27017", reason=NX_FILES)
def test_files_round_trip(store):
    assert store.apply({"op": "files", "files": FILES}) == 3
    for sha, data in FILES.items():
        assert store.get_file(sha) == data
    assert store.db["fs.chunks"].count_documents({"files_id": sha256(BIG)}) == 3
    assert store.get_file(sha256(b"never stored")) is None


@pytest.mark.xfail_on("nx27017", reason=NX_FILES)
def test_files_are_deduplicated_by_sha256(store, make_store):
    assert store.apply({"op": "files", "files": FILES}) == 3
    assert store.apply({"op": "files", "files": FILES}) == 0
    extra = b"another file"
    assert make_store().apply(
        {"op": "files", "files": {sha256(BIG): BIG, sha256(extra): extra}}) == 1
    assert store.db["fs.files"].count_documents({}) == 4
    assert store.db["fs.chunks"].count_documents({}) == 1 + 1 + 3 + 1


@pytest.mark.xfail_on("nx27017", reason=NX_FILES)
def test_a_corrupted_chunk_makes_get_file_return_none(store):
    store.apply({"op": "files", "files": FILES})
    sha = sha256(BIG)
    assert store.get_file(sha) == BIG
    store.db["fs.chunks"].update_one({"files_id": sha, "n": 1}, {"$set": {"data": b"x" * 10}})
    assert store.get_file(sha) is None
    assert store.get_file(sha256(b"print('hello')\n")) == b"print('hello')\n"


@pytest.mark.xfail_on("nx27017", reason=NX_FILES)
def test_a_missing_chunk_makes_get_file_return_none(store):
    store.apply({"op": "files", "files": FILES})
    sha = sha256(BIG)
    assert store.get_file(sha) == BIG
    store.db["fs.chunks"].delete_one({"files_id": sha, "n": 2})
    assert store.get_file(sha) is None


@pytest.mark.xfail_on("nx27017", reason=NX_FILES)
def test_gridfs_reads_the_files_we_write(store, backend):
    if backend not in ("nx27017", "mongodb"):
        pytest.skip("gridfs.GridFSBucket needs a pymongo database")
    import gridfs

    store.apply({"op": "files", "files": FILES})
    bucket = gridfs.GridFSBucket(store.db)
    for sha, data in FILES.items():
        assert bucket.open_download_stream(sha).read() == data


# -- queries -------------------------------------------------------------------------------

def test_find_runs_with_a_nested_config_filter_newest_first(store):
    for lr, status in [(0.001, "COMPLETED"), (0.1, "COMPLETED"), (0.005, "FAILED"),
                       (0.002, "COMPLETED"), (0.0001, "RUNNING"), (0.003, "COMPLETED")]:
        insert_run(store, config={"lr": lr, "optim": {"name": "adam"}}, status=status)
    query = {"config.lr": {"$lt": 0.01}, "status": "COMPLETED"}
    assert [r["_id"] for r in store.find_runs(query)] == [6, 4, 1]
    assert [r["_id"] for r in store.find_runs(query, limit=2)] == [6, 4]
    assert [r["_id"] for r in store.find_runs({"config.optim.name": "adam"}, limit=1)] == [6]
    assert store.find_runs({"config.lr": {"$gt": 1}}) == []


@pytest.mark.xfail_on("nx27017", reason=NX_ID_SORT)
def test_runs_are_newest_first_past_nine_runs(store):
    for _ in range(12):
        insert_run(store, status="COMPLETED")
    assert [r["_id"] for r in store.find_runs()] == list(range(12, 0, -1))
    assert store.get_run("last")["_id"] == 12


def test_get_run_by_id_and_last(store):
    uids = [new_uid() for _ in range(3)]
    for uid in uids:
        insert_run(store, uid, status="RUNNING")
    assert store.get_run(2)["uid"] == uids[1]
    assert store.get_run("2")["uid"] == uids[1]
    assert store.get_run("last")["uid"] == uids[2]
    assert store.get_run(" LAST ")["_id"] == 3


@pytest.mark.parametrize("ref", [4, "99", "abc", None])
def test_get_run_raises_run_not_found(store, ref):
    insert_run(store)
    with pytest.raises(RunNotFound):
        store.get_run(ref)


def test_last_in_an_empty_store_raises_run_not_found(store):
    with pytest.raises(RunNotFound, match="no runs"):
        store.get_run("last")


# -- deletion ------------------------------------------------------------------------------

def fill_run(store, uid: str, files: dict[str, bytes] | None = None, **doc) -> int:
    """A run with metrics, events and histograms, as its flusher writes them."""
    run_id = insert_run(store, uid, **doc)
    if files:
        store.apply({"op": "files", "files": files})
    for op in metric_ops(uid, [points("loss", range(5)), points("loss", range(5, 9))], 3):
        store.apply(op)
    store.apply({"op": "documents", "uid": uid, "collection": "events", "docs": [
        {"_id": f"{uid}:e{i}", "step": i, "kind": "nan", "phase": "forward",
         "module": "fc1"} for i in range(2)]})
    store.apply({"op": "documents", "uid": uid, "collection": "histograms", "docs": [
        {"_id": f"{uid}:h0", "name": "fc1.grad", "step": 0, "edges": [0.0, 1.0],
         "counts": [3], "nan": 0, "posinf": 0, "neginf": 0}]})
    store.apply({"op": "documents", "uid": uid, "collection": "embeddings", "docs": [
        {"_id": f"{uid}:v0", "name": "features", "step": 0, "shape": [1, 2],
         "vectors": b"\x00" * 8, "labels": None}]})
    return run_id


def test_delete_run_removes_its_documents_and_nothing_else(store):
    gone, kept = new_uid(), new_uid()
    gone_id, kept_id = fill_run(store, gone), fill_run(store, kept)
    removed = store.delete_run(gone_id)
    assert removed == {"metrics": 3, "events": 2, "histograms": 1, "embeddings": 1, "files": 0}
    with pytest.raises(RunNotFound):
        store.get_run(gone_id)
    for collection in ("metrics", "events", "histograms", "embeddings"):
        assert store.db[collection].count_documents({"uid": gone}) == 0
        assert store.count(collection, kept_id) > 0
    assert store.metrics(kept_id)["loss"]["steps"] == list(range(9))
    with pytest.raises(RunNotFound):
        store.delete_run(gone_id)


@pytest.mark.xfail_on("nx27017", reason=NX_DELETE_FILES)
def test_delete_run_removes_only_the_files_no_other_run_uses(store):
    shared, source, untracked, diff, model = (b"shared source", b"own source", b"untracked",
                                              b"a large diff", b"model weights")
    files = {sha256(d): d for d in (shared, source, untracked, diff, model)}
    gone_id = fill_run(
        store, new_uid(), files,
        experiment={"sources": [["lib.py", sha256(shared)], ["main.py", sha256(source)]]},
        git={"untracked": [["notes.txt", sha256(untracked)]], "diff_file_id": sha256(diff)},
        artifacts=[{"name": "model.pt", "file_id": sha256(model)}])
    kept_id = fill_run(store, new_uid(), {sha256(shared): shared},
                       experiment={"sources": [["lib.py", sha256(shared)]]})
    assert store.delete_run(gone_id)["files"] == 4
    assert store.get_file(sha256(shared)) == shared
    for data in (source, untracked, diff, model):
        assert store.get_file(sha256(data)) is None
    assert store.db["fs.files"].count_documents({}) == 1
    assert store.db["fs.chunks"].count_documents({}) == 1
    assert store.get_run(kept_id)["experiment"]["sources"] == [["lib.py", sha256(shared)]]


# -- values --------------------------------------------------------------------------------

@pytest.mark.xfail_on("nx27017", reason=NX_NONFINITE)
def test_nan_and_infinities_round_trip(store):
    uid = new_uid()
    nonfinite = [math.nan, math.inf, -math.inf]
    run_id = insert_run(store, uid, config={"clip": math.inf, "floor": -math.inf},
                        info={"first": math.nan})
    store.apply({"op": "update_run", "uid": uid, "set": {"result": {"loss": math.nan}}})
    store.apply({"op": "metrics", "uid": uid, **MetricChunks(uid, 10).add(
        [("loss", i, v, 1.0) for i, v in enumerate(nonfinite)])})
    run = store.get_run(run_id)
    assert run["config"] == {"clip": math.inf, "floor": -math.inf}
    assert math.isnan(run["info"]["first"])
    assert math.isnan(run["result"]["loss"])
    values = store.metrics(run_id)["loss"]["values"]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


WHEN = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # BSON keeps milliseconds
BLOB = bytes(range(256))


def test_datetimes_and_bytes_round_trip_on_insert(store):
    run_id = insert_run(store, start_time=WHEN, heartbeat=WHEN, info={"blob": BLOB},
                        nested={"times": [WHEN], "empty": b""})
    run = store.get_run(run_id)
    assert as_utc(run["start_time"]) == WHEN and as_utc(run["heartbeat"]) == WHEN
    assert as_utc(run["nested"]["times"][0]) == WHEN
    assert bytes(run["info"]["blob"]) == BLOB
    assert bytes(run["nested"]["empty"]) == b""


@pytest.mark.xfail_on("nx27017", reason=NX_SET_DATETIME)
def test_datetimes_and_bytes_round_trip_through_update_run(store):
    uid = new_uid()
    run_id = insert_run(store, uid, start_time=WHEN)
    store.apply({"op": "update_run", "uid": uid,
                 "set": {"stop_time": WHEN, "heartbeat": WHEN, "info.blob": BLOB}})
    run = store.get_run(run_id)
    assert bytes(run["info"]["blob"]) == BLOB
    assert isinstance(run["stop_time"], datetime) and as_utc(run["stop_time"]) == WHEN
    assert as_utc(run["heartbeat"]) == WHEN
