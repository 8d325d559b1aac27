"""Benchmark: a crowd of processes logging into one store at the same time, then checked.

Not a test (nothing here is collected by pytest): a script run by hand that prints figures.
`tests/reliability/test_crowd.py` runs the same crowd, smaller, as a test.

Each of PROCESSES processes makes one decorated run (`@recorder.experiment`, config
`worker=W`) that logs POINTS points of the metric `x` (value W * 1e6 + step) and every
100th step one of `y`. The processes are started first and wait on a file, so they all log
and write at once. The store is then read back and checked:

  runs       one per process, ids 1..PROCESSES, distinct uids, all COMPLETED
  points     every point of every run once, in order, with its value and timestamp
  chunks     no duplicate chunk (run, metric, seq), each metric's numbered 0..n-1; the
             metric documents hold exactly PROCESSES * POINTS points of `x` in all (a
             duplicate would show here)
  spool      nothing left on disk for `recorder sync`, no `recorder: warning` printed

When runs did leave writes in the spool (a final flush longer than the 5 s a run waits for
a server store at exit), the script then does what a user would, `recorder sync`, and
checks again: were points lost, or only late?

Figures: wall time (from "go" until the last process has exited, that is until every
point is durable), points/s over that time, the slowest process's logging loop and the
slowest exit (from the end of the function until the decorated call returned: the final
flush, under the store's lock with everyone else's).

Backends: `embedded` (the default store: litemongo over SQLite, one file lock) and
`nx27017`, the MongoDB wire-protocol server from the dev extra, started here on a free
port with its own --data-dir, --pid-file and --log-file (DESIGN.md 6 says it was seen
returning stale sorts and stalling with three concurrent clients; a real MongoDB is the
target: give one with --mongo-url).

Run it (from the repository root):
    . .venv/bin/activate && python tests/bench/bench_crowd.py
Options: --processes N (8) --points P (50000) --backend embedded nx27017 mongodb
(default: embedded nx27017) --mongo-url URL --flush-interval S (1.0, the recorder's own)
--timeout S (300: a process still running then is killed and reported).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

PROCESSES = 8
POINTS = 50_000
Y_EVERY = 100
TIMEOUT = 300.0

WRITER = textwrap.dedent('''
    """One process of the crowd: one decorated run of POINTS points, timed."""
    import json
    import sys
    import time
    from pathlib import Path

    import recorder
    import recorder.flusher

    store, worker, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ready, go, interval = Path(sys.argv[4]), Path(sys.argv[5]), float(sys.argv[6])
    y_every = int(sys.argv[7])
    times = {}


    class Flusher(recorder.flusher.Flusher):
        """The recorder's flusher, flushing every `interval` s (1 s is its own)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, interval=interval, **kwargs)


    recorder.flusher.Flusher = Flusher


    @recorder.experiment(name="crowd", store=store)
    def main(worker: int = 0):
        began = time.perf_counter()
        for step in range(points):
            recorder.log("x", worker * 1e6 + step, step=step)
            if step % y_every == 0:
                recorder.log({"y": step / points})
        times["loop_s"] = time.perf_counter() - began
        times["ended"] = time.perf_counter()
        return worker


    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    main(worker=worker)
    times["exit_s"] = time.perf_counter() - times.pop("ended")
    print(json.dumps(times), flush=True)
