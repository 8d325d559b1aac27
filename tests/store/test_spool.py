"""The spool: write operations kept on disk while the store is unreachable, read back whole."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import bson
import pytest

from recorder.store.spool import Spool

WHEN = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # BSON keeps milliseconds
UID = "0123456789abcdef0123456789abcdef"


def sample_ops() -> list[dict]:
    """One operation of each kind a run spools, with the values JSON could not keep."""
    return [
        {"op": "insert_run", "doc": {"uid": UID, "start_time": WHEN, "config": {"clip": math.inf},
                                     "status": "RUNNING"}},
        {"op": "files", "files": {"ab" * 32: b"\x00\xffbinary\n", "cd" * 32: b""}},
        {"op": "metrics", "uid": UID, "insert": [],
         "replace": [{"_id": f"{UID}:0:loss", "name": "loss", "seq": 0, "steps": [0, 1, 2],
                      "values": [math.nan, math.inf, -math.inf], "timestamps": [1.5, 2.5, 3.5]}]},
        {"op": "update_run", "uid": UID, "set": {"heartbeat": WHEN, "status": "COMPLETED",
                                                 "environment.torch": None}},
    ]


def normalized(value):
    """Comparable values: NaN equal to NaN, datetimes as aware UTC (BSON gives naive UTC)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@pytest.fixture
def spool(tmp_path) -> Spool:
    return Spool(tmp_path / "spool", UID)


def test_append_and_read_round_trip(spool):
    ops = sample_ops()
    spool.append(ops[:2])
    spool.append([])  # nothing to keep: the file is not touched
    spool.append(ops[2:])
    read, unreadable = spool.read()
    assert unreadable == 0
    assert normalized(read) == normalized(ops)
    assert isinstance(read[1]["files"]["ab" * 32], bytes)
    assert read[0]["doc"]["start_time"].replace(tzinfo=UTC) == WHEN


def test_a_missing_or_empty_spool_reads_as_nothing(spool):
    assert not spool.exists()
    assert spool.read() == ([], 0)
    spool.append([])
    assert not spool.exists()
    spool.append(sample_ops())
    assert spool.exists()
    spool.remove()
    spool.remove()  # twice is fine
    assert spool.read() == ([], 0)


def test_a_spool_truncated_mid_record_yields_the_complete_ops(spool):
    ops = sample_ops()
    spool.append(ops)
    whole = spool.path.read_bytes()
    last_start = len(whole) - len(bson.encode(ops[-1]))
    for cut in range(last_start + 1, len(whole)):  # every cut inside the last record
        spool.path.write_bytes(whole[:cut])
        read, unreadable = spool.read()
        assert normalized(read) == normalized(ops[:-1]), cut
        assert unreadable == cut - last_start > 0


@pytest.mark.parametrize("garbage", [
    b"\x00",
    b"not bson at all, just text",
    b"\x10\x00\x00\x00" + b"\xff" * 12,  # a plausible length, then nonsense
    b"\x05\x00\x00\x00\x01",  # a length, then a byte where the terminating NUL belongs
    b"\xff\xff\xff\xff" + b"\x00" * 20,  # a negative length
])
def test_garbage_after_valid_records_is_counted_not_read(spool, garbage):
    ops = sample_ops()
    spool.append(ops)
    with open(spool.path, "ab") as f:
        f.write(garbage)
    read, unreadable = spool.read()
    assert normalized(read) == normalized(ops)
    assert unreadable == len(garbage)

