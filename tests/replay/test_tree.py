"""Rebuilding a run's tree: from git (commit, diff, untracked files) or from stored sources,
every stored file checked, and nothing written outside the tree, even for forged documents."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from recorder.capture.git import capture_git
from recorder.errors import ReplayError
from recorder.replay.tree import layout, rebuild
from recorder.store import open_store

pytestmark = pytest.mark.usefixtures("isolated_git")  # tests/conftest.py


@pytest.fixture
def store():
    return open_store(f"mongomock://{uuid.uuid4().hex}")


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root but .git and the store, by relative path."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".recorder")) and rel != ".git":
            found[rel] = path.read_bytes()
    return found


def stored(store, files: dict[str, bytes]) -> list[list[str]]:
    shas = {hashlib.sha256(data).hexdigest(): data for data in files.values()}
    store.apply({"op": "files", "files": shas})
    return sorted([rel, hashlib.sha256(data).hexdigest()] for rel, data in files.items())


def recorded(store, repo: Path, sources: dict[str, bytes] | None = None, **git_options) -> dict:
    """A run document with the repository's git state, as a run starting now would store it."""
    state, files = capture_git(repo, **git_options)
    store.apply({"op": "files", "files": files})
    return {"_id": 1, "git": state,
            "experiment": {"base_dir": str(repo), "sources": stored(store, sources or {})},
            "entrypoint": {"kind": "file", "file": "train.py", "cwd_relative": "."}}


@pytest.fixture
def dirty_repo(tmp_path) -> Path:
    """Committed files, then staged, unstaged, binary, deleted and untracked changes."""
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"train.py": "import helpers\n", "helpers.py": "A = 1\n",
                 "gone.py": "old\n", "data/weights.bin": bytes(range(256))})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    write(repo, {"helpers.py": "A = 2  # not committed\n", "staged.py": "S = 1\n",
                 "data/weights.bin": bytes(reversed(range(256))),
                 "notes/todo.txt": "untracked\n", "blob.dat": b"\x00\xff untracked binary"})
    git(repo, "add", "staged.py")
    (repo / "gone.py").unlink()
    return repo


def move_on(repo: Path) -> None:
    """New commits, edited and deleted files: the working tree no longer looks like the run."""
    write(repo, {"helpers.py": "A = 99\n", "train.py": "raise SystemExit('new code')\n"})
    (repo / "notes" / "todo.txt").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "moved on")
    (repo / "blob.dat").write_bytes(b"changed")


def test_commit_then_diff_then_untracked_files_give_the_tree_back(dirty_repo, store, tmp_path):
    before = snapshot(dirty_repo)
    run = recorded(store, dirty_repo)
    move_on(dirty_repo)
    tree = rebuild(run, store, tmp_path / "out")
    assert tree.origin == "git" and tree.diff and tree.commit == run["git"]["commit"]
    assert snapshot(tree.root) == before
    assert sorted(tree.files) == ["blob.dat", "notes/todo.txt"]
    # the tree is a repository at the commit, on the recorded branch, with the same changes
    assert git(tree.root, "rev-parse", "HEAD") == run["git"]["commit"]
    assert git(tree.root, "branch", "--show-current") == "main"
    again, _ = capture_git(tree.root)
    assert again["diff"] == run["git"]["diff"] and again["untracked"] == run["git"]["untracked"]


def test_a_diff_kept_in_gridfs_is_applied(dirty_repo, store, tmp_path):
    before = snapshot(dirty_repo)
    run = recorded(store, dirty_repo, max_inline_diff=10)
    assert run["git"]["diff"] is None and run["git"]["diff_file_id"]
    move_on(dirty_repo)
    assert snapshot(rebuild(run, store, tmp_path / "out").root) == before


def test_the_commit_is_found_in_the_current_directorys_repository(dirty_repo, store, tmp_path):
    before = snapshot(dirty_repo)
    run = recorded(store, dirty_repo)
    clone = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", str(dirty_repo), str(clone))
    run["git"]["root"] = str(tmp_path / "no-longer-here")
    tree = rebuild(run, store, tmp_path / "out", search=[clone / "data"])
    assert tree.origin == "git" and tree.repository == str(clone)
    assert snapshot(tree.root) == before


def test_an_unreachable_commit_falls_back_to_the_stored_sources(dirty_repo, store, tmp_path):
    sources = {"train.py": b"import helpers\n", "helpers.py": b"A = 2  # not committed\n"}
    run = recorded(store, dirty_repo, sources=sources)
    run["git"]["commit"] = "f" * 40
    tree = rebuild(run, store, tmp_path / "out", search=[dirty_repo])
    assert tree.origin == "sources"
    assert snapshot(tree.root) == {**sources, "notes/todo.txt": b"untracked\n",
                                   "blob.dat": b"\x00\xff untracked binary"}


def test_a_run_outside_git_is_rebuilt_from_its_sources(store, tmp_path):
    sources = {"train.py": b"print(1)\n", "pkg/__init__.py": b"", "pkg/mod.py": b"X = 1\n"}
    run = {"_id": 3, "git": None, "experiment": {"base_dir": "/gone", "sources":
                                                 stored(store, sources)}}
    tree = rebuild(run, store, tmp_path / "out")
    assert tree.origin == "sources" and snapshot(tree.root) == sources
    assert "3 stored files" in tree.describe()


