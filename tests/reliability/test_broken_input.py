"""Broken and hostile input: torn spool files, malformed run documents, NaN and Inf
everywhere, huge configs and output, values no database can store. Each case is said in
a clear message, and nothing that was recorded is lost."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import bson
from typer.testing import CliRunner

import recorder
from recorder import cli as recorder_cli
from recorder.config import config_hash
from recorder.store import open_store
from recorder.store.spool import read_ops

# -- a spool file cut short or corrupted ---------------------------------------------------

SPOOLED = """
import time
import recorder
import recorder.flusher


class Flusher(recorder.flusher.Flusher):  # flush every 50 ms: many records in the spool
    def __init__(self, *args, **kwargs):
        super().__init__(*args, interval=0.05, **kwargs)


recorder.flusher.Flusher = Flusher


@recorder.experiment(store="store")
def main(name: str = "a"):
    for phase in range(4):
        for step in range(phase * 500, (phase + 1) * 500):
            recorder.log("loss", float(step), step=step)
        time.sleep(0.15)
    return name


main(name="torn")
main(name="corrupted")
"""


def test_a_torn_or_corrupted_spool_delivers_its_valid_part_and_says_what_was_not(
        tmp_path, python, cli, files):
    files(tmp_path, {"train.py": SPOOLED, "store/db": "a file where the database folder "
                                                      "belongs: every write fails"})
    done = python(tmp_path, "train.py")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the run goes on and its writes are kept in") == 2
    spools = sorted((tmp_path / "store" / "spool").glob("*.bson"), key=lambda p: p.stat().st_mtime)
    assert len(spools) == 2
    torn, corrupted = spools
    torn_ops, _ = read_ops(torn.read_bytes())
    corrupted_ops, _ = read_ops(corrupted.read_bytes())
    assert len(torn_ops) >= 5 and len(corrupted_ops) >= 5

    # the first file loses the second half of its last record (a crash mid-append) ...
    whole = torn.read_bytes()
    last = len(bson.encode(torn_ops[-1]))
    torn.write_bytes(whole[:len(whole) - last // 2])
    # ... the second gets garbage over its third record (a bad sector)
    data = bytearray(corrupted.read_bytes())
    third = sum(len(bson.encode(op)) for op in corrupted_ops[:2])
    data[third:third + 16] = b"\xff" * 16
    corrupted.write_bytes(bytes(data))

    (tmp_path / "store" / "db").unlink()  # the store works again
    synced = cli(tmp_path, "sync", "--store", "store")
    assert synced.returncode == 0, synced.stderr
    lines = synced.stdout.splitlines()
    assert len(lines) == 2, synced.stdout
    by_run = {}
    for line in lines:
        match = re.match(r"run (\d+): (\d+) writes delivered; the last (\d+) bytes could not be "
                         r"read \(a torn write\): the file is kept as (.+\.corrupt)$", line)
        assert match, line
        by_run[int(match[1])] = (int(match[2]), int(match[3]), match[4])

    store = open_store(tmp_path / "store")
    runs = {r["config"]["name"]: r for r in store.find_runs()}
    assert sorted(runs) == ["corrupted", "torn"]

    # the torn file: every complete record delivered, the torn one reported
    delivered, unreadable, kept = by_run[runs["torn"]["_id"]]
    assert delivered == len(torn_ops) - 1
    assert unreadable == last - last // 2
    assert kept.endswith(".corrupt")
    loss = store.metrics(runs["torn"]["_id"])["loss"]
    assert loss["steps"] == list(range(len(loss["steps"]))) and len(loss["steps"]) >= 500

    # the corrupted file: the two records before the damage, the rest reported
    delivered, unreadable, kept = by_run[runs["corrupted"]["_id"]]
    assert delivered == 2
    assert unreadable == len(data) - third
    assert runs["corrupted"]["status"] == "RUNNING"  # its end was in the unreadable part

    again = cli(tmp_path, "sync", "--store", "store")
    assert again.stdout.strip() == "nothing to sync: no writes are waiting"
    assert len(list((tmp_path / "store" / "spool").glob("*.corrupt"))) == 2  # kept for a person


# -- run documents with fields missing or of the wrong type --------------------------------


def invoke(*args):
    return CliRunner().invoke(recorder_cli.app, [str(a) for a in args])


def test_ls_and_show_say_what_a_malformed_run_document_lacks(tmp_path):
    store = str(tmp_path / "store")

    @recorder.experiment(store=store)
    def good(lr: float = 0.1):
        return lr

    good()
    runs = recorder.connect(store).runs
    runs.insert_one({"_id": 7})
    runs.insert_one({"_id": 8, "status": 5, "config": "lr=1", "start_time": "yesterday",
                     "experiment": {"name": 7, "sources": "train.py"}, "host": [],
                     "git": {"diff_file_id": "f" * 64}, "seed": True})
    runs.insert_one({"_id": 9, "status": "DONE", "experiment": "train",
                     "config": {"lr": 1}, "start_time": runs.find_one({"_id": 1})["start_time"]})

    listing = invoke("ls", "--store", store)
    assert listing.exit_code == 0, listing.output
    notes = [line for line in listing.stdout.splitlines() if line.startswith("run ")]
    assert notes == [  # `ls` reads experiment.name only: a str `experiment` has no name
        ("run 9: incomplete record: missing experiment.name; status 'DONE' is not "
         "one of QUEUED, RUNNING, COMPLETED, FAILED, INTERRUPTED, DIED"),
        ("run 8: incomplete record: experiment.name is an int, not text; status is an int, "
         "not text; start_time is a str, not a date; config is a str, not a mapping"),
        "run 7: incomplete record: missing experiment.name, status, start_time, config",
    ]
    assert "run 1:" not in listing.stdout  # a complete run has no note

    shown = invoke("show", "7", "--store", store)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1].strip() == (
        "incomplete record: missing experiment.name, status, start_time, config, heartbeat, "
        "host.hostname, seed, config_hash, experiment.sources, environment, entrypoint")
    assert "experiment is a str, not a mapping" in invoke("show", "9", "--store", store).stdout
    shown = invoke("show", "8", "--store", store)
    assert shown.exit_code == 0, shown.output  # a diff in GridFS that is not there: no crash
    assert "host is a list, not a mapping" in shown.stdout
    assert "seed is a bool, not an integer" in shown.stdout
    assert "experiment.sources is a str, not a list" in shown.stdout
    assert "diff in GridFS (missing from the store)" in shown.stdout
    assert "incomplete" not in invoke("show", "1", "--store", store).stdout
    for run_id in (7, 8, 9):
        doc = json.loads(invoke("show", run_id, "--store", store, "--json").stdout)
        assert doc["_id"] == run_id
    assert len(json.loads(invoke("ls", "--store", store, "--json").stdout)) == 4


# -- NaN and Inf in the config, the metrics and the result ---------------------------------

NONFINITE = """
import math
import recorder


