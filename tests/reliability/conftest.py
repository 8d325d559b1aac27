"""Real scripts and the real `recorder` command, in subprocesses, with git and the spool
kept inside the test's own folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RECORDER = Path(sys.executable).with_name("recorder")


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of every subprocess: no user git config, no store chosen, the
    spool of server stores under tmp_path, git never looking above tmp_path."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "RECORDER_STORE"):
        monkeypatch.delenv(name, raising=False)
    settings = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CEILING_DIRECTORIES": str(tmp_path),
                "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
                "GIT_PROTOCOL_FROM_USER": "1"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


@pytest.fixture
def python(env):
    """`python(cwd, "train.py", "lr=1", env={...})`: a script run as a user would."""
    def run(cwd, *args, extra: dict | None = None, timeout: float = 120):
        return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, errors="backslashreplace", env={**env, **(extra or {})}, timeout=timeout,
                              check=False)
    return run


@pytest.fixture
def cli(env):
    """`cli(cwd, "ls", "--json")`: the installed `recorder` command."""
    def run(cwd, *args, extra: dict | None = None, timeout: float = 60):
        return subprocess.run([str(RECORDER), *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, errors="backslashreplace", env={**env, **(extra or {})}, timeout=timeout,
                              check=False)
    return run


@pytest.fixture
def git(env):
    def run(cwd, *args) -> str:
        done = subprocess.run(["git", *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()
    return run


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Files under root (text is dedented); returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return root


@pytest.fixture
def files():
    return write
