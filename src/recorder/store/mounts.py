"""Is the embedded store on a network filesystem? Its `fcntl` locks are not safe there
(DESIGN.md 3): two machines writing one store can lose runs. A run that opens such a store
says so once; many machines share a MongoDB instead.

The filesystem is found from the mount table (`/proc/self/mountinfo`, else `/proc/mounts`):
the mount whose mount point is the longest prefix of the store's real path.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "cifs", "smb3", "smbfs", "gpfs", "beegfs", "ceph", "glusterfs",
    "afs", "9p", "panfs", "orangefs", "pvfs2", "davfs", "sshfs", "fuse.sshfs", "fuse.ceph",
    "fuse.glusterfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.rclone",
    "fuse.beegfs", "fuse.lustre",
})
MOUNT_TABLES = ("/proc/self/mountinfo", "/proc/mounts")
_ESCAPE = re.compile(r"\\([0-7]{3})")  # the kernel writes a space as \040
_warned: set[str] = set()


def filesystem_type(path: str | os.PathLike, table: str) -> str | None:
    """The type of the filesystem holding `path` (absolute, symlinks resolved) according to
    `table`, the text of /proc/self/mountinfo or /proc/mounts; None when no mount holds it."""
    target = os.path.normpath(os.fspath(path))
    best: tuple[int, str] | None = None
    for line in table.splitlines():
        mount = _parse(line)
        if mount is None:
            continue
        point, fstype = mount
        holds = point == "/" or target == point or target.startswith(point.rstrip("/") + "/")
        if holds and (best is None or len(point) >= best[0]):  # a later mount on it wins
            best = (len(point), fstype)
    return best[1] if best else None


def network_filesystem(path: str | os.PathLike, table: str) -> str | None:
    """The network filesystem type ("nfs4", "fuse.sshfs"...) holding `path` according to
    the mount table `table`, or None when it is local or not found."""
    fstype = filesystem_type(path, table)
    return fstype if fstype in NETWORK_FILESYSTEMS else None


def warn_if_network(path: str | os.PathLike) -> str | None:
    """Print, once per store and process, that an embedded store on a network filesystem
    is unsafe to share; returns the filesystem type found, or None."""
    table = read_mount_table()
    fstype = network_filesystem(_existing(Path(path)), table) if table else None
    key = os.fspath(path)
    if fstype and key not in _warned:
        _warned.add(key)
        print(f"recorder: warning: the store {key} is on a network filesystem ({fstype}): "
              "its file locks are not safe there, and runs writing to it from several "
              "machines can be lost. To share runs between machines, use a MongoDB "
              "(store='mongodb://host/db' or RECORDER_STORE).", file=sys.__stderr__, flush=True)
    return fstype


def read_mount_table() -> str | None:
    for table in MOUNT_TABLES:
        try:
            with open(table, encoding="utf-8", errors="surrogateescape") as f:
                return f.read()
        except OSError:
            continue
    return None


def _parse(line: str) -> tuple[str, str] | None:
    """(mount point, filesystem type) of a mountinfo or /proc/mounts line."""
    fields = line.split()
    if fields[:1] and fields[0].isdigit() and "-" in fields[6:]:
        # mountinfo: id parent major:minor root POINT options [optional...] - TYPE source ...
        try:
            return _unescape(fields[4]), fields[fields.index("-", 6) + 1]
        except (ValueError, IndexError):
            return None
    if len(fields) >= 3:  # /proc/mounts: source POINT TYPE options dump pass
        return _unescape(fields[1]), fields[2]
    return None


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def _existing(path: Path) -> str:
    """The real path of `path`, or of its nearest existing parent (a store not created yet)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return os.path.realpath(path)
