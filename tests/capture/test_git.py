"""capture_git against real repositories: what a user needs to rebuild their tree exactly."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from recorder.capture.git import SECRET_FILE_PATTERNS, capture_git, strip_credentials

pytestmark = pytest.mark.usefixtures("isolated_git")  # tests/conftest.py

BINARY = bytes(range(256)) * 40


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def make_repo(path: Path, files: dict[str, bytes] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for rel, data in (files or {"README.md": b"hello\n"}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tracked_tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Bytes and executable bit of every tracked file present in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                         capture_output=True).stdout
    tree = {}
    for rel in filter(None, out.decode().split("\0")):
        p = root / rel
        if p.exists():
            tree[rel] = (p.read_bytes(), os.access(p, os.X_OK))
    return tree


def all_files(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Bytes and executable bit of every file of a rebuilt tree (git apply leaves new files
    out of the index, so this walks the directory)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), os.access(p, os.X_OK))
        for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def rebuild(doc: dict, files: dict[str, bytes], source: Path, dest: Path) -> Path:
    """What replay does: clone, check out the commit, apply the diff."""
    git(dest.parent, "clone", "-q", str(source), dest.name)
    git(dest, "checkout", "-q", "--detach", doc["commit"])
    diff = doc["diff"].encode() if doc["diff"] is not None else files[doc["diff_file_id"]]
    if diff:
        (dest.parent / "run.patch").write_bytes(diff)
        git(dest, "apply", "--binary", str(dest.parent / "run.patch"))
    return dest


def dirty_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {
        "staged.txt": b"one\ntwo\n",
        "unstaged.txt": b"alpha\nbeta\n",
        "gone.txt": b"delete me\n",
        "data/blob.bin": BINARY,
        "run.sh": b"#!/bin/sh\necho hi\n",
        "na\u00efve name.txt": b"unicode\n",
        "no_newline.txt": b"end",
    })
    (repo / "staged.txt").write_bytes(b"one\nTWO\n")
    git(repo, "add", "staged.txt")
    (repo / "unstaged.txt").write_bytes(b"alpha\nbeta\ngamma\n")
    (repo / "gone.txt").unlink()
    (repo / "data/blob.bin").write_bytes(BINARY[::-1] + b"\0tail")
    (repo / "new.txt").write_bytes(b"brand new\n")
    (repo / "new.bin").write_bytes(b"\x00\x01\x02new binary")
    git(repo, "add", "new.txt", "new.bin")
    (repo / "run.sh").chmod(0o755)
    (repo / "na\u00efve name.txt").write_bytes(b"unicode changed\n")
    (repo / "no_newline.txt").write_bytes(b"end, still no newline")
    return repo


def test_diff_round_trips_byte_for_byte(tmp_path):
    repo = dirty_repo(tmp_path)
    doc, files = capture_git(repo)

    assert doc["dirty"] is True
    assert doc["diff"] and doc["diff_file_id"] is None
    assert "diff --git a/data/blob.bin b/data/blob.bin" in doc["diff"]
    assert "GIT binary patch" in doc["diff"]
    rebuilt = rebuild(doc, files, repo, tmp_path / "rebuilt")
    assert all_files(rebuilt) == tracked_tree(repo)
    assert not (rebuilt / "gone.txt").exists()


def test_user_config_cannot_change_the_diff(tmp_path, monkeypatch):
    repo = dirty_repo(tmp_path)
    plain, _ = capture_git(repo)
    hostile = tmp_path / "gitconfig"
    hostile.write_text(
        "[diff]\n noprefix = true\n mnemonicPrefix = true\n relative = true\n"
        " renames = copies\n external = false\n suppressBlankEmpty = true\n"
        "[color]\n ui = always\n diff = always\n[core]\n quotepath = on\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(hostile))
    doc, files = capture_git(repo / "data")

    assert doc["diff"] == plain["diff"]
    rebuilt = rebuild(doc, files, repo, tmp_path / "rebuilt")
    assert all_files(rebuilt) == tracked_tree(repo)


def test_clean_repo(tmp_path):
    repo = make_repo(tmp_path / "repo")
    doc, files = capture_git(repo)

    head = git(repo, "rev-parse", "HEAD").strip()
    assert doc == {
        "root": str(repo.resolve()), "commit": head, "branch": "main", "detached": False,
        "remote": None, "dirty": False, "diff": "", "diff_file_id": None,
        "untracked": [], "skipped": [],
    }
    assert files == {}


def test_subdirectory_reports_the_top_of_the_work_tree(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pkg/sub/mod.py": b"x = 1\n"})
    doc, _ = capture_git(repo / "pkg" / "sub")
    assert doc["root"] == str(repo.resolve())


def test_untracked_files_are_stored(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "notes.txt").write_bytes(b"my notes\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "helper.py").write_bytes(b"def f(): pass\n")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "out.log").write_text("ignored\n")
    doc, files = capture_git(repo)

    assert doc["dirty"] is True
    assert doc["diff"] == ""
    by_path = dict(doc["untracked"])
    assert set(by_path) == {".gitignore", "notes.txt", "sub/helper.py"}
    assert files[by_path["sub/helper.py"]] == b"def f(): pass\n"
    assert files[by_path["notes.txt"]] == b"my notes\n"


def test_secret_files_are_never_stored(tmp_path):
    repo = make_repo(tmp_path / "repo", {"config/.env.prod": b"A=1\n", "main.py": b""})
    secrets = {".env": b"TOKEN=abc\n", "server.key": b"KEY\n", "id_rsa": b"RSA\n",
               "deep/.netrc": b"machine x\n", "Credentials.json": b"{}\n", "cert.PEM": b"pem"}
    for rel, data in secrets.items():
        (repo / rel).parent.mkdir(exist_ok=True)
        (repo / rel).write_bytes(data)
    (repo / "config/.env.prod").write_bytes(b"A=secret-value\n")  # a tracked secret, changed
    (repo / "main.py").write_bytes(b"print('changed')\n")
    doc, files = capture_git(repo)

    reasons = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert reasons == {rel: "secret" for rel in [*secrets, "config/.env.prod"]}
    assert doc["untracked"] == []
    assert not set(secrets.values()) & set(files.values())
    assert "secret-value" not in doc["diff"] and "changed" in doc["diff"]
    assert ".env*" in SECRET_FILE_PATTERNS


def test_per_file_and_total_caps(tmp_path):
    repo = make_repo(tmp_path / "repo")
    for name in ("a.txt", "b.txt", "c.txt"):
        (repo / name).write_bytes(name.encode() * 10)  # 50 bytes each
    (repo / "big.txt").write_bytes(b"x" * 500)
    doc, files = capture_git(repo, max_file_bytes=100, max_total_bytes=120)

    assert [p for p, _ in doc["untracked"]] == ["a.txt", "b.txt"]
    assert {s["path"]: s["reason"] for s in doc["skipped"]} == {
        "big.txt": "too large", "c.txt": "total cap"}
    assert sum(len(b) for b in files.values()) <= 120


@pytest.mark.parametrize("ignored", [True, False])
def test_store_directory_is_never_snapshotted(tmp_path, ignored):
    repo = make_repo(tmp_path / "repo")
    if ignored:
        (repo / ".gitignore").write_text(".recorder/\n")
        git(repo, "add", ".gitignore")
        git(repo, "commit", "-q", "-m", "ignore store")
    store = repo / ".recorder"
    (store / "fs").mkdir(parents=True)
    (store / "runs.sqlite").write_bytes(b"db bytes")
    (store / "fs" / "chunk").write_bytes(b"chunk bytes")
    doc, files = capture_git(repo, exclude=[store])

    assert doc["untracked"] == []
    assert files == {}
    assert doc["dirty"] is False  # the store is not the user's code
    assert doc["skipped"] == ([] if ignored else [{"path": ".recorder", "reason": "store"}])


def test_large_diff_goes_to_a_file(tmp_path):
    repo = make_repo(tmp_path / "repo", {"big.txt": b"line\n" * 1000})
    (repo / "big.txt").write_bytes(b"LINE\n" * 1000)
    doc, files = capture_git(repo, max_inline_diff=1000)

    assert doc["diff"] is None
    diff = files[doc["diff_file_id"]]
    assert doc["diff_file_id"] == sha(diff) and len(diff) > 1000
    rebuilt = rebuild(doc, files, repo, tmp_path / "rebuilt")
    assert all_files(rebuilt) == tracked_tree(repo)


def test_diff_that_is_not_utf8_goes_to_a_file(tmp_path):
    repo = make_repo(tmp_path / "repo", {"latin1.txt": "caf\u00e9\n".encode("latin-1")})
    (repo / "latin1.txt").write_bytes("na\u00efve\n".encode("latin-1"))
    doc, files = capture_git(repo)

    assert doc["diff"] is None and doc["diff_file_id"] in files
    rebuilt = rebuild(doc, files, repo, tmp_path / "rebuilt")
    assert all_files(rebuilt) == tracked_tree(repo)


def test_detached_head(tmp_path):
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "--detach")
    doc, _ = capture_git(repo)

    assert doc["detached"] is True and doc["branch"] is None
    assert doc["commit"] == git(repo, "rev-parse", "HEAD").strip()


def test_remote_url_loses_its_credentials(tmp_path):
    repo = make_repo(tmp_path / "repo")
    git(repo, "remote", "add", "backup", "git@example.com:team/backup.git")
    assert capture_git(repo)[0]["remote"] == "git@example.com:team/backup.git"
    git(repo, "remote", "add", "origin", "https://user:ghp_secret@example.com:8443/team/x.git")
    assert capture_git(repo)[0]["remote"] == "https://example.com:8443/team/x.git"


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:tok@host/x", "https://host/x"),
    ("https://ghp_token@github.com/o/r.git", "https://github.com/o/r.git"),
    ("https://host/x", "https://host/x"),
    ("ssh://git@host/x.git", "ssh://git@host/x.git"),
    ("ssh://git:pw@host/x.git", "ssh://host/x.git"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("/srv/git/r.git", "/srv/git/r.git"),
    ("https://host/path@v1", "https://host/path@v1"),
])
def test_strip_credentials(url, expected):
    assert strip_credentials(url) == expected


def test_not_a_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    assert capture_git(tmp_path / "plain") == (None, {})


def test_repository_without_commits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_bytes(b"print(1)\n")
    (repo / "staged.py").write_bytes(b"print(2)\n")
    git(repo, "add", "staged.py")
    doc, files = capture_git(repo)

    assert doc["commit"] is None and doc["diff"] is None and doc["diff_file_id"] is None
    assert doc["branch"] == "main" and doc["detached"] is False and doc["dirty"] is True
    by_path = dict(doc["untracked"])
    assert set(by_path) == {"staged.py", "train.py"}
    assert files[by_path["staged.py"]] == b"print(2)\n"


def test_symlinks_are_not_followed(tmp_path):
    repo = make_repo(tmp_path / "repo")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"private data outside the repo\n")
    (repo / "link.txt").symlink_to(outside)
    doc, files = capture_git(repo)

    assert doc["untracked"] == []
    assert doc["skipped"] == [{"path": "link.txt", "reason": "symlink"}]
    assert outside.read_bytes() not in files.values()


def test_nested_repository_is_skipped(tmp_path):
    repo = make_repo(tmp_path / "repo")
    make_repo(repo / "vendor" / "lib")
    doc, _ = capture_git(repo)
    assert doc["skipped"] == [{"path": "vendor/lib", "reason": "nested repository"}]


def test_git_not_installed(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert capture_git(repo) == (None, {})


def test_git_that_hangs_times_out(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "repo")
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec /bin/sleep 10\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert capture_git(repo, timeout=0.3) == (None, {})
