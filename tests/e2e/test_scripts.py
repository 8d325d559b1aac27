"""Real scripts in subprocesses, in temporary git repositories with uncommitted work,
checked the way a user would check the stored run."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recorder.store import open_store

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_e2eSecretToken0123456789"
API_KEY = "sk-live-e2e-9876543210"

TRAIN = '''
import argparse
import sys

import helpers
import recorder


@recorder.experiment
def main(lr: float = 0.1, epochs: int = 3, api_key: str = "", seed: int = 11):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    args = parser.parse_args()
    print("argv seen by argparse:", sys.argv[1:], "data:", args.data)
    import os
    print("token in the environment:", os.environ.get("GITHUB_TOKEN"))
    for epoch in range(epochs):
        recorder.log("train_loss", helpers.loss(epoch, lr), step=epoch)
    return {"final": helpers.loss(epochs - 1, lr)}


if __name__ == "__main__":
    main()
'''


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))


def project(root: Path, files: dict[str, str | bytes]) -> Path:
    """A committed repository, then an uncommitted edit and untracked files on top."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline")
    return root


def run(cwd, *args, env=None, check=True, timeout=120):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_a_decorated_script_in_a_dirty_repository(tmp_path, isolated_git):
    repo = project(tmp_path / "proj", {
        "train.py": TRAIN,
        "helpers.py": "def loss(epoch, lr):\n    return 1.0 / (epoch + 1)\n",
        "data/weights.bin": bytes(range(256)),
    })
    write(repo, {
        "helpers.py": "def loss(epoch, lr):\n    return lr / (epoch + 1)  # edited, not committed\n",
        "notes.txt": "untracked notes\n",
        ".env": f"GITHUB_TOKEN={TOKEN}\n",
        "data/weights.bin": bytes(reversed(range(256))),
    })

    result = run(repo, "train.py", "lr=0.5", "--data", "cifar", f"api_key={API_KEY}",
                 env={"GITHUB_TOKEN": TOKEN})

    assert "argv seen by argparse: ['--data', 'cifar'] data: cifar" in result.stdout
    store = open_store(repo / ".recorder")
    doc = store.get_run("last")
    assert doc["status"] == "COMPLETED" and doc["result"] == {"final": 0.5 / 3}
    assert doc["config"] == {"lr": 0.5, "epochs": 3, "api_key": "<redacted>", "seed": 11}
    assert store.metrics(doc["_id"])["train_loss"]["values"] == [0.5, 0.25, 0.5 / 3]
    assert doc["entrypoint"]["kind"] == "file" and doc["entrypoint"]["file"] == "train.py"
    assert doc["entrypoint"]["argv"][0] == "train.py" and "lr=0.5" in doc["entrypoint"]["argv"]
    assert "argv seen by argparse" in doc["captured_out"]

    # git: the commit, plus the stored diff, plus the untracked files give the tree back
    assert doc["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert doc["git"]["branch"] == "main" and doc["git"]["dirty"] is True
    clone = tmp_path / "rebuilt"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "checkout", "-q", doc["git"]["commit"])
    (clone / "change.patch").write_text(doc["git"]["diff"])
    git(clone, "apply", "--binary", "change.patch")
    for rel in ("helpers.py", "data/weights.bin", "train.py"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes()
    untracked = dict(doc["git"]["untracked"])
    assert store.get_file(untracked["notes.txt"]) == b"untracked notes\n"
    assert ".env" not in untracked
    assert {"path": ".env", "reason": "secret"} in doc["git"]["skipped"]
    assert not any(path.startswith(".recorder") for path in untracked)

    # sources: the main file and the local module, as they were when the run started
    sources = dict(doc["experiment"]["sources"])
    assert set(sources) == {"train.py", "helpers.py"}
    assert store.get_file(sources["helpers.py"]) == (repo / "helpers.py").read_bytes()

    # environment
    assert doc["environment"]["python"]["version"].startswith(f"{sys.version_info[0]}.")
    assert "pymongo" in doc["environment"]["packages"]
    assert doc["host"]["hostname"]

    # secrets: nowhere in the store, not even in the captured output
    assert "token in the environment: <redacted>" in doc["captured_out"]
    for path in (repo / ".recorder").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and API_KEY.encode() not in data, path


def test_run_as_a_module(tmp_path, isolated_git):
    repo = project(tmp_path / "proj", {
        "pkg/__init__.py": "",
        "pkg/train.py": """
            import recorder

            @recorder.experiment
            def main(steps: int = 2):
                for i in range(steps):
                    recorder.log("x", i)

            if __name__ == "__main__":
                main()
            """,
    })
    run(repo, "-m", "pkg.train", "steps=4")
    doc = open_store(repo / ".recorder").get_run("last")
    assert doc["entrypoint"]["kind"] == "module" and doc["entrypoint"]["module"] == "pkg.train"
    assert doc["config"] == {"steps": 4}
    assert "pkg/train.py" in dict(doc["experiment"]["sources"])


def test_outside_a_git_repository_git_is_null(tmp_path, isolated_git):
    write(tmp_path, {"plain/train.py": """
        import recorder

        @recorder.experiment
        def main():
            recorder.log("x", 1.0)

        main()
        """})
    run(tmp_path / "plain", "train.py")
    doc = open_store(tmp_path / "plain" / ".recorder").get_run("last")
    assert doc["git"] is None and doc["status"] == "COMPLETED"
    assert dict(doc["experiment"]["sources"]).keys() == {"train.py"}


def test_bad_override_is_one_line_without_traceback(tmp_path, isolated_git):
    repo = project(tmp_path / "proj", {"train.py": TRAIN, "helpers.py": "def loss(e, lr): return 0\n"})
    for arg, message in [
        ("lrr=1", "recorder: error: unknown config key 'lrr' (accepted: lr, epochs, api_key, seed)"),
        ("epochs=many", "recorder: error: config key 'epochs' expects int, got 'many'"),
    ]:
        result = run(repo, "train.py", arg, check=False)
        assert result.returncode == 2
        assert result.stderr.strip() == message


def test_numpy_imported_during_the_run_is_seeded_and_torch_is_never_imported(tmp_path, isolated_git):
    write(tmp_path, {"seeded.py": """
        import sys
        import recorder

        @recorder.experiment
        def main(seed: int = 5):
            import numpy
            print("draw", numpy.random.rand())

        main()
        print("torch imported:", "torch" in sys.modules)
        """})
    result = run(tmp_path, "seeded.py")
    import numpy

    assert f"draw {numpy.random.RandomState(5).rand()}" in result.stdout
    assert "torch imported: False" in result.stdout
    doc = open_store(tmp_path / ".recorder").get_run("last")
    assert doc["seeded"] == ["random", "numpy"]


def test_ctrl_c_marks_the_run_interrupted(interruptible, tmp_path, isolated_git):
    write(tmp_path, {"slow.py": """
        import time
        import recorder

        @recorder.experiment
        def main():
            recorder.log("x", 1.0)
            print("ready", flush=True)
            time.sleep(60)

        main()
        """})
    with interruptible():
        process = subprocess.Popen([sys.executable, "slow.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    assert process.returncode != 0
    doc = open_store(tmp_path / ".recorder").get_run("last")
    assert doc["status"] == "INTERRUPTED"
    assert open_store(tmp_path / ".recorder").metrics(doc["_id"])["x"]["values"] == [1.0]


def test_notebook_entry_point_is_recorded(tmp_path, isolated_git):
    code = textwrap.dedent("""
        import builtins
        builtins.__IPYTHON__ = True
        import recorder

        @recorder.experiment
        def main():
            pass

        main()
        """)
    run(tmp_path, "-c", code)
    assert open_store(tmp_path / ".recorder").get_run("last")["entrypoint"]["kind"] == "notebook"


def test_the_quickstart_example(tmp_path, isolated_git):
    pytest.importorskip("torch")
    repo = project(tmp_path / "proj", {"quickstart.py": (ROOT / "examples" / "quickstart.py").read_text()})
    shutil.copy(ROOT / "LICENSE", repo / "LICENSE.txt")  # an untracked file
    result = run(repo, "quickstart.py", "epochs=3", timeout=300)
    lines = result.stdout.strip().splitlines()
    store = open_store(repo / ".recorder")
    doc = store.get_run("last")
    assert lines[-2:] == [f"recorded run {doc['_id']}: see it with", f"    recorder show {doc['_id']}"]
    metrics = store.metrics(doc["_id"])
    assert metrics["train_loss"]["steps"] == [0, 1, 2] and len(metrics["val_loss"]["values"]) == 3
    assert doc["environment"]["torch"]["version"].startswith("2.")
    assert doc["determinism"]["end"]["torch_threads"] >= 1
    assert "torch" in doc["seeded"]
    assert dict(doc["git"]["untracked"]).keys() == {"LICENSE.txt"}


def test_stdout_still_reaches_the_terminal_and_the_tail_is_capped(tmp_path, isolated_git):
    write(tmp_path, {"chatty.py": """
        import recorder

        @recorder.experiment
        def main():
            for i in range(30000):
                print(f"line {i:06d}")

        main()
        """})
    started = time.monotonic()
    result = run(tmp_path, "chatty.py")
    assert time.monotonic() - started < 60
    assert result.stdout.count("\n") == 30000
    tail = open_store(tmp_path / ".recorder").get_run("last")["captured_out"]
    assert tail.endswith("line 029999\n") and len(tail) <= 100_000

