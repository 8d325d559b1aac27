"""Where the store is can go wrong too: a MongoDB URL with credentials that cannot connect
(every message masks the password), an embedded store on a network filesystem (a warning:
its locks are unsafe there, share a MongoDB instead)."""

from __future__ import annotations

import socket
import sys

import pytest
from typer.testing import CliRunner

import recorder
from recorder import cli as recorder_cli
from recorder.store import backends, mounts

PASSWORD = "Hunter2-s3cret/pw"  # with a `/`, as people type it: pymongo refuses the URL


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


UNREACHABLE = """
import os
import recorder
import recorder.store.backends

recorder.store.backends.SERVER_TIMEOUT_MS = 200  # fail fast: this is a test


@recorder.experiment
def main():
    recorder.log("loss", 1.0)
    print("using", os.environ["RECORDER_STORE"])
    return 1


main()
"""


@pytest.mark.parametrize("password", ["Hunter2-s3cret", PASSWORD])
def test_credentials_that_cannot_connect_are_masked_in_every_message(
        tmp_path, python, files, monkeypatch, password):
    url = f"mongodb://alice:{password}@127.0.0.1:{closed_port()}/runs"
    masked = url.replace(password, "***")
    files(tmp_path, {"train.py": UNREACHABLE})
    done = python(tmp_path, "train.py", extra={"RECORDER_STORE": url})
    assert done.returncode == 0, done.stderr
    assert password not in done.stderr + done.stdout.replace(f"using {url}", "")
    assert f"cannot write to {masked}" in done.stderr
    assert f"not fully written to {masked}; its remaining writes are in" in done.stderr
    spooled = list((tmp_path / "cache").rglob("*.bson"))
    assert spooled and all(password not in str(p) for p in spooled)
    for path in spooled:
        data = path.read_bytes()
        assert password.encode() not in data
        assert b"using mongodb://alice:***@" in data or b"<redacted>" in data

    monkeypatch.setattr(backends, "SERVER_TIMEOUT_MS", 200)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()
    for args, env in [(["ls", "--store", url], {}), (["show", "last", "--store", url], {}),
                      (["sync", "--store", url], {}), (["ls", "--json"], {"RECORDER_STORE": url}),
                      (["rm", "1", "--store", url], {"RECORDER_DEBUG": "1"})]:
        result = runner.invoke(recorder_cli.app, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert password not in result.output, (args, result.output)
        assert "recorder: error: cannot " in result.output and masked in result.output, (
            args, result.output)
    assert list((tmp_path / "cache").rglob("*.bson")) == spooled  # kept for a later sync


# -- an embedded store on a network filesystem ----------------------------------------------

MOUNTINFO = r"""
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /home rw,relatime shared:5 - nfs4 fs:/export/home rw,vers=4.2
41 40 0:41 / /home/lab/scratch rw,relatime - ext4 /dev/sdb1 rw
42 27 0:42 / /mnt/my\040data rw - fuse.sshfs me@host:/data rw,user_id=0
43 27 0:43 / /lustre rw master:1 propagate_from:2 - lustre 10.0.0.1@o2ib:/fs rw
44 27 0:44 / /tmp rw - tmpfs tmpfs rw
45 44 0:45 / /tmp/share rw - cifs //server/share rw
"""
PROC_MOUNTS = """
/dev/vda / ext4 rw 0 0
fs:/export /data nfs rw,vers=3 0 0
server:/gpfs /gpfs gpfs rw 0 0
"""


@pytest.mark.parametrize("path, expected", [
    ("/home/lab/.recorder", "nfs4"),
    ("/home/lab/scratch/.recorder", None),        # a local disk mounted inside the NFS home
    ("/home", "nfs4"),
    ("/homework/.recorder", None),                 # a prefix of the name, not of the path
    ("/mnt/my data/runs", "fuse.sshfs"),           # \040 is a space
    ("/lustre/project/.recorder", "lustre"),
    ("/tmp/share/x", "cifs"),
    ("/tmp/x", None),
    ("/", None),
])
def test_network_filesystems_are_found_in_mountinfo(path, expected):
    assert mounts.network_filesystem(path, MOUNTINFO) == expected


@pytest.mark.parametrize("path, expected", [("/data/runs", "nfs"), ("/gpfs/u/.recorder", "gpfs"),
                                            ("/database", None), ("/srv", None)])
def test_network_filesystems_are_found_in_proc_mounts(path, expected):
    assert mounts.network_filesystem(path, PROC_MOUNTS) == expected


def test_filesystem_type_of_a_path_and_an_unreadable_table():
    assert mounts.filesystem_type("/home/lab/scratch/x", MOUNTINFO) == "ext4"
    assert mounts.filesystem_type("/anything", "garbage\n\n1 2\n") is None
    assert mounts.network_filesystem("/anything", "") is None


def test_a_run_on_a_network_store_warns_once(tmp_path, monkeypatch, capfd):
    store = tmp_path / "shared" / ".recorder"
    table = f"27 1 254:0 / / rw - ext4 /dev/vda rw\n50 27 0:50 / {tmp_path / 'shared'} rw - " \
            "nfs4 fs:/export rw\n"
    monkeypatch.setattr(mounts, "read_mount_table", lambda: table)

    @recorder.experiment(store=store)
    def train(x: int = 0):
        return x

    train(x=1)
    train(x=2)  # the same store again in this process: said once
    err = capfd.readouterr().err
    assert err.count("recorder: warning") == 1, err
    assert (f"recorder: warning: the store {store} is on a network filesystem (nfs4): its "
            "file locks are not safe there") in err
    assert "use a MongoDB" in err
    assert [r["status"] for r in recorder.find_runs(store=store)] == ["COMPLETED"] * 2

    local = tmp_path / "local"

    @recorder.experiment(store=local)
    def other():
        return None

    other()
    assert "warning" not in capfd.readouterr().err  # not on the network: nothing said


def test_the_real_mount_table_is_read():
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    table = mounts.read_mount_table()
    assert table and mounts.filesystem_type("/", table) is not None
