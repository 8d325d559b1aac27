"""`recorder replay`, `sources`, `compare` and `env` on real scripts recorded in temporary git
repositories, run as a user would: the CLI in a subprocess, from another directory."""

import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import recorder
from recorder.store import open_store

TRAIN = '''
import argparse
import json
import random
import sys
import time

import numpy as np

import helpers
import recorder


@recorder.experiment
def main(lr: float = 0.1, steps: int = 6, noise_from: int = -1, data_path: str = ""):
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="none")
    args = parser.parse_args()
    scale = json.load(open("settings.json"))["scale"]  # an untracked file, read from the cwd
    if data_path:
        open(data_path).close()
    for step in range(steps):
        value = helpers.loss(step, lr) * scale + random.random() + float(np.random.rand())
        if 0 <= noise_from <= step:  # clock-dependent noise: never the same twice
            value += (time.time_ns() % 1_000_000_007) * 1e-15
        recorder.log("loss", value, step=step)
        recorder.log("acc", 1 - value / 10, step=step)
    print("argparse saw", sys.argv[1:], "tag", args.tag)
    return {"final": value}


if __name__ == "__main__":
    main()
'''
HELPERS = "def loss(step, lr):\n    return lr / (step + 1)\n"


@pytest.fixture
def git_env(isolated_git, tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "tmp").mkdir()  # the replays' temporary trees: checked, and cleaned up
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))


def project(root: Path, files: dict[str, str], uncommitted: dict[str, str] = ()) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline")
    write(root, dict(uncommitted))
    return root


def python(cwd, *args, env=None, check=True):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def cli(cwd, *args, env=None):
    """The `recorder` command, as a user runs it."""
    return python(cwd, "-c", "from recorder.cli import main; main()", *args, env=env, check=False)


