"""Secrets in the environment never land anywhere the recorder writes: not in any document
of any collection, not in GridFS, not in the spool, not in what the CLI prints. A real script
prints some of them and fails with one in its exception message."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import bson
from typer.testing import CliRunner

from recorder import cli as recorder_cli
from recorder.store import backends, open_store

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_R3alLookingT0kenAbcdefghijklmnop1234",
    "DATABASE_URL": "postgres://app:Pg-Pa55word-77@db.internal/x",
    "DB_PASSWORD": "db-S3cret-pw-99",
    "HTTPS_PROXY": "http://proxyuser:Pr0xy-Pa55@proxy:3128",
}
# what must never be written: every value, and the passwords inside the URLs
FORBIDDEN = [*SECRETS.values(), "Pg-Pa55word-77", "Pr0xy-Pa55"]

TRAIN = """
import os
import sys

import recorder
import recorder.store.backends

recorder.store.backends.SERVER_TIMEOUT_MS = 200  # the unreachable store fails fast


@recorder.experiment
def main(steps: int = 3):
    print("aws key:", os.environ["AWS_SECRET_ACCESS_KEY"])
    print("database:", os.environ["DATABASE_URL"], "password", os.environ["DB_PASSWORD"])
    print("proxy:", os.environ["HTTPS_PROXY"], file=sys.stderr)
    for step in range(steps):
        recorder.log("loss", 1.0 / (step + 1))
    raise RuntimeError("GitHub refused the token " + os.environ["GITHUB_TOKEN"])


main()
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leaks(data: bytes | str) -> list[str]:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return [secret for secret in FORBIDDEN if secret.encode() in data]


def test_environment_secrets_are_nowhere_the_recorder_writes(
        tmp_path, python, files, monkeypatch):
    files(tmp_path, {"train.py": TRAIN})
    first = python(tmp_path, "train.py", extra=SECRETS)
    assert first.returncode == 1 and "RuntimeError: GitHub refused" in first.stderr
    assert SECRETS["GITHUB_TOKEN"] in first.stderr  # Python's own traceback: the user's terminal
    unreachable = f"mongodb://127.0.0.1:{closed_port()}/runs"
    second = python(tmp_path, "train.py", extra={**SECRETS, "RECORDER_STORE": unreachable})
    assert second.returncode == 1
    for done in (first, second):  # the recorder's own messages
        said = "\n".join(line for line in done.stderr.splitlines() if "recorder:" in line)
        assert leaks(said) == []
    assert "the run goes on and its writes are kept in" in second.stderr

    # the store: every document of every collection, GridFS included, and the files on disk
    store_dir = tmp_path / ".recorder"
    store = open_store(store_dir)
    run = store.get_run("last")
    assert run["status"] == "FAILED" and "<redacted>" in "".join(run["fail_trace"])
    assert "aws key: <redacted>" in run["captured_out"]
    assert "proxy: http://proxyuser:***@proxy:3128" in run["captured_out"]
    assert "database: postgres://app:***@db.internal/x password <redacted>" in run["captured_out"]
    collections = store.db.list_collection_names()
    assert {"runs", "metrics", "fs.files", "fs.chunks"} <= set(collections)
    documents = 0
    for name in collections:
        for doc in store.db[name].find():
            documents += 1
            assert leaks(bson.encode(doc)) == [], (name, doc.get("_id"))
    assert documents > 5
    on_disk = [p for p in store_dir.rglob("*") if p.is_file()]
    assert on_disk and all(leaks(p.read_bytes()) == [] for p in on_disk)

    # the spool of the run whose store was unreachable
    spooled = list((tmp_path / "cache").rglob("*.bson"))
    assert spooled
    for path in spooled:
        data = path.read_bytes()
        assert leaks(data) == []
        assert b"aws key: <redacted>" in data  # the run's output is in there, cleaned

    # what the CLI prints
    monkeypatch.setattr(backends, "SERVER_TIMEOUT_MS", 200)
    runner = CliRunner()
    outputs = []
    for args in (["ls"], ["show", "last"], ["ls", "--json"], ["show", "last", "--json"],
                 ["sync"], ["sync", "--json"]):
        result = runner.invoke(recorder_cli.app, [*args, "--store", str(store_dir)])
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    failed = runner.invoke(recorder_cli.app, ["sync", "--store", unreachable])
    assert failed.exit_code == 2 and "cannot reach the store" in failed.output
    outputs.append(failed.output)
    assert json.loads(outputs[2])[0]["status"] == "FAILED"
    for output in outputs:
        assert leaks(output) == [], output
    assert "RuntimeError: GitHub refused the token <redacted>" in outputs[1]


def test_the_leak_check_finds_a_leak(tmp_path):
    """The search above is only worth something if it can fail."""
    assert leaks(bson.encode({"a": ["x", {"b": "token " + SECRETS["GITHUB_TOKEN"]}]}))
    assert leaks(b"\x00 Pr0xy-Pa55 \x00") == ["Pr0xy-Pa55"]
    assert leaks(Path(__file__).read_bytes())  # this file holds them all
