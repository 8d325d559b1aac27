"""Writes kept on local disk while the database is unreachable.

A spool is one append-only file per run of BSON documents (each write operation
of `Store.apply`), fsync'd on every append. BSON documents carry their own length,
so a file cut short by a crash still yields every complete operation before the cut.
Every operation is idempotent, so delivering one twice is harmless.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .backends import FileLock
from .storable import repaired


class Spool:
    """One run's spool file (`part` names a second file written at exit when the flusher
    is stuck). An append, and a delivery with the removal that follows it, hold the file's
    lock: a `recorder sync` in another process never deletes what a run is appending."""

    def __init__(self, directory: Path, uid: str, part: str = ""):
        self.uid = uid
        self.part = part
        name = f"{uid}.{part}" if part else uid
        self.path = Path(directory) / f"{name}.bson"
        self.lock = FileLock(Path(directory) / f"{name}.lock")

    def append(self, ops: list[dict]) -> None:
        if not ops:
            return
        import bson  # only a run that lost its database pays for it

        with self.lock.hold(), open(self.path, "ab") as f:
            f.write(b"".join(_encoded(bson, op) for op in ops))
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


def _encoded(bson, op: dict) -> bytes:
    """An operation as BSON; one holding a value BSON refuses is kept as its storable copy
    (store/storable.py) rather than failing the append, and every write after it."""
    try:
        return bson.encode(op)
    except Exception:  # InvalidDocument, OverflowError, UnicodeEncodeError...
        fixed = repaired(op)
        if fixed is None:
            raise
        return bson.encode(fixed[0])


def spools(directory: Path) -> list[Spool]:
    """The spools waiting in a folder, each run's main file before its exit file."""
    found = []
    for path in Path(directory).glob("*.bson"):
        uid, _, part = path.stem.partition(".")
        found.append(Spool(directory, uid, part))
    return sorted(found, key=lambda spool: (spool.uid, spool.part))


@dataclass
class Delivery:
    uid: str
    run_id: int | None
    ops: int
    unreadable: int  # trailing bytes that could not be read: the file is kept as `.corrupt`
    kept: Path | None


def deliver(spool: Spool, store) -> Delivery:
    """Apply a spool's operations in order, then remove it. If the store fails midway the
    exception propagates and the spool stays whole: delivering it again is harmless."""
    with spool.lock.hold():
        ops, unreadable = spool.read()
        for op in ops:
            store.apply(op)
        kept = None
        if unreadable:
            kept = spool.path.with_suffix(".corrupt")
            spool.path.rename(kept)
        else:
            spool.remove()
    return Delivery(spool.uid, store.run_id_for(spool.uid), len(ops), unreadable, kept)


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