def test_no_commit_and_no_sources_cannot_be_rebuilt(store, tmp_path):
    run = {"_id": 4, "git": None, "experiment": {"base_dir": "/gone", "sources": []}}
    with pytest.raises(ReplayError, match="not in a git repository and it has no stored source"):
        rebuild(run, store, tmp_path / "out")


def test_a_corrupt_or_missing_stored_file_is_named(store, tmp_path):
    sources = {"train.py": b"print(1)\n", "helpers.py": b"A = 1\n"}
    run = {"_id": 5, "git": None, "experiment": {"base_dir": "/x", "sources":
                                                 stored(store, sources)}}
    sha = hashlib.sha256(b"A = 1\n").hexdigest()
    store.db["fs.chunks"].update_one({"files_id": sha}, {"$set": {"data": b"A = 666\n"}})
    with pytest.raises(ReplayError, match=r"source file 'helpers.py' \(sha256 [0-9a-f]{12}\) is "
                                          "missing from the store or does not match"):
        rebuild(run, store, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    run["experiment"]["sources"] = [["train.py", "0" * 64]]
    with pytest.raises(ReplayError, match="'train.py'"):
        rebuild(run, store, tmp_path / "out2")


FORGED = [
    ("/tmp/recorder-evil.txt", "absolute"),
    ("../evil.txt", "leaves the tree"),
    ("a/../../evil.txt", "leaves the tree"),
    ("C:/evil.txt", "absolute"),
    ("..\\evil.txt", "leaves the tree"),
    (".git/hooks/post-checkout", "into .git"),
    ("sub/.GIT/config", "into .git"),
    ("", "not a file name"),
]


@pytest.mark.parametrize("path, reason", FORGED)
def test_a_forged_source_path_is_refused_and_nothing_is_written(store, tmp_path, path, reason):
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {"train.py": b"ok\n"}
    entries = stored(store, files) + [[path, hashlib.sha256(b"ok\n").hexdigest()]]
    run = {"_id": 6, "git": None, "experiment": {"base_dir": str(outside / "proj"),
                                                 "sources": entries}}
    dest = tmp_path / "out" / "tree"
    with pytest.raises(ReplayError, match=f"refused the stored source file .*{reason}"):
        rebuild(run, store, dest)
    assert not dest.exists() or not any(dest.iterdir())
    assert not any(outside.iterdir()) and not (tmp_path / "out" / "evil.txt").exists()
    assert not Path("/tmp/recorder-evil.txt").exists()


@pytest.mark.parametrize("path, reason", FORGED[:3] + FORGED[5:6])
def test_a_forged_untracked_path_is_refused(dirty_repo, store, tmp_path, path, reason):
    run = recorded(store, dirty_repo)
    run["git"]["untracked"].append([path, run["git"]["untracked"][0][1]])
    with pytest.raises(ReplayError, match=f"refused the stored untracked file .*{reason}"):
        rebuild(run, store, tmp_path / "out" / "tree")
    assert not (tmp_path / "out" / "tree").exists()  # refused before the clone


def test_no_stored_path_reaches_out_through_a_committed_symlink(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"train.py": "pass\n"})
    (repo / "link").symlink_to(outside)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a link to a directory outside")
    run = recorded(store, repo)

    forged = dict(run, git={**run["git"], "untracked": stored(store, {"link/evil.txt": b"x"})})
    with pytest.raises(ReplayError, match="passes through the symbolic link 'link'"):
        rebuild(forged, store, tmp_path / "out1")
    diff = ("diff --git a/link/evil.txt b/link/evil.txt\nnew file mode 100644\n"
            "index 0000000..587be6b\n--- /dev/null\n+++ b/link/evil.txt\n@@ -0,0 +1 @@\n+x\n")
    forged = dict(run, git={**run["git"], "diff": diff})
    with pytest.raises(ReplayError, match="symbolic link 'link'|beyond a symbolic link"):
        rebuild(forged, store, tmp_path / "out2")
    escaping = diff.replace("link/evil.txt", "../evil.txt")
    forged = dict(run, git={**run["git"], "diff": escaping})
    with pytest.raises(ReplayError):
        rebuild(forged, store, tmp_path / "out3")
    assert not any(outside.iterdir()) and not (tmp_path / "evil.txt").exists()


def test_the_destination_must_be_new_or_empty(store, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(ReplayError, match="not an empty directory"):
        rebuild({"_id": 1, "git": None}, store, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "mine"


@pytest.mark.parametrize("cwd_relative, base, root, cwd", [
    (".", "/home/u/proj", "", ""),
    ("sub/dir", "/home/u/proj", "", "sub/dir"),
    ("..", "/home/u/proj", "proj", ""),
    ("../other", "/home/u/proj", "proj", "other"),
])
def test_the_working_directory_is_laid_out_inside_the_destination(tmp_path, cwd_relative, base,
                                                                   root, cwd):
    run = {"experiment": {"base_dir": base}, "entrypoint": {"cwd_relative": cwd_relative}}
    assert layout(run, tmp_path) == (tmp_path / root, tmp_path / cwd)


@pytest.mark.parametrize("cwd_relative", ["../../..", "/etc", "sub/../../x"])
def test_a_working_directory_leaving_the_destination_is_refused(tmp_path, cwd_relative):
    run = {"experiment": {"base_dir": "/a"}, "entrypoint": {"cwd_relative": cwd_relative}}
    with pytest.raises(ReplayError, match="working directory"):
        layout(run, tmp_path)
