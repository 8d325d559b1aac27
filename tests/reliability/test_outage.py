"""The database goes away, for real: the wire-protocol server is SIGKILLed mid-run and
started again. Training never waits, and every write arrives exactly once."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymongo

from recorder.store import open_store

TRAIN = """
import json, sys, time
from pathlib import Path
import recorder

@recorder.experiment
def main(go: str = "go"):
    slowest, step = 0.0, 0
    while not Path(go).exists():
        started = time.perf_counter()
        recorder.log("loss", float(step))
        recorder.log({"acc": step / 1000, "lr": 0.1})
        slowest = max(slowest, time.perf_counter() - started)
        step += 1
        if step == 200:
            print("ready", recorder.current_run().id, flush=True)
        time.sleep(0.002)
    print(json.dumps({"steps": step, "slowest_log_s": slowest}), flush=True)
    return step

main()
"""


def start_training(tmp_path: Path, store: str) -> subprocess.Popen:
    (tmp_path / "train.py").write_text(TRAIN)
    env = {**os.environ, "RECORDER_STORE": store, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.Popen([sys.executable, "train.py", f"go={tmp_path / 'go'}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, tmp_path: Path) -> tuple[dict, str]:
    (tmp_path / "go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def assert_everything_once(store_url: str, steps: int) -> dict:
    store = open_store(store_url)
    run = store.get_run("last")
    metrics = store.metrics(run["_id"])
    for name in ("loss", "acc", "lr"):
        assert metrics[name]["steps"] == list(range(steps)), name
    assert metrics["loss"]["values"] == [float(i) for i in range(steps)]
    assert run["status"] == "COMPLETED" and run["result"] == steps
    assert len(store.find_runs()) == 1
    return run


def test_the_server_comes_back_during_the_run(tmp_path, nx_outage):
    store = f"{nx_outage.start().address}/outage"
    proc = start_training(tmp_path, store)
    assert proc.stdout.readline().split()[0] == "ready"
    time.sleep(1.5)  # a few flushes reach the server ...
    nx_outage.kill()  # ... then it dies
    time.sleep(4)
    nx_outage.start()
    time.sleep(8)  # the flusher retries every 5 s (each try waits at most 2 s)
    result, err = finish(proc, tmp_path)

    assert result["slowest_log_s"] < 0.05  # no log call ever waited on the network
    assert "cannot write to mongodb://127.0.0.1" in err and "reachable again" in err
    assert_everything_once(store, result["steps"])
    assert not list((tmp_path / "cache").rglob("*.bson"))  # nothing left for `sync`


def test_the_server_comes_back_after_the_run_and_sync_delivers(tmp_path, nx_outage):
    store = f"{nx_outage.start().address}/outage"
    proc = start_training(tmp_path, store)
    assert proc.stdout.readline().split()[0] == "ready"
    time.sleep(1.5)
    nx_outage.kill()
    time.sleep(1)
    began = time.monotonic()
    result, err = finish(proc, tmp_path)
    assert time.monotonic() - began < 15  # the exit waits at most 5 s for the database
    spools = list((tmp_path / "cache").rglob("*.bson"))
    assert spools and str(spools[0].parent) in err

    nx_outage.start()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    sync = [Path(sys.executable).with_name("recorder"), "sync", "--store", store]
    first = subprocess.run(sync, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "writes delivered" in first.stdout
    assert_everything_once(store, result["steps"])
    again = subprocess.run(sync, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "nothing to sync: no writes are waiting"  # idempotent
    assert_everything_once(store, result["steps"])


def test_unreachable_at_start_the_run_goes_on_and_sync_creates_it(tmp_path, nx_outage):
    store = f"{nx_outage.address}/late"  # not started yet
    proc = start_training(tmp_path, store)
    assert proc.stdout.readline().split() == ["ready", "None"]  # no id while offline
    result, err = finish(proc, tmp_path)
    assert "the run goes on and its writes are kept in" in err
    nx_outage.start()
    assert pymongo.MongoClient(nx_outage.address)["late"].runs.count_documents({}) == 0

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    sync = [Path(sys.executable).with_name("recorder"), "sync", "--store", store]
    done = subprocess.run(sync, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("run 1:"), done.stderr
    run = assert_everything_once(store, result["steps"])
    assert run["config"] == {"go": str(tmp_path / "go")} and run["experiment"]["sources"]