@recorder.experiment
def main(lr: float = float("nan"), clip: float = 1.0, bounds: list = [-math.inf, math.inf]):
    for value in (math.nan, math.inf, -math.inf, 0.5):
        recorder.log("loss", value)
    recorder.log({"grad": math.inf, "acc": math.nan}, step=3)
    return {"best": math.nan, "worst": -math.inf, "all": [math.inf, math.nan]}


main()
"""


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_nan_and_inf_in_config_metrics_and_result_are_stored_and_shown(tmp_path, python, files):
    files(tmp_path, {"train.py": NONFINITE})
    done = python(tmp_path, "train.py", "clip=-inf")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr

    store = open_store(tmp_path / ".recorder")
    run = store.get_run("last")
    config = {"lr": math.nan, "clip": -math.inf, "bounds": [-math.inf, math.inf]}
    assert same(run["config"], config)
    assert run["config_hash"] == config_hash(run["config"])
    assert same(run["result"], {"best": math.nan, "worst": -math.inf,
                                "all": [math.inf, math.nan]})
    metrics = store.metrics(run["_id"])
    assert same(metrics["loss"]["values"], [math.nan, math.inf, -math.inf, 0.5])
    assert metrics["loss"]["steps"] == [0, 1, 2, 3]
    assert same(metrics["grad"]["values"], [math.inf]) and same(metrics["acc"]["values"],
                                                                [math.nan])

    store_dir = tmp_path / ".recorder"
    listing = invoke("ls", "--store", store_dir)
    assert listing.exit_code == 0 and "nan" in listing.stdout and "-inf" in listing.stdout
    shown = invoke("show", "last", "--store", store_dir)
    assert shown.exit_code == 0, shown.output
    assert "lr = nan" in shown.stdout and "clip = -inf" in shown.stdout
    assert re.search(r"loss\s+4\s+0\.5\s+0\.5\s+0\.5\s+1 NaN, 2 Inf", shown.stdout), shown.stdout
    as_json = strict_json(invoke("show", "last", "--store", store_dir, "--json").stdout)
    assert as_json["config"] == {"lr": "NaN", "clip": "-Infinity",
                                 "bounds": ["-Infinity", "Infinity"]}
    assert as_json["result"]["all"] == ["Infinity", "NaN"]
    listed = strict_json(invoke("ls", "--store", store_dir, "--json").stdout)
    assert listed[0]["result"]["best"] == "NaN"


# -- a 1 MB config, 20 MB of output ---------------------------------------------------------

BIG = """
import json
import sys
import time