''')


@dataclass
class Crowd:
    backend: str
    processes: int
    points: int
    wall_s: float = 0.0
    loop_s: float = 0.0  # the slowest process's logging loop
    exit_s: float = 0.0  # the slowest exit (final flush)
    failures: list[str] = field(default_factory=list)  # processes that failed or hung
    problems: list[str] = field(default_factory=list)  # what the check found
    synced: str = ""  # what `recorder sync` delivered when runs left writes in the spool
    after_sync: list[str] | None = None  # the check again after it

    @property
    def total_points(self) -> int:
        return self.processes * (self.points + math.ceil(self.points / Y_EVERY))


def run_crowd(store: str, processes: int, points: int, workdir: Path, *,
              backend: str = "", flush_interval: float = 1.0, timeout: float = TIMEOUT,
              env: dict | None = None) -> Crowd:
    """Start the processes, let them go at once, wait for all; then check the store."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "crowd_writer.py"
    script.write_text(WRITER)
    go = workdir / "go"
    go.unlink(missing_ok=True)
    crowd = Crowd(backend, processes, points)
    procs = []
    for worker in range(processes):
        ready = workdir / f"ready-{worker}"
        ready.unlink(missing_ok=True)
        out = open(workdir / f"writer-{worker}.log", "w+b")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            [sys.executable, str(script), store, str(worker), str(points), str(ready), str(go),
             str(flush_interval), str(Y_EVERY)],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}), out))
    try:
        deadline = time.monotonic() + 60
        while not all((workdir / f"ready-{w}").exists() for w in range(processes)):
            if any(p.poll() is not None for p, _ in procs) or time.monotonic() > deadline:
                crowd.failures.append("a process did not start: " + _output(procs[0][1]))
                return crowd
            time.sleep(0.01)
        began = time.monotonic()
        go.touch()  # all at once
        for worker, (proc, out) in enumerate(procs):
            try:
                proc.wait(max(1.0, began + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                crowd.failures.append(f"process {worker} still running after {timeout:.0f} s: "
                                      "killed")
        crowd.wall_s = time.monotonic() - began
        for worker, (proc, out) in enumerate(procs):
            text = _output(out)
            if proc.returncode != 0:
                if proc.returncode is not None:
                    crowd.failures.append(f"process {worker} exited {proc.returncode}: "
                                          f"{text[-500:]}")
                continue
            warnings = [line for line in text.splitlines() if "recorder: warning" in line]
            if warnings:
                crowd.failures.append(f"process {worker} warned: {warnings[0][:300]}")
            times = json.loads(text.strip().splitlines()[-1])
            crowd.loop_s = max(crowd.loop_s, times["loop_s"])
            crowd.exit_s = max(crowd.exit_s, times["exit_s"])
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    crowd.problems = verify(store, processes, points)
    return crowd


def _output(out) -> str:
    out.flush()
    out.seek(0)
    return out.read().decode("utf-8", "replace")


def verify(store_url: str, processes: int, points: int) -> list[str]:
    """Everything the crowd logged, exactly once; what is wrong otherwise (at most a few)."""
    from recorder.store import backend_for, open_store

    store = open_store(store_url)
    problems: list[str] = []
    try:
        runs = store.find_runs()
        ids = sorted(r["_id"] for r in runs)
        if ids != list(range(1, processes + 1)):
            problems.append(f"run ids {ids}, expected 1..{processes}")
        if len({r.get("uid") for r in runs}) != len(runs):
            problems.append("two runs share a uid")
        workers = sorted(r.get("config", {}).get("worker") for r in runs)
        if workers != list(range(processes)):
            problems.append(f"workers {workers}, expected 0..{processes - 1}")
        statuses = {r.get("status") for r in runs}
        if statuses != {"COMPLETED"}:
            problems.append(f"statuses {sorted(map(str, statuses))}")
        y_steps = list(range(math.ceil(points / Y_EVERY)))
        for run in runs:
            worker = run.get("config", {}).get("worker")
            series = store.metrics(run["_id"])
            x, y = series.get("x"), series.get("y")
            if x is None or x["steps"] != list(range(points)):
                problems.append(f"run {run['_id']}: x has "
                                f"{len(x['steps']) if x else 0} points, expected {points} "
                                "in order")
            elif x["values"] != [worker * 1e6 + s for s in range(points)]:
                problems.append(f"run {run['_id']}: x values differ")
            elif len(x["timestamps"]) != points:
                problems.append(f"run {run['_id']}: x timestamps missing")
            if y is None or y["steps"] != y_steps:
                problems.append(f"run {run['_id']}: y has {len(y['steps']) if y else 0} "
                                f"points, expected {len(y_steps)} in order")
        chunks = list(store.db["metrics"].find({}, {"run_id": 1, "name": 1, "seq": 1,
                                                   "steps": 1}))
        keys = [(c.get("run_id"), c.get("name"), c.get("seq")) for c in chunks]
        if len(set(keys)) != len(keys):
            problems.append(f"{len(keys) - len(set(keys))} duplicate chunk documents")
        stored_x = sum(len(c.get("steps", [])) for c in chunks if c.get("name") == "x")
        if stored_x != processes * points:
            problems.append(f"{stored_x} points of x stored, expected {processes * points}")
        seqs: dict[tuple, list] = {}
        for run_id, name, seq in keys:
            seqs.setdefault((run_id, name), []).append(seq)
        for (run_id, name), found in sorted(seqs.items(), key=str):
            if sorted(found) != list(range(len(found))):
                problems.append(f"run {run_id}: {name} chunks numbered {sorted(found)[:10]}..., "
                                f"expected 0..{len(found) - 1}")
        spooled = [p.name for p in backend_for(store_url).spool_dir.glob("*.bson")]
        if spooled:
            problems.append(f"left in the spool: {spooled}")
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read back is a finding
        problems.append(f"reading the store back failed: {type(exc).__name__}: {exc}")
    finally:
        close = getattr(getattr(store.db, "client", None), "close", None)
        if close is not None:
            close()
    return problems[:20]


# -- the wire-protocol server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nx(home: Path) -> tuple[subprocess.Popen, str]:
    """nx-27017 on a free port, with a data folder, pid file and log file of its own."""
    import pymongo

    beside = Path(sys.executable).parent / "nx-27017"
    exe = shutil.which("nx-27017") or (str(beside) if beside.exists() else None)
    if exe is None:
        raise RuntimeError("nx-27017 is not installed (pip install -e '.[dev]')")
    (home / "data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(home / "stdout.txt", "ab") as out:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--data-dir", str(home / "data"),
             "--pid-file", str(home / "nx.pid"), "--log-file", str(home / "nx.log")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    address = f"mongodb://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        client = pymongo.MongoClient(address, serverSelectionTimeoutMS=250)
        try:
            client.admin.command("ping")
            return proc, address
        except pymongo.errors.PyMongoError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("nx-27017 did not start") from None
            time.sleep(0.1)
        finally:
            client.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the script --------------------------------------------------------------------------


def sync_and_verify(crowd: Crowd, store: str) -> None:
    """When runs left writes in the spool (a slow store at exit), deliver them as a user
    would (`recorder sync`) and check again: was anything lost, or only late?"""
    from recorder.store import backend_for
    from recorder.sync import sync

    if not list(backend_for(store).spool_dir.glob("*.bson")):
        return
    deliveries = sync(store)
    crowd.synced = (f"{len(deliveries)} spool files, "
                    f"{sum(d.ops for d in deliveries)} writes, "
                    f"{sum(d.unreadable for d in deliveries)} unreadable bytes")
    crowd.after_sync = verify(store, crowd.processes, crowd.points)


def report(crowd: Crowd) -> None:
    verdict = "OK: every run, every point, once" if not crowd.failures and not crowd.problems \
        else "FAILED"
    print(f"{crowd.backend}: {crowd.processes} processes x {crowd.points:,} points "
          f"(+ {crowd.total_points // crowd.processes - crowd.points} of y each)")
    if crowd.wall_s:
        print(f"  wall {crowd.wall_s:.2f} s, {crowd.total_points / crowd.wall_s:,.0f} points/s; "
              f"slowest loop {crowd.loop_s:.3f} s, slowest exit (final flush) "
              f"{crowd.exit_s:.2f} s")
    print(f"  check: {verdict}")
    lines = crowd.failures + crowd.problems
    for line in lines[:8]:
        print(f"    - {line}")
    if len(lines) > 8:
        print(f"    - ... and {len(lines) - 8} more")
    if crowd.after_sync is not None:
        again = "OK: every run, every point, once" if not crowd.after_sync else "FAILED"
        print(f"  after `recorder sync` ({crowd.synced}): {again}")
        for line in crowd.after_sync[:8]:
            print(f"    - {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--points", type=int, default=POINTS)
    parser.add_argument("--backend", nargs="+", default=["embedded", "nx27017"],
                        choices=["embedded", "nx27017", "mongodb"])
    parser.add_argument("--mongo-url", help="a real MongoDB for --backend mongodb")
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, flush every "
          f"{args.flush_interval} s")
    failed = False
    for backend in args.backend:
        with tempfile.TemporaryDirectory(prefix=f"crowd-{backend}-") as tmp:
            work = Path(tmp)
            env = {"XDG_CACHE_HOME": str(work / "cache")}  # a server store's spool
            server = None
            try:
                if backend == "embedded":
                    store = str(work / "store")
                elif backend == "nx27017":
                    server, address = start_nx(work / "nx")
                    store = f"{address}/crowd"
                else:
                    if not args.mongo_url:
                        parser.error("--backend mongodb needs --mongo-url")
                    store = args.mongo_url.rstrip("/") + f"/crowd{os.getpid()}"
                os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]  # verify() looks there
                crowd = run_crowd(store, args.processes, args.points, work / "run",
                                  backend=backend, flush_interval=args.flush_interval,
                                  timeout=args.timeout, env=env)
                sync_and_verify(crowd, store)
            finally:
                if server is not None:
                    stop(server)
            report(crowd)
            failed |= bool(crowd.failures or crowd.problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
