"""`recorder.data(path)`: a data file's or directory's sha256 in the run's `data` field,
capped hashing for large files, and what a replay reports when the data changed."""

import hashlib
import importlib
import uuid

import pytest

import recorder
from recorder.data import describe, differences
from recorder.store import open_store

data_hashing = importlib.import_module("recorder.data")  # recorder.data is the function


@pytest.fixture
def store():
    return f"mongomock://{uuid.uuid4().hex}"


def test_declared_data_is_recorded_with_the_run(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "images" / "cats").mkdir(parents=True)
    (tmp_path / "images" / "cats" / "1.png").write_bytes(b"\x89PNG one")
    (tmp_path / "images" / "2.png").write_bytes(b"\x89PNG two")

    @recorder.experiment(store=store)
    def main():
        return recorder.data("train.csv"), recorder.data(tmp_path / "images")

    file_sha, dir_sha = main()
    run = open_store(store).get_run("last")
    by_path = {entry["path"]: entry for entry in run["data"]}
    assert by_path["train.csv"] == {
        "path": "train.csv", "abspath": str(tmp_path / "train.csv"), "kind": "file",
        "sha256": hashlib.sha256(b"a,b\n1,2\n").hexdigest(), "size": 8, "files": 1,
        "sampled": False}
    images = by_path[str(tmp_path / "images")]
    assert images["kind"] == "directory" and images["files"] == 2 and images["size"] == 16
    assert (file_sha, dir_sha) == (by_path["train.csv"]["sha256"], images["sha256"])
    assert differences(run["data"]) == []

    (tmp_path / "images" / "cats" / "1.png").write_bytes(b"\x89PNG changed")
    (tmp_path / "train.csv").unlink()
    assert differences(run["data"]) == [
        {"path": "train.csv", "recorded": file_sha, "now": None},
        {"path": str(tmp_path / "images"), "recorded": dir_sha,
         "now": describe(tmp_path / "images")["sha256"]}]


def test_a_directory_hash_depends_on_names_and_contents(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text("same")
    assert describe(tmp_path / "a")["sha256"] == describe(tmp_path / "b")["sha256"]
    (tmp_path / "b" / "x.txt").rename(tmp_path / "b" / "y.txt")
    assert describe(tmp_path / "a")["sha256"] != describe(tmp_path / "b")["sha256"]


def test_large_files_are_sampled_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(data_hashing, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(data_hashing, "SAMPLE_BYTES", 100)
    big = tmp_path / "big.bin"
    content = bytearray(range(256)) * 10  # 2560 bytes: over the cap
    big.write_bytes(bytes(content))
    entry = describe(big)
    assert entry["sampled"] is True and entry["size"] == 2560
    expected = hashlib.sha256((2560).to_bytes(8, "big") + content[:100] + content[-100:])
    assert entry["sha256"] == expected.hexdigest()
    content[1000] ^= 0xFF  # the middle: not seen, as documented
    big.write_bytes(bytes(content))
    assert describe(big)["sha256"] == entry["sha256"]
    content[-1] ^= 0xFF  # the tail: seen
    big.write_bytes(bytes(content))
    assert describe(big)["sha256"] != entry["sha256"]
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    assert describe(small)["sampled"] is False


def test_data_outside_a_run_or_missing_is_a_clear_error(tmp_path):
    with pytest.raises(recorder.NoActiveRun, match="recorder.data"):
        recorder.data(tmp_path)
    with pytest.raises(FileNotFoundError, match="no file or directory at"):
        describe(tmp_path / "nope")
