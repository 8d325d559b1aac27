"""A training process killed with SIGKILL: what it flushed is kept, and its run is marked
DIED once its heartbeat is stale, instead of RUNNING forever."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import recorder
from recorder.store import open_store

TRAIN = """
import time
import recorder

@recorder.experiment
def main():
    for step in range(1000):
        recorder.log("loss", float(step))
    time.sleep(1.5)  # at least one flush: everything so far is stored
    print("flushed", flush=True)
    time.sleep(600)

main()
"""


def cli(*args, cwd):
    recorder_exe = Path(sys.executable).with_name("recorder")
    return subprocess.run([recorder_exe, *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_sigkill_keeps_what_was_flushed_and_the_run_becomes_died(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    env = {**os.environ, "RECORDER_HEARTBEAT": "0.5"}  # stale after 6 x 0.5 s
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "flushed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    listed = json.loads(cli("ls", "--json", cwd=tmp_path).stdout)
    assert [run["status"] for run in listed] == ["RUNNING"]  # its heartbeat is still fresh
    time.sleep(3.5)
    listed = json.loads(cli("ls", "--json", cwd=tmp_path).stdout)
    assert [run["status"] for run in listed] == ["DIED"]  # written by this `ls`
    store = open_store(tmp_path / ".recorder")
    doc = store.db.runs.find_one({"_id": listed[0]["_id"]})
    assert doc["status"] == "DIED" and doc["stop_time"] == doc["heartbeat"]
    loss = store.metrics(doc["_id"])["loss"]
    assert loss["steps"] == list(range(1000)) and loss["values"][-1] == 999.0


def test_find_runs_and_a_new_run_mark_stale_runs_died(tmp_path):
    store = str(tmp_path / "store")

    @recorder.experiment(store=store)
    def train():
        pass

    train()
    db = recorder.connect(store)
    stale = {"uid": "x", "status": "RUNNING", "heartbeat": db.runs.find_one()["heartbeat"]
             .replace(year=2020), "meta": {"heartbeat_interval": 5.0}}
    db.runs.insert_one({"_id": 50, **stale})
    assert [r["status"] for r in recorder.find_runs({"_id": 50}, store=store)] == ["DIED"]
    db.runs.insert_one({"_id": 51, **stale, "uid": "y"})
    train()  # a run start sees it too
    assert db.runs.find_one({"_id": 51})["status"] == "DIED"
