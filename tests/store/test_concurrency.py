"""The embedded store loses nothing with many writer processes (DESIGN.md 3).

litemongo alone loses concurrent writes across processes; the store's file lock, held
around each write (not each run), must make it lose nothing while runs of different
processes still proceed side by side. Real processes, real decorated runs.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from recorder.store import open_store

WRITERS, RUNS, POINTS = 4, 20, 1000
START_TIMEOUT, RUN_TIMEOUT = 60.0, 180.0

WRITER = textwrap.dedent('''
    """One writer process: RUNS decorated runs one after another, POINTS points each."""
    import sys
    import time
    from pathlib import Path

    import recorder
    import recorder.flusher

    store, worker, runs, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ready, go = Path(sys.argv[5]), Path(sys.argv[6])


    class FrequentFlusher(recorder.flusher.Flusher):
        """Flush every 10 ms, so each run writes several times while the others write."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, interval=0.01, **kwargs)


    recorder.flusher.Flusher = FrequentFlusher


    @recorder.experiment(store=store)
    def main(worker: int, index: int):
        for step in range(points):
            recorder.log("x", worker * 1e6 + index * 1e3 + step, step=step)
            if step % 250 == 249:
                time.sleep(0.005)  # let a flush or two happen mid-run


    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    for index in range(runs):
        main(worker=worker, index=index)
''')


def start_writers(tmp_path: Path, store: Path) -> list[tuple[subprocess.Popen, Path]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    writers = []
    for worker in range(WRITERS):
        log = tmp_path / f"writer-{worker}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(store), str(worker), str(RUNS), str(POINTS),
                 str(tmp_path / f"ready-{worker}"), str(go)],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        writers.append((proc, log))
    deadline = time.monotonic() + START_TIMEOUT
    while not all((tmp_path / f"ready-{w}").exists() for w in range(WRITERS)):
        for proc, log in writers:
            assert proc.poll() is None, f"a writer exited at start:\n{log.read_text()}"
        assert time.monotonic() < deadline, "the writers did not start in time"
        time.sleep(0.01)
    go.touch()  # all at once
    return writers


def test_embedded_store_loses_nothing_with_many_writer_processes(tmp_path):
    store_path = tmp_path / "store"
    started = time.monotonic()
    writers = start_writers(tmp_path, store_path)
    try:
        for proc, log in writers:
            proc.wait(RUN_TIMEOUT)
    finally:
        for proc, _ in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started
    for proc, log in writers:
        output = log.read_text()
        assert proc.returncode == 0, output
        assert "recorder: warning" not in output, output  # nothing was spooled or lost

    store = open_store(store_path)
    try:
        runs = store.find_runs()
        assert len(runs) == WRITERS * RUNS
        assert sorted(r["_id"] for r in runs) == list(range(1, WRITERS * RUNS + 1))
        assert len({r["uid"] for r in runs}) == WRITERS * RUNS
        assert {(r["config"]["worker"], r["config"]["index"]) for r in runs} == set(
            itertools.product(range(WRITERS), range(RUNS)))
        assert {r["status"] for r in runs} == {"COMPLETED"}
        for run in runs:
            w, i = run["config"]["worker"], run["config"]["index"]
            series = store.metrics(run["_id"])
            assert list(series) == ["x"], run["_id"]
            assert series["x"]["steps"] == list(range(POINTS)), run["_id"]
            assert series["x"]["values"] == [w * 1e6 + i * 1e3 + s for s in range(POINTS)]
            assert len(series["x"]["timestamps"]) == POINTS
        chunks = [(c["run_id"], c["seq"]) for c in store.db["metrics"].find()]
        assert len(set(chunks)) == len(chunks)  # no chunk written twice as two documents
        for run in runs:  # each run's chunks numbered 0..n-1 (more than one if a flush came
            seqs = sorted(seq for run_id, seq in chunks if run_id == run["_id"])  # mid-run)
            assert seqs == list(range(len(seqs))), run["_id"]
        assert not list((store_path / "spool").glob("*"))

        # locked per write, not per run: runs of different processes overlap in time
        overlapping = sum(
            1 for a, b in itertools.combinations(runs, 2)
            if a["config"]["worker"] != b["config"]["worker"]
            and a["start_time"] < b["stop_time"] and b["start_time"] < a["stop_time"])
        assert overlapping > 0
    finally:
        store.db.client.close()
    print(f"{WRITERS} processes x {RUNS} runs x {POINTS} points: {elapsed:.1f} s, "
          f"{overlapping} overlapping pairs of runs")