import recorder

LINE = "x" * 99


@recorder.experiment
def main(vocab: dict, text: str, sizes: list):
    recorder.log("size", len(json.dumps(vocab)) + len(text))
    return len(vocab)


def shout(lines):
    began = time.perf_counter()
    for i in range(lines):
        print(LINE)
    print("last line", flush=True)
    return time.perf_counter() - began


@recorder.experiment
def loud(lines: int = 200_000):
    return shout(lines)


vocab = {f"word{i}": i for i in range(2_000)}
main(vocab=vocab, text="t" * 600_000, sizes=list(range(50_000)))
baseline = shout(200_000)  # the same output, not recorded
recorded = loud()
print(json.dumps({"baseline": baseline, "recorded": recorded}), file=sys.stderr)
"""


def test_a_1mb_config_and_20mb_of_output(tmp_path, files):
    files(tmp_path, {"big.py": BIG})
    with open(tmp_path / "out.txt", "w") as out:  # 40 MB: a file, not a pipe
        done = subprocess.run([sys.executable, "big.py"], cwd=tmp_path, stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    times = json.loads(done.stderr.strip().splitlines()[-1])
    assert "warning" not in done.stderr

    store = open_store(tmp_path / ".recorder")
    big, loud = sorted(store.find_runs(), key=lambda r: r["_id"])
    assert len(bson.encode(big["config"])) > 1_000_000
    assert big["config"]["vocab"] == {f"word{i}": i for i in range(2_000)}
    assert big["config"]["text"] == "t" * 600_000 and big["config"]["sizes"] == list(range(50_000))
    assert big["status"] == "COMPLETED" and big["result"] == 2_000

    assert loud["status"] == "COMPLETED"
    tail = loud["captured_out"]
    assert 99_000 <= len(tail) <= 100_000 and tail.endswith("x" * 99 + "\nlast line\n")
    # the tee costs little: generous bounds, this is not a benchmark
    assert times["recorded"] < 3 * times["baseline"] + 1.0, times

    listing = invoke("ls", "--store", tmp_path / ".recorder")
    assert listing.exit_code == 0 and len(listing.stdout) < 2000, listing.stdout[:2000]
    shown = invoke("show", big["_id"], "--store", tmp_path / ".recorder")
    assert shown.exit_code == 0 and "text = " + "t" * 100 in shown.stdout
    assert max(len(line.rstrip()) for line in shown.stdout.splitlines()) < 400  # cut, not dumped


# -- values no database can store -----------------------------------------------------------

UNSTORABLE = """
import sys
import recorder


