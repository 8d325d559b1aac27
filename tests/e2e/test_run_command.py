"""`recorder run script.py args…` on real scripts that were never decorated, in temporary git
repositories, run as a user runs them: the command in a subprocess, compared with
`python script.py args…`, then `recorder replay` of what it recorded."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recorder.config import config_hash
from recorder.store import open_store

API_KEY = "sk-live-run-0123456789"

# A script in the style of pytorch/examples word_language_model/main.py: its own format
# strings, argparse, a local module, and no seeding of its own.
TRAIN = '''
import argparse
import enum
import math
import os
import random
import sys
import time
from pathlib import Path

import helpers


class Optim(enum.Enum):
    SGD = "sgd"
    ADAM = "adam"


parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=20.0)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--save", type=Path, default=Path("model.pt"))
parser.add_argument("--optim", type=Optim, default=Optim.SGD)
parser.add_argument("--api-key", default="")
parser.add_argument("--name", default="none")
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
args = parser.parse_args()
print("argv", sys.argv, "name", __name__, "file", __file__)
print("cwd", os.getcwd(), "path0", sys.path[0])
print("to stderr", file=sys.stderr)
for epoch in range(1, args.epochs + 1):
    epoch_start_time = time.time()
    for batch in (50, 100):
        cur_loss = helpers.loss(epoch, batch) + random.random()
        elapsed = time.time() - epoch_start_time
        print('| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | '
              'loss {:5.2f} | ppl {:8.2f}'.format(
            epoch, batch, 389, args.lr, elapsed * 1000 / 200, cur_loss, math.exp(cur_loss)))
    val_loss = helpers.loss(epoch, 0)
    print('-' * 89)
    print('| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | '
          'valid ppl {:8.2f}'.format(epoch, (time.time() - epoch_start_time),
                                     val_loss, math.exp(val_loss)))
    print('-' * 89)
    print(f"samples/s: {1e9 / (time.perf_counter_ns() % 1_000_003 + 1):.6f}")  # never the same
sys.exit(args.exit)
'''
HELPERS = "def loss(epoch, batch):\n    return 6.0 / epoch + batch / 1000\n"


@pytest.fixture
def git_env(isolated_git, tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()  # the replays' temporary trees
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
    write(root, {".gitignore": ".recorder/\n", **files})
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline")
    write(root, dict(uncommitted))
    return root


def python(cwd, *args, check=False, timeout=120, env=None):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=check,
                          env={**os.environ, **(env or {})})


def recorder(cwd, *args, timeout=120):
    """The `recorder` command, as a user runs it (`python -m recorder` is the same app)."""
    return python(cwd, "-m", "recorder", *args, timeout=timeout, env={"COLUMNS": "200"})


def one_line_error(done, *fragments) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("recorder: error: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def last_run(repo):
    store = open_store(repo / ".recorder")
    doc = store.get_run("last")
    return store, doc, store.metrics(doc["_id"])


@pytest.fixture
def repo(tmp_path, git_env) -> Path:
    """TRAIN committed, with an uncommitted edit of its local module and an untracked file."""
    return project(tmp_path / "proj", {"train.py": TRAIN, "helpers.py": HELPERS},
                   {"helpers.py": HELPERS.replace("6.0", "5.0"), "notes.txt": "untracked\n"})


def test_runs_the_script_as_python_would_and_records_it(repo):
    args = ["--lr", "0.5", "--epochs", "2", "--optim", "adam", "--api-key", API_KEY,
            "--name", "x"]
    plain = python(repo, "train.py", *args)
    done = recorder(repo, "run", "train.py", *args)
    assert done.returncode == plain.returncode == 0, done.stderr

    # what the script saw: argv (--name went to it, not to recorder), __main__, cwd, path
    first = done.stdout.splitlines()[:2]
    assert first == plain.stdout.splitlines()[:2]
    assert first[0] == f"argv {['train.py', *args]!r} name __main__ file {repo / 'train.py'}"
    assert first[1] == f"cwd {repo} path0 {repo}"
    assert done.stderr == plain.stderr == "to stderr\n"
    assert done.stdout.count("\n") == plain.stdout.count("\n")

    store, doc, metrics = last_run(repo)
    assert doc["status"] == "COMPLETED" and doc["result"] == 0
    assert doc["experiment"]["name"] == "train"
    # config: argparse's values, typed, defaults included, the secret redacted
    assert doc["config"] == {"lr": 0.5, "epochs": 2, "save": "model.pt", "optim": "adam",
                             "api_key": "<redacted>", "name": "x", "exit": 0,
                             "data": str(repo / "data")}
    assert type(doc["config"]["epochs"]) is int
    assert doc["config_hash"] == config_hash(doc["config"])
    entry = doc["entrypoint"]
    assert entry["kind"] == "file" and entry["file"] == "train.py"
    assert entry["launcher"] == "recorder run"
    assert entry["argv"] == ["train.py", *args[:7], "<redacted>", "--name", "x"]
    # everything else as for a decorated run
    assert doc["git"]["dirty"] and "5.0" in doc["git"]["diff"]
    assert "notes.txt" in dict(doc["git"]["untracked"])
    sources = dict(doc["experiment"]["sources"])
    assert set(sources) == {"train.py", "helpers.py"}  # the module it imported, too
    assert store.get_file(sources["helpers.py"]) == (repo / "helpers.py").read_bytes()
    assert "numpy" in doc["environment"]["packages"] or doc["environment"]["packages"]
    assert isinstance(doc["seed"], int) and doc["seeded"][0] == "random"
    assert doc["heartbeat"] and doc["stop_time"]
    assert "| end of epoch   2 |" in doc["captured_out"] and API_KEY not in doc["captured_out"]
    # metrics from the printed lines; a metric's step is how often it appeared before
    assert set(metrics) == {"epoch", "lr", "ms/batch", "loss", "ppl", "time", "valid loss",
                            "valid ppl", "samples/s"}
    assert metrics["epoch"]["steps"] == [0, 1, 2, 3]
    assert metrics["epoch"]["values"] == [1, 1, 2, 2]
    assert metrics["valid loss"]["values"] == [5.0, 2.5]
    assert len(metrics["time"]["values"]) == 2
    for path in (repo / ".recorder").rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_exit_status_and_an_early_sys_exit(repo):
    done = recorder(repo, "run", "train.py", "--epochs", "1", "--exit", "3")
    assert done.returncode == 3
    _, doc, _ = last_run(repo)
    assert doc["status"] == "FAILED" and doc["result"] == 3
    assert doc["fail_trace"][-1].strip() == "SystemExit: 3"

    write(repo, {"early.py": """
        import sys
        print("loss: 1.5")
        sys.exit(0)
        print("never")
        """})
    done = recorder(repo, "run", "early.py")
    assert done.returncode == 0 and "never" not in done.stdout
    _, doc, metrics = last_run(repo)
    assert doc["status"] == "COMPLETED" and doc["result"] == 0 and "fail_trace" not in doc
    assert metrics["loss"]["values"] == [1.5]

    write(repo, {"message.py": "import sys\nsys.exit('bad input: no data')\n"})
    plain = python(repo, "message.py")
    done = recorder(repo, "run", "message.py")
    assert done.returncode == plain.returncode == 1
    assert done.stderr == plain.stderr == "bad input: no data\n"


def test_a_failing_script(repo):
    write(repo, {"crash.py": """
        import helpers

        def step(i):
            if i == 2:
                raise ValueError(f"bad batch {i}")
            print(f"step: {i}")

        for i in range(5):
            step(i)
        """})
    plain = python(repo, "crash.py")
    done = recorder(repo, "run", "crash.py")
    assert done.returncode == plain.returncode == 1
    # the traceback Python prints: the script's frames only, not the recorder's or runpy's
    assert done.stderr == plain.stderr
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert "runpy" not in done.stderr and "launch.py" not in done.stderr
    _, doc, metrics = last_run(repo)
    assert doc["status"] == "FAILED" and doc["result"] == 1
    assert doc["fail_trace"][-1].strip() == "ValueError: bad batch 2"
    assert "crash.py" in "".join(doc["fail_trace"])
    assert "Traceback" in doc["captured_out"]
    assert metrics["step"]["values"] == [0, 1]
    assert dict(doc["experiment"]["sources"]).keys() == {"crash.py", "helpers.py"}


def test_a_missing_script_is_one_line(repo):
    done = recorder(repo, "run", "nope.py", "--lr", "1")
    one_line_error(done, "no script 'nope.py'")
    one_line_error(recorder(repo, "run", "-m", "nopkg.train"), "no module named 'nopkg'")
    one_line_error(recorder(repo, "run", "--metric-pattern", "(", "train.py"),
                   "--metric-pattern '('")
    assert not (repo / ".recorder").exists()


def test_ctrl_c_marks_the_run_interrupted(interruptible, repo):
    write(repo, {"slow.py": """
        import time
        print("loss: 0.25", flush=True)
        print("ready", flush=True)
        time.sleep(60)
        """})
    with interruptible():
        process = subprocess.Popen([sys.executable, "-m", "recorder", "run", "slow.py"], cwd=repo,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "loss: 0.25"
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGINT  # as `python slow.py` ends on Ctrl-C
    assert err.rstrip().endswith("KeyboardInterrupt") and "launch.py" not in err
    _, doc, metrics = last_run(repo)
    assert doc["status"] == "INTERRUPTED" and doc["result"] == 130
    assert metrics["loss"]["values"] == [0.25]


def test_a_module_and_a_script_that_is_decorated(repo):
    write(repo, {"pkg/__init__.py": "", "pkg/train.py": """
        import argparse
        import sys

        import recorder

        @recorder.experiment
        def main(scale: float = 2.0):
            parser = argparse.ArgumentParser()
            parser.add_argument("--steps", type=int, default=2)
            args = parser.parse_args()
            print("argv0", sys.argv[0], "run", recorder.current_run().id)
            for i in range(args.steps):
                recorder.log("logged", i * scale)
                print(f"printed={i}")
            recorder.artifact(__file__)

        if __name__ == "__main__":
            main()
        """})
    done = recorder(repo, "run", "-m", "pkg.train", "--steps", "3", "scale=4")
    assert done.returncode == 0, done.stderr
    store = open_store(repo / ".recorder")
    assert len(store.find_runs({})) == 1  # one run, not two
    _, doc, metrics = last_run(repo)
    assert f"argv0 {repo / 'pkg' / 'train.py'} run {doc['_id']}" in done.stdout
    assert doc["entrypoint"]["kind"] == "module" and doc["entrypoint"]["module"] == "pkg.train"
    assert doc["entrypoint"]["file"] == "pkg/train.py"
    assert doc["experiment"]["name"] == "pkg.train"
    assert doc["config"] == {"scale": 4.0, "steps": 3}  # the override applies as under python
    assert metrics["logged"]["values"] == [0.0, 4.0, 8.0]
    assert metrics["printed"]["values"] == [0, 1, 2]
    assert [a["name"] for a in doc["artifacts"]] == ["train.py"]
    assert "pkg/train.py" in dict(doc["experiment"]["sources"])


def test_a_script_without_argparse_records_its_argv_and_custom_patterns(repo):
    write(repo, {"plain.py": """
        import sys
        print("args", sys.argv[1:])
        print("| end of epoch 1 | valid loss 6.47 | acc 0.5 |")
        """})
    done = recorder(repo, "run", "--name", "plain-exp", "--no-default-patterns",
                    "--metric-pattern", r"val_loss=valid loss\s+(?P<value>\S+)",
                    "--metric-pattern", r"(?P<name>acc) (?P<value>\S+)",
                    "plain.py", "a", "lr=3", "--flag")
    assert done.returncode == 0, done.stderr
    assert "args ['a', 'lr=3', '--flag']" in done.stdout
    _, doc, metrics = last_run(repo)
    assert doc["config"] == {"argv": ["a", "lr=3", "--flag"]}
    assert doc["experiment"]["name"] == "plain-exp"
    assert metrics.keys() == {"val_loss", "acc"} and metrics["val_loss"]["values"] == [6.47]
    assert doc["entrypoint"]["launch_options"] == [
        "--name", "plain-exp", "--metric-pattern", r"val_loss=valid loss\s+(?P<value>\S+)",
        "--metric-pattern", r"(?P<name>acc) (?P<value>\S+)", "--no-default-patterns"]


def test_lines_printed_by_a_forked_child_are_not_metrics(repo):
    write(repo, {"workers.py": """
        import os
        print("loss: 1.0", flush=True)
        pid = os.fork()
        if pid == 0:
            print("loss: 99.0", flush=True)  # a DataLoader worker, say
            os._exit(0)
        os.waitpid(pid, 0)
        print("loss: 2.0", flush=True)
        """})
    done = recorder(repo, "run", "workers.py")
    assert done.returncode == 0 and done.stdout.count("loss:") == 3
    assert "warning" not in done.stderr, done.stderr
    _, _, metrics = last_run(repo)
    assert metrics["loss"]["values"] == [1.0, 2.0]


def replay(cwd, *args):
    return recorder(cwd, "replay", *args, timeout=300)


def move_on(repo: Path) -> None:
    write(repo, {"train.py": "raise SystemExit('not the code that ran')\n",
                 "helpers.py": "def loss(epoch, batch):\n    return 0.0\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "moved on")


def test_replay_reruns_the_script_and_leaves_timings_out(repo, tmp_path):
    # unseeded: random.random() is in every loss, the recorder's seed makes it replayable
    done = recorder(repo, "run", "train.py", "--lr", "0.5", "--api-key", API_KEY)
    assert done.returncode == 0, done.stderr
    _, original, _ = last_run(repo)
    move_on(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = str(repo / ".recorder")
    shown = replay(elsewhere, str(original["_id"]), "--store", store,
                   "--set", f"api-key={API_KEY}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert "running: python -m recorder run --name train train.py --lr 0.5 --api-key " \
           "'<redacted>'" in out
    assert "REPRODUCED" in out
    for name in ("ms/batch", "samples/s", "time"):
        assert any(line.split()[:1] == [name] and "(timing: not judged)" in line
                   for line in out.splitlines()), out
    assert "ms/batch, samples/s, time: timing metrics, shown but left out of the verdict" in out
    db = open_store(repo / ".recorder")
    new = db.get_run("last")
    assert new["replay_of"] == original["_id"] and new["replay"]["verdict"] == "reproduced"
    assert new["seed"] == original["seed"] and new["replay"]["config_same"]
    # the same config, but for the default path built from __file__: the rebuilt tree's
    assert new["config"]["data"] != original["config"]["data"] == str(repo / "data")
    assert {**new["config"], "data": None} == {**original["config"], "data": None}
    assert db.metrics(new["_id"])["loss"] == {
        k: v for k, v in db.metrics(original["_id"])["loss"].items() if k != "timestamps"
    } | {"timestamps": db.metrics(new["_id"])["loss"]["timestamps"]}

    judged = replay(elsewhere, str(original["_id"]), "--store", store, "--compare-all",
                    "--set", f"api-key={API_KEY}", "--json")
    result = json.loads(judged.stdout)
    assert judged.returncode == 1 and result["verdict"] == "diverged", judged.stdout
    differing = {m["name"] for m in result["metrics"] if not m["identical"]}
    assert "samples/s" in differing and differing <= {"ms/batch", "samples/s", "time"}


def test_replay_of_a_module_run_that_diverges(repo, tmp_path):
    write(repo, {"pkg/__init__.py": "", "pkg/noisy.py": """
        import time
        for step in range(3):
            print(f"step={step} loss={time.time_ns() % 1_000_003}")
        """})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "noisy")
    assert recorder(repo, "run", "-m", "pkg.noisy").returncode == 0
    done = replay(repo, "last", "--json")
    result = json.loads(done.stdout)
    assert done.returncode == 1 and result["verdict"] == "diverged", done.stdout + done.stderr
    assert result["plan"]["command"][1:] == ["-m", "recorder", "run", "--name", "pkg.noisy",
                                             "-m", "pkg.noisy"]
    assert [m["name"] for m in result["metrics"] if not m["identical"]] == ["loss"]


def test_a_chatty_script_is_not_slowed_much(tmp_path, git_env):
    write(tmp_path, {"chatty.py": """
        for i in range(30000):
            print(f"| step {i} | loss {i / 7:.4f} |")
        """})
    started = time.monotonic()
    done = recorder(tmp_path, "run", "chatty.py")
    assert done.returncode == 0 and time.monotonic() - started < 60
    assert done.stdout.count("\n") == 30000
    store = open_store(tmp_path / ".recorder")
    doc = store.get_run("last")
    metrics = store.metrics(doc["_id"])
    assert len(metrics["loss"]["values"]) == 30000 and metrics["step"]["steps"][-1] == 29999

