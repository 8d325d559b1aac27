"""What the replay's subprocess gets: command line, environment variables, secrets."""

import os
import sys
from pathlib import Path

import pytest

from recorder.errors import ReplayError
from recorder.handover import ENV_VAR
from recorder.replay.settings import (
    command,
    env_name,
    environment,
    gather_secrets,
    import_roots,
    secret_names,
)
from recorder.replay.tree import Tree


def tree_at(tmp_path: Path, files=("train.py",), cwd: str = "") -> Tree:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    return Tree(tmp_path, tmp_path / cwd, "sources")


def run_doc(**entry) -> dict:
    return {"_id": 9, "config": {}, "experiment": {"base_dir": "/orig/proj", "sources": []},
            "entrypoint": {"kind": "file", "file": "train.py", "argv": ["train.py"], **entry}}


def test_a_file_entry_point_runs_from_the_recorded_working_directory(tmp_path):
    tree = tree_at(tmp_path, ["src/train.py"], cwd="runs")
    doc = run_doc(file="src/train.py", argv=["../src/train.py", "lr=0.5", "--tag", "x"])
    assert command(doc, tree, {}) == [sys.executable, "../src/train.py", "lr=0.5", "--tag", "x"]


def test_a_module_entry_point_and_what_cannot_be_started(tmp_path):
    tree = tree_at(tmp_path)
    doc = run_doc(kind="module", module="pkg.train", argv=["/abs/pkg/train.py", "steps=2"])
    assert command(doc, tree, {}) == [sys.executable, "-m", "pkg.train", "steps=2"]
    with pytest.raises(ReplayError, match="refused the recorded module"):
        command(run_doc(kind="module", module="os; rm -rf"), tree, {})
    with pytest.raises(ReplayError, match="started from a notebook"):
        command(run_doc(kind="notebook"), tree, {})
    with pytest.raises(ReplayError, match="started from an interactive session"):
        command(run_doc(kind="interactive"), tree, {})
    with pytest.raises(ReplayError, match="refused the stored entry point '/etc/x.py'"):
        command(run_doc(file="/etc/x.py"), tree, {})
    with pytest.raises(ReplayError, match="'gone.py' is not in the rebuilt tree"):
        command(run_doc(file="gone.py"), tree, {})


def test_redacted_values_are_named_asked_for_and_put_back(tmp_path):
    doc = run_doc(argv=["train.py", "api_key=<redacted>", "--hf-token", "<redacted>",
                        "--password=<redacted>", "--verbose"])
    doc["config"] = {"api_key": "<redacted>", "db": {"secret": "<redacted>", "port": 1}}
    assert secret_names(doc) == ["api_key", "db.secret", "hf-token", "password"]
    assert env_name("hf-token") == env_name("--hf-token") == "RECORDER_SET_HF_TOKEN"
    assert env_name("db.secret") == "RECORDER_SET_DB_SECRET"
    values = gather_secrets(doc, {"api_key": "k1", "--hf-token": "t1"},
                            environ={"RECORDER_SET_DB_SECRET": "s1", "RECORDER_SET_PASSWORD": "p"})
    assert values == {"api_key": "k1", "db.secret": "s1", "hf-token": "t1", "password": "p"}
    assert command(doc, tree_at(tmp_path), values)[1:] == [
        "train.py", "api_key=<redacted>", "--hf-token", "t1", "--password=p", "--verbose"]
    with pytest.raises(ReplayError, match="'password' was redacted .* --set password=VALUE .* "
                                          "RECORDER_SET_PASSWORD"):
        gather_secrets(doc, {"api_key": "k", "db.secret": "s", "hf-token": "t"}, environ={})


def test_the_recorded_environment_is_applied_and_unrecorded_families_removed(tmp_path):
    tree = tree_at(tmp_path, ["train.py", "src/pkg/__init__.py", "src/pkg/mod.py"])
    doc = run_doc()
    doc["experiment"]["sources"] = [["train.py", "x"], ["src/pkg/mod.py", "y"],
                                    ["src/pkg/__init__.py", "z"]]
    doc["host"] = {"ENV": {"PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "1",
                           "NVIDIA_API_KEY": "<redacted>"}}
    here = {"PATH": "/bin", "OMP_NUM_THREADS": "7", "NVIDIA_API_KEY": "real", "GIT_DIR": "/x",
            "PYTHONPATH": os.pathsep.join(["/orig/proj/lib", "/elsewhere"])}
    env, applied, removed = environment(doc, tree, tmp_path / "h.json", base=here)
    assert applied == {"PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": "1"}
    assert removed == ["OMP_NUM_THREADS"]
    assert env["PYTHONHASHSEED"] == "0" and "OMP_NUM_THREADS" not in env
    assert env["NVIDIA_API_KEY"] == "real" and env["PATH"] == "/bin" and "GIT_DIR" not in env
    assert env[ENV_VAR] == str(tmp_path / "h.json")
    assert env["PYTHONPATH"].split(os.pathsep) == [
        str(tmp_path), str(tmp_path / "src"), str(tmp_path / "lib"), "/elsewhere"]
    assert env["GIT_CEILING_DIRECTORIES"] == str(tmp_path.parent)
    assert import_roots(doc, tree) == [str(tmp_path), str(tmp_path / "src")]
