"""files.py under faults: a `fs.files` document must always name a complete file, or a
later put of the same content (the same source file in the next run) is skipped forever."""

from __future__ import annotations

import uuid

import pytest

from recorder.store import files as fs
from recorder.store import open_store

DATA = b"def main():\n    pass\n" * 20_000  # two chunks


class WriteFails(Exception):
    pass


class FailingAfter:
    """A database whose writes fail from the `n`-th one on (a connection lost midway)."""

    def __init__(self, db, n: int):
        self._db, self._left = db, n

    def __getitem__(self, name):
        return _Collection(self, self._db[name])


class _Collection:
    def __init__(self, owner: FailingAfter, collection):
        self._owner, self._collection = owner, collection

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name not in ("replace_one", "insert_one", "delete_many", "delete_one", "update_one"):
            return attr

        def write(*args, **kwargs):
            if self._owner._left <= 0:
                raise WriteFails(name)
            self._owner._left -= 1
            return attr(*args, **kwargs)
        return write


@pytest.fixture
def db():
    return open_store(f"mongomock://{uuid.uuid4().hex}").db


def test_put_files_cut_short_is_completed_by_the_next_put(db):
    sha = fs.sha256(DATA)
    for writes in range(3):  # cut after 0, 1 or 2 of its 3 writes (2 chunks, then fs.files)
        with pytest.raises(WriteFails):
            fs.put_files(FailingAfter(db, writes), {sha: DATA})
        assert fs.get_file(db, sha) is None
    assert fs.put_files(db, {sha: DATA}) == 1
    assert fs.get_file(db, sha) == DATA


def test_delete_files_cut_short_never_leaves_a_file_without_its_chunks(db):
    sha = fs.sha256(DATA)
    fs.put_files(db, {sha: DATA})
    with pytest.raises(WriteFails):
        fs.delete_files(FailingAfter(db, 1), [sha])
    fs.put_files(db, {sha: DATA})  # the same file again, as the next run's source
    assert fs.get_file(db, sha) == DATA