def one_line_error(done, *fragments) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("recorder: error: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def rows(output: str) -> dict[str, str]:
    """The verdict table: {metric: "POINTS   COMPARISON"}."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"^  (\S+)\s+(\d+(?: / \d+)?)   (.+?)\s*$", line)
        if match:
            found[match.group(1)] = f"{match.group(2)}   {match.group(3)}"
    return found


@pytest.fixture
def dirty(tmp_path, git_env) -> Path:
    """TRAIN in a repository with an uncommitted edit and an untracked file it reads."""
    return project(tmp_path / "proj", {"train.py": TRAIN, "helpers.py": HELPERS,
                                       ".gitignore": ".recorder/\n"},
                   {"helpers.py": HELPERS.replace("lr /", "2 * lr /"),
                    "settings.json": '{"scale": 3}'})


def move_on(repo: Path) -> None:
    """New commits, edited and deleted files: nothing of the run is left in the work tree."""
    write(repo, {"helpers.py": "def loss(step, lr):\n    return 0.0\n",
                 "train.py": "raise SystemExit('this is not the code that ran')\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "moved on")
    (repo / "settings.json").unlink(missing_ok=True)


def test_a_dirty_run_replays_identically_after_the_repository_moved_on(dirty, tmp_path):
    store = dirty / ".recorder"
    python(dirty, "train.py", "lr=0.5", "--tag", "x")
    move_on(dirty)

    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "tree from git commit" in out and "+ the stored diff + 1 untracked file" in out
    assert "environment: as recorded" in out
    assert "running: python train.py lr=0.5 --tag x" in out
    assert "argparse saw ['--tag', 'x'] tag x" in out  # the script's output, relayed
    assert rows(out) == {"acc": "6   identical", "loss": "6   identical"}
    assert "REPRODUCED: same status, every metric identical" in out
    assert list((tmp_path / "tmp").iterdir()) == []  # neither the tree nor the hand-over is left

    db = open_store(store)
    original, replayed = db.get_run(1), db.get_run(2)
    assert replayed["replay_of"] == 1 and replayed["replay"]["verdict"] == "reproduced"
    assert replayed["replay"]["of"] == 1 and replayed["replay"]["config_same"] is True
    assert [m["name"] for m in replayed["replay"]["metrics"]] == ["acc", "loss"]
    assert replayed["config"] == original["config"] and replayed["seed"] == original["seed"]
    assert replayed["result"] == original["result"]
    assert replayed["git"]["commit"] == original["git"]["commit"]
    assert replayed["git"]["diff"] == original["git"]["diff"]
    assert replayed["entrypoint"]["argv"] == original["entrypoint"]["argv"]

    result = recorder.replay(1, store=store, output=io.StringIO())  # the same from Python
    assert (result.verdict, result.exit_code, result.replay_id) == ("reproduced", 0, 3)
    assert result.reproduced and all(m.identical for m in result.metrics)
    assert result.kept is None and not result.plan.tree.root.exists()  # a temporary tree


def test_clock_noise_from_step_3_diverges_naming_the_metric_and_step(dirty, tmp_path):
    store = dirty / ".recorder"
    python(dirty, "train.py", "noise_from=3")
    done = cli(tmp_path / "elsewhere", "replay", "last", "--store", store)
    assert done.returncode == 1, done.stdout + done.stderr
    table = rows(done.stdout)
    assert table["loss"].startswith("6   step 3: ") and " vs " in table["loss"]
    assert table["acc"].startswith("6   step 3: ")
    assert "DIVERGED: metric 'acc' differs: step 3: " in done.stdout
    assert "recorder: error" not in done.stderr  # diverging is an answer, not an error
    stored = open_store(store).get_run(2)["replay"]
    assert stored["verdict"] == "diverged"
    loss = next(m for m in stored["metrics"] if m["name"] == "loss")
    assert loss["step"] == 3 and loss["why"] == "value" and loss["original"] != loss["replayed"]

    loose = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--tolerance", "1e-3",
                "--json")
    assert loose.returncode == 0, loose.stderr
    answer = json.loads(loose.stdout)  # the script's output went to stderr
    assert answer["verdict"] == "reproduced" and answer["replay_id"] == 3
    ignored = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--ignore", "acc",
                  "--ignore", "los?")
    assert ignored.returncode == 0 and "(not judged)" in rows(ignored.stdout)["loss"]


PLAIN = """
import os
import random

import helpers
import recorder


@recorder.experiment
def main(steps: int = 3):
    for i in range(steps):
        recorder.log("loss", helpers.loss(i, 0.1) + random.random(), step=i)
    print("started in", os.path.basename(os.getcwd()))


if __name__ == "__main__":
    main()
"""


def test_a_run_outside_git_started_from_the_parent_directory(tmp_path, git_env):
    write(tmp_path, {"plain/train.py": PLAIN, "plain/helpers.py": HELPERS})
    store = tmp_path / "store"
    python(tmp_path, "plain/train.py", "steps=4", env={"RECORDER_STORE": str(store)})
    doc = open_store(store).get_run(1)
    assert doc["git"] is None and doc["entrypoint"]["cwd_relative"] == ".."

    out = tmp_path / "rebuilt"
    done = cli(tmp_path / "elsewhere", "sources", "1", "--store", store, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "from 2 stored files (no git commit reachable here)" in done.stdout
    assert (out / "helpers.py").read_text() == HELPERS
    assert sorted(p.name for p in out.iterdir()) == ["helpers.py", "train.py"]

    for path in (tmp_path / "plain").iterdir():
        path.unlink()  # nothing of the project is left but the store
    work = tmp_path / "work"
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--workdir", work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running: python plain/train.py steps=4  (in ..)" in done.stdout
    assert "started in work" in done.stdout and rows(done.stdout)["loss"] == "4   identical"
    assert (work / "plain" / "train.py").is_file()  # --workdir: kept


def test_a_module_entry_point_and_a_failure_reproduced(tmp_path, git_env):
    repo = project(tmp_path / "proj", {"pkg/__init__.py": "", "pkg/train.py": """
        import random
        import recorder

        @recorder.experiment
        def main(steps: int = 2, fail: bool = False):
            for i in range(steps):
                recorder.log("x", random.random(), step=i)
            if fail:
                raise ValueError(f"diverged at {steps}")

        if __name__ == "__main__":
            main()
        """})
    store = tmp_path / "store"
    python(repo, "-m", "pkg.train", "steps=4", env={"RECORDER_STORE": str(store)})
    python(repo, "-m", "pkg.train", "fail=true", env={"RECORDER_STORE": str(store)}, check=False)
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)
    assert done.returncode == 0 and "running: python -m pkg.train steps=4" in done.stdout
    done = cli(tmp_path / "elsewhere", "replay", "2", "--store", store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status      FAILED (ValueError: diverged at 2)" in done.stdout


def test_a_script_failing_where_the_original_completed_could_not_replay(dirty, tmp_path):
    marker = tmp_path / "marker.txt"
    marker.write_text("present at record time")
    python(dirty, "train.py", f"data_path={marker}")
    marker.unlink()
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", dirty / ".recorder")
    one_line_error(done, "the replay failed where the original did not: FileNotFoundError")
    assert open_store(dirty / ".recorder").get_run(2)["replay"]["verdict"] == "could not replay"


DATA_TRAIN = '''
import recorder

@recorder.experiment
def main():
    recorder.data("data/train.csv")
    rows = open("data/train.csv").read().split()
    recorder.log("rows", len(rows))

main()
'''


def test_strict_refuses_on_an_environment_or_data_difference(tmp_path, git_env):
    repo = project(tmp_path / "proj", {"train.py": DATA_TRAIN, ".gitignore": "data/\n"})
    write(repo, {"data/train.csv": "a\nb\nc\n"})  # ignored by git: never stored with the run
    store = tmp_path / "store"
    python(repo, "train.py", env={"RECORDER_STORE": str(store)})
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "data data/train.csv: linked into the tree from the original location" in done.stdout

    db = open_store(store)
    numpy_version = db.get_run(1)["environment"]["packages"]["numpy"]
    db.db["runs"].update_one({"_id": 1}, {"$set": {"environment.packages.numpy": "0.0.1"}})
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--strict")
    one_line_error(done, "--strict: 1 difference from the recording: package numpy 0.0.1 "
                         f"(recorded) vs {numpy_version} (here); nothing was run")
    assert re.search(rf"package numpy\s+0\.0\.1\s+{numpy_version}", done.stdout)  # table first
    assert len(db.find_runs()) == 2
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)  # not strict: it runs
    assert done.returncode == 0 and "environment: 1 difference" in done.stdout
    db.db["runs"].update_one({"_id": 1}, {"$set": {"environment.packages.numpy": numpy_version}})

    write(repo, {"data/train.csv": "a\nb\n"})
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--strict")
    one_line_error(done, "--strict: 1 difference from the recording: data data/train.csv changed")
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)
    assert done.returncode == 1 and "data: 1 difference" in done.stdout
    assert rows(done.stdout)["rows"] == "1   step 0: 3 vs 2"
    assert open_store(store).get_run("last")["replay"]["data_differences"][0]["path"] == \
        "data/train.csv"


SECRET_TRAIN = '''
import argparse
import recorder

@recorder.experiment
def main(api_key: str = "", lr: float = 0.1):
    parser = argparse.ArgumentParser()
    parser.add_argument("--hf-token")
    token = parser.parse_args().hf_token
    print("key", api_key, "token", token)
    recorder.log("checksum", sum(map(ord, api_key + token)))

main()
'''
API_KEY, HF_TOKEN = "sk-live-0123456789abcdef", "hf_ABCDEFGHIJKLMNOP"


def test_redacted_values_must_be_given_and_stay_out_of_the_store(tmp_path, git_env):
    write(tmp_path, {"proj/train.py": SECRET_TRAIN})
    store = tmp_path / "store"
    python(tmp_path / "proj", "train.py", f"api_key={API_KEY}", "--hf-token", HF_TOKEN,
           env={"RECORDER_STORE": str(store)})
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)
    one_line_error(done, "'api_key' was redacted as a secret when run 1 was recorded: give it "
                         "with --set api_key=VALUE or the environment variable "
                         "RECORDER_SET_API_KEY")
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--set", "lr=1")
    one_line_error(done, "--set lr: only values redacted at record time can be set "
                         "(redacted in run 1: api_key, hf-token)")
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store,
               "--set", f"api_key={API_KEY}", env={"RECORDER_SET_HF_TOKEN": HF_TOKEN})
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout)["checksum"] == "1   identical"
    assert "running: python train.py 'api_key=<redacted>' --hf-token '<redacted>'" in done.stdout
    replayed = open_store(store).get_run(2)
    assert replayed["config"]["api_key"] == "<redacted>"
    assert "key <redacted> token <redacted>" in replayed["captured_out"]
    for path in store.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes()
            assert HF_TOKEN.encode() not in path.read_bytes()


def test_what_cannot_be_replayed_says_why_in_one_line(tmp_path, git_env):
    store = tmp_path / "store"
    notebook = "import builtins\nbuiltins.__IPYTHON__ = True\nimport recorder\n" \
               "recorder.experiment(lambda: None)()\n"
    python(tmp_path, "-c", notebook, env={"RECORDER_STORE": str(store)})
    elsewhere = tmp_path / "elsewhere"
    one_line_error(cli(elsewhere, "replay", "1", "--store", store), "run 1 was started from a "
                   "notebook: it is recorded but cannot be replayed")
    one_line_error(cli(elsewhere, "replay", "99", "--store", store), "no run 99 in")
    one_line_error(cli(elsewhere, "replay", "1", "--store", tmp_path / "nope"), "no store at")

    db = open_store(store)
    good, evil = b"print('ok')\n", b"print('evil')\n"
    db.apply({"op": "files", "files": {hashlib.sha256(d).hexdigest(): d for d in (good, evil)}})
    forged = {"uid": uuid.uuid4().hex, "status": "COMPLETED", "config": {}, "seed": 1, "git": None,
              "experiment": {"base_dir": str(tmp_path / "gone"), "sources": [
                  ["train.py", hashlib.sha256(good).hexdigest()],
                  ["../../evil.py", hashlib.sha256(evil).hexdigest()]]},
              "entrypoint": {"kind": "file", "file": "train.py", "cwd_relative": ".",
                             "argv": ["train.py"], "function": "main"}}
    forged_id = db.apply({"op": "insert_run", "doc": forged})
    work = tmp_path / "w" / "work"
    one_line_error(cli(elsewhere, "replay", str(forged_id), "--store", store, "--workdir", work),
                   "refused the stored source file '../../evil.py': it leaves the tree")
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "w" / "evil.py").exists()
    missing = dict(forged, uid=uuid.uuid4().hex, experiment={
        "base_dir": "/gone", "sources": [["train.py", "0" * 64]]})
    missing_id = db.apply({"op": "insert_run", "doc": missing})
    one_line_error(cli(elsewhere, "replay", str(missing_id), "--store", store),
                   "the stored source file 'train.py' (sha256 000000000000) is missing")


def test_dry_run_and_keep(dirty, tmp_path):
    store = dirty / ".recorder"
    python(dirty, "train.py")
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store, "--dry-run", "--keep")
    assert done.returncode == 0, done.stderr
    assert "running: python train.py" in done.stdout and "dry run: nothing was run" in done.stdout
    kept = Path(done.stdout.split("the rebuilt tree is kept in ")[1].split()[0])
    assert (kept / "settings.json").read_text() == '{"scale": 3}'
    assert kept.parent == tmp_path / "tmp"
    assert len(open_store(store).find_runs()) == 1


def test_compare_and_env(dirty, tmp_path):
    store = dirty / ".recorder"
    python(dirty, "train.py", "lr=0.5")
    write(dirty, {"helpers.py": "def loss(step, lr):\n    return lr / (step + 2)\n"})
    python(dirty, "train.py", "lr=0.25")
    done = cli(tmp_path / "elsewhere", "compare", "1", "2", "--store", store)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "lr: 0.5 vs 0.25" in out
    assert "--- a/helpers.py" in out and "-    return 2 * lr / (step + 1)" in out
    assert "+    return lr / (step + 2)" in out
    assert rows(out)["loss"].startswith("6   step 0: ")
    answer = json.loads(cli(tmp_path / "elsewhere", "compare", "1", "2", "--store", store,
                            "--json").stdout)
    assert answer["config"] == [{"key": "lr", "a": 0.5, "b": 0.25}]
    assert answer["environment"] == [] and answer["status"]["same"] is True

    done = cli(tmp_path / "elsewhere", "env", "1", "--store", store)
    lines = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    pins = {Requirement(line).name: str(Requirement(line).specifier) for line in lines
            if not line.startswith("--")}
    import numpy

    assert pins["numpy"] == f"=={numpy.__version__}" and "pymongo" in pins
    assert json.loads(cli(tmp_path / "elsewhere", "env", "1", "--store", store,
                          "--json").stdout)["packages"]["numpy"] == numpy.__version__


def test_replay_on_a_mongodb_wire_server(tmp_path, git_env, nx_server):
    """nx-27017 stores no GridFS files (see tests/store/test_contract.py), so the tree comes
    from git alone: a reachable commit plus an inline diff, no untracked files."""
    repo = project(tmp_path / "proj", {"train.py": TRAIN.replace(
        'json.load(open("settings.json"))["scale"]', "3"), "helpers.py": HELPERS},
        {"helpers.py": HELPERS.replace("lr /", "2 * lr /")})
    url = f"{nx_server}/t{uuid.uuid4().hex[:12]}"
    python(repo, "train.py", "lr=0.5", env={"RECORDER_STORE": url})
    move_on(repo)
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {"acc": "6   identical", "loss": "6   identical"}
    replayed = open_store(url).get_run(2)
    assert replayed["replay_of"] == 1 and replayed["replay"]["verdict"] == "reproduced"


ENV_TRAIN = """
import os
import recorder

@recorder.experiment
def main():
    recorder.log("hash", hash("replay") % 1_000_000)  # PYTHONHASHSEED decides it
    recorder.log("omp_set", "OMP_NUM_THREADS" in os.environ)
    recorder.log("key_is_real", os.environ.get("NVIDIA_API_KEY") == "nv-real-key-123")

main()
"""


def test_the_recorded_environment_variables_are_applied(tmp_path, git_env, monkeypatch):
    write(tmp_path, {"proj/train.py": ENV_TRAIN})
    store = tmp_path / "store"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    python(tmp_path / "proj", "train.py", env={"RECORDER_STORE": str(store),
                                               "PYTHONHASHSEED": "123",
                                               "NVIDIA_API_KEY": "nv-real-key-123"})
    recorded_env = open_store(store).get_run(1)["host"]["ENV"]
    assert recorded_env["NVIDIA_API_KEY"] == "<redacted>"
    assert recorded_env["PYTHONHASHSEED"] == "123" and "OMP_NUM_THREADS" not in recorded_env
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store,
               env={"OMP_NUM_THREADS": "3", "NVIDIA_API_KEY": "nv-real-key-123"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"environment variables: set .*PYTHONHASHSEED=123.*; removed "
                     r"OMP_NUM_THREADS \(not set when recorded\)", done.stdout)
    assert "NVIDIA_API_KEY" not in done.stdout  # redacted: left as it is here
    assert set(rows(done.stdout).values()) == {"1   identical"}


TORCH_TRAIN = '''
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import recorder


@recorder.experiment
def main(epochs: int = 3, lr: float = 0.05, hidden: int = 16):
    x = torch.randn(96, 8)
    y = (x.sum(1, keepdim=True) > 0).float() + 0.1 * torch.from_numpy(
        np.random.rand(96, 1).astype("float32"))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, num_workers=0)
    model = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * (1 + random.random()))
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            loss = nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            val = nn.functional.mse_loss(model(x), y).item()
        grads = sum(p.grad.abs().sum().item() for p in model.parameters())
        recorder.log({"train_loss": total / len(loader), "val_loss": val, "grad_sum": grads},
                     step=epoch)


if __name__ == "__main__":
    main()
'''


def test_a_seeded_torch_run_replays_bit_for_bit_on_cpu(tmp_path, git_env):
    """python's random, numpy and torch (dropout, a shuffling DataLoader) seeded with a
    generated seed; the repository edited and committed since; every value identical."""
    if importlib.util.find_spec("torch") is None:  # not imported here: it takes seconds
        pytest.skip("torch is not installed")
    repo = project(tmp_path / "proj", {"train.py": TORCH_TRAIN})
    store = tmp_path / "store"
    python(repo, "train.py", "epochs=4", env={"RECORDER_STORE": str(store)})
    write(repo, {"train.py": TORCH_TRAIN.replace("hidden: int = 16", "hidden: int = 64")
                 .replace("nn.Dropout(0.3)", "nn.Dropout(0.5)")})
    git(repo, "commit", "-qam", "a bigger model")

    done = cli(tmp_path / "elsewhere", "replay", "1", "--store", store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {"grad_sum": "4   identical", "train_loss": "4   identical",
                                 "val_loss": "4   identical"}
    db = open_store(store)
    original, replayed = db.get_run(1), db.get_run(2)
    assert original["seeded"] == replayed["seeded"] == ["random", "numpy", "torch"]
    assert replayed["config"] == {"epochs": 4, "lr": 0.05, "hidden": 16}
    assert replayed["determinism"]["end"] == original["determinism"]["end"]
    assert [m["identical"] for m in replayed["replay"]["metrics"]] == [True, True, True]
