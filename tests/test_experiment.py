"""The decorator and the run lifecycle, in process, on an in-memory store."""

import math
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pydantic
import pytest

import recorder
from recorder.store import open_store


@pytest.fixture
def store():
    return f"mongomock://{uuid.uuid4().hex}"


def last_run(store):
    return open_store(store).get_run("last")


def test_bare_decorator_records_config_result_and_times(store, monkeypatch):
    monkeypatch.setenv("RECORDER_STORE", store)

    @recorder.experiment
    def train(lr: float = 0.1, epochs: int = 2):
        return {"acc": 0.9}

    before = datetime.now(UTC).replace(tzinfo=None)
    assert train(lr=0.5) == {"acc": 0.9}
    run = last_run(store)
    assert run["status"] == "COMPLETED"
    assert run["experiment"]["name"] == "train"
    assert run["config"] == {"lr": 0.5, "epochs": 2}
    assert run["config_hash"] == recorder.config.config_hash({"lr": 0.5, "epochs": 2})
    assert run["result"] == {"acc": 0.9}
    assert before - timedelta(seconds=1) <= run["start_time"] <= run["stop_time"]
    assert run["stop_time"] <= before + timedelta(seconds=5)  # stored in UTC


def test_decorator_with_arguments(store):
    @recorder.experiment(name="mnist", store=store)
    def train():
        return 1

    train()
    assert last_run(store)["experiment"]["name"] == "mnist"


def test_a_pydantic_model_is_the_config(store):
    class Config(pydantic.BaseModel):
        lr: float = 0.1
        layers: list[int] = [8, 8]

    seen = []

    @recorder.experiment(store=store)
    def train(cfg: Config):
        seen.append(cfg)

    train(lr=0.01)
    assert seen[0].lr == 0.01
    assert last_run(store)["config"] == {"lr": 0.01, "layers": [8, 8]}


def test_failure_reraises_the_users_exception_and_stores_the_trace(store):
    error = ValueError("diverged at step 3")

    @recorder.experiment(store=store)
    def train():
        print("about to fail")
        raise error

    with pytest.raises(ValueError) as info:
        train()
    assert info.value is error
    run = last_run(store)
    assert run["status"] == "FAILED"
    assert "ValueError: diverged at step 3" in "".join(run["fail_trace"])
    assert "about to fail" in run["captured_out"]


