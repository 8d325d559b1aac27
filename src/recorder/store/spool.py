"""Writes kept on local disk while the database is unreachable.

A spool is one append-only file per run of BSON documents (each write operation
of `Store.apply`), fsync'd on every append. BSON documents carry their own length,
so a file cut short by a crash still yields every complete operation before the cut.
Every operation is idempotent, so delivering one twice is harmless.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


class Spool:
    def __init__(self, directory: Path, uid: str):
        self.path = Path(directory) / f"{uid}.bson"

    def append(self, ops: list[dict]) -> None:
        if not ops:
            return
        import bson  # only a run that lost its database pays for it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(b"".join(bson.encode(op) for op in ops))
            f.flush()
            os.fsync(f.fileno())

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def read(self) -> tuple[list[dict], int]:
        """The complete operations, and how many trailing bytes could not be read."""
        if not self.path.exists():
            return [], 0
        return read_ops(self.path.read_bytes())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_ops(data: bytes) -> tuple[list[dict], int]:
    ops, offset = [], 0
    for op, end in _documents(data):
        ops.append(op)
        offset = end
    return ops, len(data) - offset


def _documents(data: bytes) -> Iterator[tuple[dict, int]]:
    import bson

    offset = 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "little", signed=True)
        if size < 5 or offset + size > len(data):
            return
        try:
            doc = bson.decode(data[offset:offset + size])
        except Exception:  # noqa: BLE001 - a torn or corrupted record ends what can be trusted
            return
        offset += size
        yield doc, offset
