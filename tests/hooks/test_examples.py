"""The examples, run as a user would: `python example.py` in an empty directory, the
embedded store in ./.recorder there; then the events they stored are checked."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from recorder.store import open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, tmp_path: Path, *args: str) -> tuple[str, dict, list[dict]]:
    shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_STORE"}
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path.parent)
    done = subprocess.run([sys.executable, name, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    store = open_store(str(tmp_path / ".recorder"))
    run = store.get_run("last")
    return done.stdout, run, list(store.db["events"].find({"run_id": run["_id"]}))


def test_vanishing_gradients_example(tmp_path):
    out, run, events = run_example("vanishing_gradients.py", tmp_path)
    assert run["status"] == "COMPLETED"
    vanishing = sorted((e for e in events if e["kind"] == "vanishing"),
                       key=lambda e: e["module"])
    assert [e["module"] for e in vanishing] == ["0", "1", "2", "3"]
    assert all(e["start_step"] == 0 and e["end_step"] is None for e in vanishing)
    first = next(e for e in vanishing if e["module"] == "0")
    assert 15 < 1 / first["stats"]["ratio"] < 40  # about 20x below the output layer
    assert "    0  " in out and "1/2" in out and "vanishing  module  0" in out


def test_nan_origin_example(tmp_path):
    out, _, events = run_example("nan_origin.py", tmp_path)
    [origin] = [e for e in events if e["kind"] == "nonfinite"]
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", "forward", 5)
    assert origin["stats"]["nan"] == 16 and origin["stats"]["shape"] == [32, 16]
    assert {e["module"] for e in events if e["kind"] == "nonfinite_summary"} == {
        "0", "1", "2", "Sequential"}
    assert "first non-finite value: module 0 (Linear), forward pass, step 5" in out