def test_ctrl_c_is_interrupted(store):
    @recorder.experiment(store=store)
    def train():
        recorder.log("loss", 1.0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train()
    run = last_run(store)
    assert run["status"] == "INTERRUPTED"
    assert open_store(store).metrics(run["_id"])["loss"]["values"] == [1.0]


def test_metrics_of_every_accepted_type(store):
    torch = pytest.importorskip("torch")

    @recorder.experiment(store=store)
    def train():
        weight = torch.ones(3, requires_grad=True)
        loss = (weight * 2).sum()
        recorder.log("loss", loss)  # a 0-d tensor with a graph: its value is kept, not the graph
        recorder.log("int", 3)
        recorder.log("bool", True)
        recorder.log("np_float", np.float32(0.25))
        recorder.log("np_int", np.int64(7))
        recorder.log("nan", math.nan)
        recorder.log("inf", -math.inf)
        recorder.log({"a": 1.0, "b": 2.0}, step=10)
        for _ in range(3):
            recorder.log("counted", 1.0)
        recorder.log("explicit", 1.0, step=5)
        recorder.log("explicit", 2.0)  # continues after the last step given

    train()
    metrics = open_store(store).metrics(last_run(store)["_id"])
    assert metrics["loss"]["values"] == [6.0]
    assert metrics["int"]["values"] == [3] and metrics["bool"]["values"] == [True]
    assert metrics["np_float"]["values"] == [0.25] and metrics["np_int"]["values"] == [7]
    assert math.isnan(metrics["nan"]["values"][0]) and metrics["inf"]["values"] == [-math.inf]
    assert metrics["a"]["steps"] == [10] and metrics["b"]["values"] == [2.0]
    assert metrics["counted"]["steps"] == [0, 1, 2]
    assert metrics["explicit"]["steps"] == [5, 6]


@pytest.mark.parametrize("value", [[1.0], "0.5", None, {"x": 1}, np.ones(3)])
def test_anything_else_is_a_type_error_naming_the_metric(store, value):
    @recorder.experiment(store=store)
    def train():
        recorder.log("weird", value)

    with pytest.raises(TypeError, match="metric 'weird'"):
        train()


def test_log_outside_a_run_is_a_clear_error():
    with pytest.raises(recorder.NoActiveRun, match="outside a run"):
        recorder.log("loss", 1.0)
    with pytest.raises(recorder.NoActiveRun, match="artifact"):
        recorder.artifact("x")


def test_many_points_span_chunks_in_order(store):
    @recorder.experiment(store=store)
    def train():
        for i in range(2500):
            recorder.log("loss", float(i))

    train()
    loss = open_store(store).metrics(last_run(store)["_id"])["loss"]
    assert loss["steps"] == list(range(2500)) and loss["values"] == [float(i) for i in range(2500)]


def test_artifact_is_stored_with_its_sha256(store, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00weights\xff" * 1000)

    @recorder.experiment(store=store)
    def train():
        return recorder.artifact(path)

    sha = train()
    run = last_run(store)
    assert run["artifacts"] == [{"name": "model.pt", "file_id": sha, "sha256": sha,
                                 "size": path.stat().st_size}]
    assert open_store(store).get_file(sha) == path.read_bytes()


def test_seed_from_config_seeds_random_before_main(store):
    drawn = []

    @recorder.experiment(store=store)
    def train(seed: int = 1234):
        drawn.append(random.random())

    train()
    assert drawn == [random.Random(1234).random()]
    run = last_run(store)
    assert run["seed"] == 1234 and "random" in run["seeded"]


def test_without_a_seed_one_is_generated_and_recorded(store):
    drawn = []

    @recorder.experiment(store=store)
    def train():
        drawn.append(np.random.rand())

    train()
    seed = last_run(store)["seed"]
    assert isinstance(seed, int)
    assert drawn == [np.random.RandomState(seed % 2**32).rand()]


def test_determinism_is_recorded_at_start_and_end(store):
    pytest.importorskip("torch")

    @recorder.experiment(store=store)
    def train():
        pass

    train()
    determinism = last_run(store)["determinism"]
    import torch

    assert determinism["end"]["torch_threads"] == torch.get_num_threads()
    assert "deterministic_algorithms" in determinism["start"]
    assert "CUBLAS_WORKSPACE_CONFIG" in determinism["end"]


def test_heartbeat_sends_only_what_changed(store):
    @recorder.experiment(store=store)
    def train():
        run = recorder.current_run()
        first = run._collect(final=True)
        again = run._collect(final=True)
        print("now something new")
        third = run._collect(final=True)
        return [op["set"] for op in first + again + third if op["op"] == "update_run"]

    updates = train()
    assert set(updates[-2]) == {"heartbeat"}  # nothing changed but the beat
    assert set(updates[-1]) == {"heartbeat", "captured_out"}


def test_a_forked_child_logging_is_ignored_without_deadlock(store, capfd):
    @recorder.experiment(store=store)
    def train():
        recorder.log("loss", 1.0)
        pid = os.fork()
        if pid == 0:  # a DataLoader worker, say
            try:
                for _ in range(3):
                    recorder.log("loss", 99.0)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        recorder.log("loss", 2.0)
        return status

    assert train() == 0
    assert open_store(store).metrics(last_run(store)["_id"])["loss"]["values"] == [1.0, 2.0]
    warnings = [line for line in capfd.readouterr().err.splitlines() if "forked process" in line]
    assert len(warnings) == 1


def test_unreachable_mongodb_does_not_stall_the_run(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    @recorder.experiment(store="mongodb://127.0.0.1:9/recorder")
    def train():
        started = time.monotonic()
        for i in range(100):
            recorder.log("loss", float(i))
        return time.monotonic() - started

    began = time.monotonic()
    assert train() < 0.5  # the loop itself never waited on the network
    assert time.monotonic() - began < 2 + 5 + 1  # at most 2 s at start and 5 s at exit
    spools = list((tmp_path / "recorder" / "spool").glob("*/*.bson"))
    assert len(spools) == 1
    err = capfd.readouterr().err
    assert str(spools[0]) in err and "cannot write to mongodb://127.0.0.1:9/recorder" in err


def test_unknown_store_scheme_is_a_clear_error():
    @recorder.experiment(store="redis://localhost/0")
    def train():
        pass

    with pytest.raises(recorder.StoreError, match="unknown store URL scheme 'redis'"):
        train()


def test_a_result_bson_cannot_hold_is_kept_as_text(store):
    @recorder.experiment(store=store)
    def train():
        return object()

    train()
    assert last_run(store)["result"].startswith("<object object at")


def test_a_nested_decorated_call_records_one_run(store):
    @recorder.experiment(store=store)
    def inner(x: int = 1):
        return x

    @recorder.experiment(store=store)
    def outer():
        return inner(5)

    assert outer() == 5
    assert len(open_store(store).find_runs()) == 1


def test_emitted_documents_are_written_and_replaced_by_id(store):
    @recorder.experiment(store=store)
    def train():
        run = recorder.current_run()
        first = run.emit("events", {"kind": "nonfinite", "step": 3, "count": 1})
        run.emit("events", {"kind": "vanishing", "step": 4})
        time.sleep(1.5)  # a flush in between: the summary below must replace, not duplicate
        run.emit("events", {"_id": first, "kind": "nonfinite", "step": 3, "count": 5})

    train()
    run = last_run(store)
    events = list(recorder.connect(store).events.find({"run_id": run["_id"]}).sort("step", 1))
    assert [(e["kind"], e.get("count")) for e in events] == [("nonfinite", 5), ("vanishing", None)]


def test_find_runs_and_connect_query_by_config(store):
    @recorder.experiment(store=store)
    def train(lr: float = 0.1, optim: str = "sgd", fail: bool = False):
        if fail:
            raise RuntimeError("boom")

    for lr, optim in [(0.001, "adam"), (0.1, "sgd"), (0.005, "sgd")]:
        train(lr=lr, optim=optim)
    with pytest.raises(RuntimeError):
        train(lr=0.0001, fail=True)
    found = recorder.find_runs({"config.lr": {"$lt": 0.01}, "status": "COMPLETED"}, store=store)
    assert [r["config"]["lr"] for r in found] == [0.005, 0.001]  # newest first
    assert recorder.connect(store).runs.count_documents({"config.optim": "sgd"}) == 3


def test_secrets_are_removed_from_the_failure_trace_and_output(store, monkeypatch):
    # built at run time: this file's own uncommitted diff is recorded too, as it should be
    aws, password, token = "wJalrXUtnFEMI" + "/K7MDENGbPxRfiCY", "hunter" + "2pw", "tok-" + "123456"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws)

    @recorder.experiment(store=store)
    def train(db_url: str = f"postgres://admin:{password}@db:5432/x", api_token: str = token):
        print("connecting to", db_url, "with", api_token)
        raise ConnectionError(f"refused: {os.environ['AWS_SECRET_ACCESS_KEY']} at {db_url}")

    with pytest.raises(ConnectionError):
        train()
    run = last_run(store)
    recorded = repr(run)
    for secret in (aws, password, token):
        assert secret not in recorded
    assert "admin:***@db" in "".join(run["fail_trace"]) and "<redacted>" in run["captured_out"]
