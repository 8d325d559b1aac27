"""Hostile source trees: bytes that are not UTF-8, binary files, files that vanish while
they are snapshotted, odd git repositories, symlinks out of the project. The run is always
recorded, what it stores is exact, and nothing outside the project is read."""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recorder import cli as recorder_cli
from recorder.capture import git as git_capture
from recorder.capture.sources import capture_sources
from recorder.store import open_store

TRAIN = """
import sys
sys.path.insert(0, "ext")  # only used by the symlink case

import helper
import recorder


@recorder.experiment
def main(lr: float = 0.1):
    recorder.log("loss", helper.VALUE * lr)
    return helper.VALUE


main()
"""
LATIN1 = b"# -*- coding: latin-1 -*-\n# caf\xe9, cr\xe8me\nVALUE = 1\n"


def record(repo: Path, python, *args) -> dict:
    done = python(repo, "train.py", *args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    store = open_store(repo / ".recorder")
    run = store.get_run("last")
    assert run["status"] == "COMPLETED"
    return run


def sources(run: dict) -> dict[str, str]:
    return dict(run["experiment"]["sources"])


def show(repo: Path) -> str:
    shown = CliRunner().invoke(recorder_cli.app, ["show", "last", "--store",
                                                  str(repo / ".recorder")])
    assert shown.exit_code == 0, shown.output
    return shown.stdout


# -- not UTF-8, not text -----------------------------------------------------------------


def test_latin1_source_and_binary_files_are_stored_byte_for_byte(tmp_path, python, git, files):
    repo = files(tmp_path / "repo", {"train.py": TRAIN, "helper.py": LATIN1,
                                     "data/blob.bin": bytes(range(256))})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    edited = LATIN1 + b"# na\xefve edit, not committed\n"
    files(repo, {"helper.py": edited, "data/blob.bin": bytes(reversed(range(256))) * 3,
                 "weights.bin": b"\x00\xff\xfe" * 1000})

    run = record(repo, python)
    store = open_store(repo / ".recorder")
    assert store.get_file(sources(run)["helper.py"]) == edited
    untracked = dict(run["git"]["untracked"])
    assert store.get_file(untracked["weights.bin"]) == b"\x00\xff\xfe" * 1000
    # a diff that is not UTF-8 is kept in GridFS, and gives the tree back byte for byte
    assert run["git"]["diff"] is None
    diff = store.get_file(run["git"]["diff_file_id"])
    assert b"na\xefve" in diff
    rebuilt = tmp_path / "rebuilt"
    git(tmp_path, "clone", "-q", str(repo), str(rebuilt))
    git(rebuilt, "checkout", "-q", run["git"]["commit"])
    subprocess.run(["git", "apply", "--binary", "-"], cwd=rebuilt, input=diff, check=True)
    for rel in ("helper.py", "data/blob.bin"):
        assert (rebuilt / rel).read_bytes() == (repo / rel).read_bytes()
    # `show` used to crash here (Store had no file_length)
    assert f"diff in GridFS ({len(diff)} bytes)" in show(repo)


# -- files that vanish between being found and being read ------------------------------------


def test_a_file_deleted_between_detection_and_snapshot(tmp_path, monkeypatch, git, files):
    repo = files(tmp_path / "repo", {"train.py": "print(1)\n", "notes.txt": "a\n",
                                     "keep.txt": "b\n"})
    git(repo, "init", "-q", "-b", "main")
    parse = git_capture._parse_status

    def parse_then_delete(out):
        found = parse(out)
        (repo / "notes.txt").unlink()  # listed by `git status`, gone before it is read
        return found

    monkeypatch.setattr(git_capture, "_parse_status", parse_then_delete)
    doc, _ = git_capture.capture_git(repo)
    assert [p for p, _ in doc["untracked"]] == ["keep.txt", "train.py"]
    assert {"path": "notes.txt", "reason": "deleted"} in doc["skipped"]

    gone = files(tmp_path / "proj", {"gone.py": "X = 1\n", "kept.py": "Y = 2\n"})
    modules = [types.SimpleNamespace(__file__=str(gone / name)) for name in ("gone.py",
                                                                             "kept.py")]
    (gone / "gone.py").unlink()  # imported, then deleted before the run started
    found, _ = capture_sources(None, gone, modules)
    assert [p for p, _ in found] == ["kept.py"]


def test_a_module_deleted_after_import_does_not_stop_the_run(tmp_path, python, files):
    repo = files(tmp_path / "repo", {"train.py": TRAIN.replace(
        "import recorder\n", "import recorder\nimport os\nos.remove('helper.py')\n", 1),
        "helper.py": "VALUE = 3\n"})
    run = record(repo, python)
    assert run["result"] == 3 and "helper.py" not in sources(run)


# -- odd git repositories ----------------------------------------------------------------------


def no_commits(tmp_path, git, files) -> Path:
    repo = files(tmp_path / "repo", {"train.py": TRAIN, "helper.py": "VALUE = 1\n"})
    git(repo, "init", "-q", "-b", "main")
    return repo


def detached(tmp_path, git, files) -> Path:
    repo = no_commits(tmp_path, git, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    files(repo, {"helper.py": "VALUE = 2\n"})
    git(repo, "commit", "-qam", "two")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    return repo


def shallow(tmp_path, git, files) -> Path:
    origin = detached(tmp_path, git, files)
    git(origin, "checkout", "-q", "main")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    return clone


def submodule(tmp_path, git, files) -> Path:
    lib = files(tmp_path / "lib", {"helper.py": "VALUE = 5\n"})
    git(lib, "init", "-q", "-b", "main")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    repo = files(tmp_path / "repo", {"train.py": TRAIN.replace(
        "import helper", "sys.path.insert(0, 'lib')\nimport helper")})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "with a submodule")
    files(repo, {"lib/helper.py": "VALUE = 6  # edited inside the submodule\n",
                 "lib/scratch.txt": "untracked inside the submodule\n"})
    return repo


@pytest.mark.parametrize("make", [no_commits, detached, shallow, submodule])
def test_odd_git_repositories_are_recorded(tmp_path, python, git, files, make):
    repo = make(tmp_path, git, files)
    run = record(repo, python)
    state = run["git"]
    assert state["root"] == str(repo)
    if make is no_commits:
        assert state["commit"] is None and state["branch"] == "main" and state["dirty"]
        assert sorted(p for p, _ in state["untracked"]) == ["helper.py", "train.py"]
    elif make is detached:
        assert state["commit"] == git(repo, "rev-parse", "HEAD")
        assert state["branch"] is None and state["detached"] and not state["dirty"]
    elif make is shallow:
        assert state["commit"] == git(repo, "rev-parse", "HEAD")
        assert state["branch"] == "main" and state["remote"].startswith("file://")
    else:  # the submodule: its new commit state is in the diff, its edited file in sources
        assert state["dirty"] and "Subproject commit" in state["diff"]
        assert state["diff"].rstrip().endswith("-dirty")
        store = open_store(repo / ".recorder")
        assert store.get_file(sources(run)["lib/helper.py"]) == \
            b"VALUE = 6  # edited inside the submodule\n"
        assert run["result"] == 6
    assert "git" in show(repo)


# -- symlinks that lead out of the project -------------------------------------------------------


def test_symlinks_out_of_the_project_are_never_followed(tmp_path, python, git, files):
    secret = b"outside the project: never stored\n"
    outside = files(tmp_path / "outside", {"secret.txt": secret,
                                           "lib/extmod.py": "SECRET = 'outside'\n"})
    repo = files(tmp_path / "repo", {"train.py": TRAIN.replace(
        "import helper\n", "import helper\nimport extmod\n"), "helper.py": "VALUE = 1\n"})
    git(repo, "init", "-q", "-b", "main")
    os.symlink(outside / "lib", repo / "ext")                   # a folder out of the project
    os.symlink(outside / "secret.txt", repo / "secret_link.txt")  # a file out of it
    os.symlink(outside, repo / "tracked_link")                  # committed: git keeps the link
    git(repo, "add", "train.py", "helper.py", "tracked_link")
    git(repo, "commit", "-qm", "links")

    run = record(repo, python)
    assert sorted(sources(run)) == ["helper.py", "train.py"]  # not ext/extmod.py
    state = run["git"]
    assert state["untracked"] == []
    assert {"path": "ext", "reason": "symlink"} in state["skipped"]
    assert {"path": "secret_link.txt", "reason": "symlink"} in state["skipped"]
    db = open_store(repo / ".recorder").db
    for chunk in db["fs.chunks"].find():
        assert b"outside" not in bytes(chunk["data"])
