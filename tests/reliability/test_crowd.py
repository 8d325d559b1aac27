"""A crowd: several processes, each one decorated run, logging into one embedded store at
the same moment. Every run and every point arrives once, under distinct ids.

The crowd and its check are `tests/bench/bench_crowd.py`'s (8 x 50,000 there, printed
with figures); here a smaller one keeps the suite fast.
"""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_crowd.py"
PROCESSES, POINTS = 4, 10_000


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_crowd", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_crowd", module)  # its dataclass looks itself up there
    spec.loader.exec_module(sys.modules["bench_crowd"])
    return sys.modules["bench_crowd"]


def test_a_crowd_of_processes_loses_and_duplicates_nothing(tmp_path):
    bench = load_bench()
    # flushing every 20 ms, each run writes many times while the others write too
    crowd = bench.run_crowd(str(tmp_path / "store"), PROCESSES, POINTS, tmp_path / "work",
                            backend="embedded", flush_interval=0.02, timeout=120)
    assert crowd.failures == []
    assert crowd.problems == []


def test_the_check_sees_a_lost_and_a_duplicated_point(tmp_path):
    """The crowd's verdict is only worth something if it can fail."""
    bench = load_bench()
    store = str(tmp_path / "store")
    crowd = bench.run_crowd(store, 2, 1500, tmp_path / "work", flush_interval=0.02, timeout=120)
    assert crowd.failures == [] and crowd.problems == []

    from recorder.store import open_store

    db = open_store(store).db
    chunk = db.metrics.find_one({"name": "x", "seq": 1, "run_id": 1})
    db.metrics.update_one({"_id": chunk["_id"]}, {"$set": {"steps": chunk["steps"][:-1],
                                                          "values": chunk["values"][:-1]}})
    copy = {**db.metrics.find_one({"name": "y", "run_id": 2}), "_id": "copy"}
    db.metrics.insert_one(copy)
    problems = bench.verify(store, 2, 1500)
    assert any("run 1: x has 1499 points" in p for p in problems), problems
    assert any("duplicate chunk" in p for p in problems), problems