@recorder.experiment
def main(name: str = "ok"):
    run = recorder.current_run()
    recorder.log("big", 2**70)                       # beyond 64 bits
    recorder.log("big", 1)
    run.info["model"] = object()                     # no BSON type
    run.info["layer.weight"] = 1.5                   # a dotted key
    sys.stdout.reconfigure(errors="surrogateescape")
    print("file:", b"caf\\xe9.txt".decode("utf-8", "surrogateescape"))  # not UTF-8
    return name


main()
"""


def test_values_no_database_takes_are_converted_and_said_not_lost(tmp_path, python, files):
    files(tmp_path, {"train.py": UNSTORABLE})
    done = python(tmp_path, "train.py", "--data", b"caf\xe9".decode("utf-8", "surrogateescape"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "recorder: warning" in line]
    assert len(warnings) == 1, done.stderr  # said once, and says what
    assert "some values cannot be stored as they are and were converted" in warnings[0]
    assert "entrypoint.argv[2]: text that is not UTF-8" in warnings[0]

    store = open_store(tmp_path / ".recorder")
    run = store.get_run("last")
    assert run["status"] == "COMPLETED" and run["result"] == "ok"
    assert run["entrypoint"]["argv"] == ["train.py", "--data", "caf\\udce9"]
    assert store.metrics(run["_id"])["big"]["values"] == [float(2**70), 1]
    assert run["info"]["model"].startswith("<object object at")
    assert run["info"]["layer\uff0eweight"] == 1.5
    assert "file: caf\\udce9.txt" in run["captured_out"]
    assert not list((tmp_path / ".recorder" / "spool").glob("*.bson"))


def test_a_config_value_that_is_not_utf8_is_refused_naming_the_key(tmp_path, python, files):
    files(tmp_path, {"train.py": UNSTORABLE})
    done = python(tmp_path, "train.py", "name=" + b"\xff".decode("utf-8", "surrogateescape"))
    assert done.returncode == 2
    assert done.stderr.strip() == ("recorder: error: config key 'name': '\\udcff' is not UTF-8 "
                                   "text (character 0); pass it as UTF-8")


def test_repaired_copies_only_what_cannot_be_stored():
    from bson import Decimal128, ObjectId
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    from recorder.store.storable import network_error, repaired

    # an outage is not the data's fault: such a failure never changes what is written
    assert network_error(ServerSelectionTimeoutError("x")) and network_error(AutoReconnect("x"))
    assert network_error(ConnectionRefusedError()) and not network_error(OverflowError())

    fine = {"op": "update_run", "uid": "u", "set": {"environment.torch": {"v": 1},
                                                   "info": {"id": ObjectId(), "d": Decimal128("1")}}}
    assert repaired(fine) is None  # dotted `$set` paths and BSON's own types are fine
    op = {"op": "update_run", "uid": "u", "set": {"info.best": {"n": 10**400, "$x": b"\xff",
                                                                 "s": "\udcff", 1: [2**64]}}}
    copy, changes = repaired(op)
    assert copy["set"] == {"info.best": {"n": "1" + "0" * 400, "\uff04x": b"\xff",
                                         "s": "\\udcff", "1": [float(2**64)]}}
    assert bson.encode(copy)
    assert len(changes) == 5 and changes[0] == ("info.best.n: the integer 100000000000...(401 "
                                                "digits) does not fit in 64 bits: stored as text")
    assert op["set"]["info.best"]["n"] == 10**400  # the original is left as it was
