"""Benchmark: the cost of `recorder.log`, and how soon after a run its points are stored.

Not a test (nothing here is collected by pytest): a script run by hand that prints figures.

What it measures, for 100,000 float scalars logged under one name:
  per call        the logging loop's time divided by the number of calls, with the
                  recorder's background flusher running as usual (loop only)
  until durable   seconds from the moment the decorated function returns until every
                  point is in the store: the decorator's exit blocks until the final flush
                  is delivered (or spooled), so this is the time the decorated call takes
                  to return after the function body ended. The store is then read back
                  (`open_store(path).metrics(run_id)`) to check that all points arrived.

Side by side, each in a fresh subprocess, best of two runs:
  list.append     the floor: `points.append(v)`
  recorder        `recorder.log("loss", v)` in an `@recorder.experiment` run, embedded store
  sacred          `_run.log_scalar("loss", v)`, MongoObserver over a mongomock database;
                  until durable = end of main until `ex.run()` returns (its final heartbeat
                  pushes the metrics to the observer)
  tensorboard     torch.utils.tensorboard `SummaryWriter.add_scalar("loss", v, i)`;
                  until durable = `close()`. Its writer queue holds 10 events, so
                  add_scalar blocks on the writer thread: its per-call figure is that
                  thread's speed, and close() finds little left to write.

Targets (from the issue): at most 1 us per call; every point durable within 1 s of the end.

Run it (from the repository root):
    . .venv/bin/activate && python tests/bench/bench_log.py

Sacred and TensorBoard are optional: a competitor that is not installed is skipped with a
note. They do not belong in the project's venv (Sacred 0.8.7 needs setuptools<81), so use
a separate one:
    python -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install -e . sacred 'setuptools<81' tensorboard mongomock \
        torch==2.13.0
    /tmp/benchvenv/bin/python tests/bench/bench_log.py

Options: --n POINTS (default 100000), --trials K (default 2), --only KIND..., --store-runs R
(the recorder's embedded store already holds R runs, cloned from a real run's document
through `insert_run`; default 0, an empty store).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

N_POINTS = 100_000
TRIALS = 2
TARGET_US_PER_CALL = 1.0
TARGET_DURABLE_S = 1.0
KINDS = ("list", "recorder", "sacred", "tensorboard")


def _values(n: int) -> list[float]:
    rng = random.Random(0)
    return [rng.random() for _ in range(n)]


# -- one trial each, run in a fresh process ------------------------------------------------


def trial_list(n: int, workdir: str) -> dict:
    values = _values(n)
    points = []
    t0 = time.perf_counter()
    for v in values:
        points.append(v)  # noqa: PERF402 - this loop is the floor being measured
    loop = time.perf_counter() - t0
    return {"loop_s": loop, "durable_s": None, "stored": len(points)}


def trial_recorder(n: int, workdir: str) -> dict:
    import recorder
    from recorder.store import open_store

    store_path = os.path.join(workdir, "store")
    if os.environ.get("BENCH_STORE_TEMPLATE"):  # --store-runs: a store that holds runs already
        shutil.copytree(os.environ["BENCH_STORE_TEMPLATE"], store_path)
    values = _values(n)
    marks: dict = {}

    @recorder.experiment(name="bench_log", store=store_path)
    def main(n: int = n) -> None:
        marks["uid"] = recorder.current_run().uid
        t0 = time.perf_counter()
        for v in values:
            recorder.log("loss", v)
        marks["end"] = time.perf_counter()
        marks["loop_s"] = marks["end"] - t0

    main(n=n)
    durable = time.perf_counter() - marks["end"]
    store = open_store(store_path)
    runs = store.find_runs({"uid": marks["uid"]}, projection={"_id": 1, "status": 1})
    stored = 0
    if runs:
        stored = len(store.metrics(runs[0]["_id"]).get("loss", {}).get("values", []))
    return {"loop_s": marks["loop_s"], "durable_s": durable, "stored": stored,
            "status": runs[0].get("status") if runs else None}


def trial_sacred(n: int, workdir: str) -> dict:
    import gridfs
    import mongomock
    import mongomock.gridfs
    from sacred import Experiment
    from sacred.observers import MongoObserver

    mongomock.gridfs.enable_gridfs_integration()  # sacred's observer wants a GridFS
    db = mongomock.MongoClient().sacred
    values = _values(n)
    marks: dict = {}
    ex = Experiment("bench_log")
    ex.observers.append(MongoObserver.create_from(db.runs, gridfs.GridFS(db),
                                                  metrics_collection=db.metrics))

    @ex.main
    def main(_run):
        t0 = time.perf_counter()
        for v in values:
            _run.log_scalar("loss", v)
        marks["end"] = time.perf_counter()
        marks["loop_s"] = marks["end"] - t0

    ex.run(options={"--loglevel": "ERROR"})
    durable = time.perf_counter() - marks["end"]
    stored = sum(len(doc.get("values", [])) for doc in db.metrics.find({"name": "loss"}))
    return {"loop_s": marks["loop_s"], "durable_s": durable, "stored": stored}


def trial_tensorboard(n: int, workdir: str) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    values = _values(n)
    log_dir = os.path.join(workdir, "tb")
    writer = SummaryWriter(log_dir=log_dir)
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        writer.add_scalar("loss", v, i)
    end = time.perf_counter()
    writer.close()
    durable = time.perf_counter() - end
    stored = None
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
        acc.Reload()
        stored = len(acc.Scalars("loss"))
    except Exception as exc:  # noqa: BLE001 - reading back is a check, not the benchmark
        print(f"note: could not read the tensorboard events back: {exc}", file=sys.stderr)
    return {"loop_s": end - t0, "durable_s": durable, "stored": stored}


TRIAL = {"list": trial_list, "recorder": trial_recorder, "sacred": trial_sacred,
         "tensorboard": trial_tensorboard}
NEEDS = {"sacred": ("sacred", "mongomock", "gridfs"),
         "tensorboard": ("torch", "tensorboard")}


def run_trial_here(kind: str, n: int) -> None:
    """Child mode: one trial, its figures as one JSON line on stdout."""
    with tempfile.TemporaryDirectory(prefix=f"bench_log_{kind}_") as workdir:
        try:
            result = TRIAL[kind](n, workdir)
        except ImportError as exc:
            result = {"skipped": f"{type(exc).__name__}: {exc}"}
    sys.stdout.flush()
    print("BENCH_RESULT " + json.dumps(result), file=sys.__stdout__, flush=True)


# -- the parent: trials in subprocesses, then the table -------------------------------------


def seed_store(path: str, runs: int) -> float:
    """A store holding `runs` runs: one real (small) run, then clones of its document."""
    import recorder
    from recorder.store import open_store

    @recorder.experiment(name="bench_log_seed", store=path)
    def seed_run(n: int = 10) -> None:
        for i in range(n):
            recorder.log("loss", 1.0 / (i + 1))

    seed_run(n=10)
    store = open_store(path)
    template = store.get_run("last")
    template.pop("_id")
    start = time.perf_counter()
    for i in range(runs - 1):
        doc = copy.deepcopy(template)
        doc.update(uid=uuid.uuid4().hex, config={"n": i}, config_hash=uuid.uuid4().hex, seed=i)
        store.apply({"op": "insert_run", "doc": doc})
    return time.perf_counter() - start


def run_trial(kind: str, n: int, template: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("BENCH_STORE_TEMPLATE", None)
    if template:
        env["BENCH_STORE_TEMPLATE"] = template
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                           "--n", str(n)], check=False, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"skipped": f"trial failed (exit {proc.returncode}): " + " | ".join(tail)}


def missing(kind: str) -> str | None:
    for module in NEEDS.get(kind, ()):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def best(results: list[dict]) -> dict:
    ok = [r for r in results if "skipped" not in r]
    if not ok:
        return results[-1]
    durable = [r["durable_s"] for r in ok if r["durable_s"] is not None]
    stored = [r["stored"] for r in ok]
    return {"loop_s": min(r["loop_s"] for r in ok),
            "loop_all": [r["loop_s"] for r in ok],
            "durable_s": min(durable) if durable else None,
            "durable_all": durable,
            "all_stored": all(s is not None and s == ok[0]["n"] for s in stored)
            if stored and stored[0] is not None else None,
            "stored": stored}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=N_POINTS)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--only", nargs="*", choices=KINDS, default=list(KINDS))
    parser.add_argument("--store-runs", type=int, default=0,
                        help="runs the recorder's store holds before the run (default 0)")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_trial_here(args.child, args.n)

    with tempfile.TemporaryDirectory(prefix="bench_log_") as workdir:
        template = None
        if args.store_runs and "recorder" in args.only:
            template = os.path.join(workdir, "template")
            seconds = seed_store(template, args.store_runs)
            print(f"the recorder's store holds {args.store_runs} runs before each run "
                  f"(seeded in {seconds:.1f} s)")
        report(args, template)


def report(args: argparse.Namespace, template: str | None) -> None:
    print(f"bench_log: {args.n:,} float scalars, best of {args.trials} runs, fresh process each")
    print(f"python {platform.python_version()} at {sys.executable}; {os.cpu_count()} CPUs; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: dict[str, dict] = {}
    for kind in args.only:
        why = missing(kind)
        if why:
            rows[kind] = {"skipped": why}
            continue
        results = []
        for _ in range(args.trials):
            result = run_trial(kind, args.n, template if kind == "recorder" else None)
            result["n"] = args.n
            results.append(result)
            if "skipped" in result:
                break
        rows[kind] = best(results)

    base = rows.get("list", {}).get("loop_s")
    sacred = rows.get("sacred", {})
    print()
    header = (f"{'':<12} {'us/call':>8} {'(runs)':>15} {'durable s':>10} {'(runs)':>15} "
              f"{'all stored':>10} {'x list':>8} {'x sacred':>9} {'durable x sacred':>17}")
    print(header)
    print("-" * len(header))
    for kind, row in rows.items():
        if "skipped" in row:
            print(f"{kind:<12} skipped: {row['skipped']}")
            continue
        per_call = row["loop_s"] / args.n * 1e6
        runs = "/".join(f"{x / args.n * 1e6:.2f}" for x in row["loop_all"])
        druns = "/".join(f"{x:.3f}" for x in row["durable_all"])
        vs_list = row["loop_s"] / base if base else None
        vs_sacred = row["loop_s"] / sacred["loop_s"] if sacred.get("loop_s") else None
        d_vs_sacred = (row["durable_s"] / sacred["durable_s"]
                       if row["durable_s"] is not None and sacred.get("durable_s") else None)
        stored = {True: "yes", False: f"NO {row['stored']}", None: "-"}[row["all_stored"]]
        if kind == "list":
            stored = "n/a"
        print(f"{kind:<12} {per_call:>8.3f} {runs:>15} {fmt(row['durable_s'], '.3f'):>10} "
              f"{druns or '-':>15} {stored:>10} {fmt(vs_list, '.1f'):>8} "
              f"{fmt(vs_sacred, '.2f'):>9} {fmt(d_vs_sacred, '.2f'):>17}")
    print()
    rec = rows.get("recorder", {})
    if "loop_s" in rec:
        per_call = rec["loop_s"] / args.n * 1e6
        print(f"target: <= {TARGET_US_PER_CALL:.1f} us per call        "
              f"recorder: {per_call:.3f} us ({'met' if per_call <= TARGET_US_PER_CALL else 'MISSED'})")
        print(f"target: all points durable <= {TARGET_DURABLE_S:.1f} s after the end   "
              f"recorder: {rec['durable_s']:.3f} s, all {args.n:,} stored: "
              f"{'yes' if rec['all_stored'] else 'NO'} "
              f"({'met' if rec['durable_s'] <= TARGET_DURABLE_S and rec['all_stored'] else 'MISSED'})")
    print("(runs) lists each run's figure; the columns left of them are the best run's.")


if __name__ == "__main__":
    main()
