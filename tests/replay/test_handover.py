"""The hand-over to the decorator in the replay's subprocess (RECORDER_REPLAY): the stored
config exactly, the recorded seed, the forced store, `replay_of`, secrets, torch settings."""

import enum
import importlib.util
import os
import random
import stat
import subprocess
import sys
import textwrap
import types
import uuid
from pathlib import Path

import pydantic
import pytest

import recorder
from recorder.capture.seeding import Seeder
from recorder.handover import ENV_VAR, Handover, redacted_keys
from recorder.store import open_store


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"
def mongomock_url() -> str:
    return f"mongomock://{uuid.uuid4().hex}"
def hand_over(tmp_path, monkeypatch, config: dict, **fields) -> Handover:
    handover = Handover(**{"replay_of": 41, "uid": uuid.uuid4().hex, "store": mongomock_url(),
                           "function": "main", "config": config, "seed": 12345, **fields})
    handover.write(tmp_path / "handover.json")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "handover.json"))
    return handover
BETAS = (0.9, 0.99)
def test_the_stored_config_seed_and_store_are_used_exactly(tmp_path, monkeypatch):
    stored = {"lr": 0.5, "betas": [0.9, 0.99], "out": "elsewhere", "mode": "slow",
              "layers": [16, 16]}
    own_store, seen = mongomock_url(), {}
    @recorder.experiment(store=own_store)
    def main(lr: float = 0.1, betas: tuple = BETAS, out: Path = Path("runs"),
             mode: Mode = Mode.FAST, layers: tuple[int, ...] = (8,)):
        seen.update(lr=lr, betas=betas, out=out, mode=mode, layers=layers, draw=random.random())
    handover = hand_over(tmp_path, monkeypatch, stored, function=main.__qualname__)
    main()
    assert seen["lr"] == 0.5 and seen["betas"] is BETAS  # the default object, not a list
    assert seen["out"] == Path("elsewhere") and seen["mode"] is Mode.SLOW
    assert seen["layers"] == (16, 16)
    assert seen["draw"] == random.Random(12345).random()  # the recorded seed, forced
    run = open_store(handover.store).get_run("last")
    assert run["replay_of"] == 41 and run["uid"] == handover.uid and run["seed"] == 12345
    assert run["config"] == stored
    assert open_store(own_store).find_runs() == []  # the decorator's store is overridden
    assert ENV_VAR not in os.environ  # taken once: child processes are not replays
def test_argv_overrides_are_removed_but_the_stored_config_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "lr=0.9", "--data", "x", "epochs=oops"])
    seen = {}
    def main(lr: float = 0.1, epochs: int = 1):
        seen.update(lr=lr, epochs=epochs, argv=list(sys.argv))
    main.__module__ = "__main__"  # as a script run as `python train.py`
    handover = hand_over(tmp_path, monkeypatch, {"lr": 0.5, "epochs": 3},
                         function=main.__qualname__)
    recorder.experiment(main)()
    assert seen == {"lr": 0.5, "epochs": 3, "argv": ["train.py", "--data", "x"]}
    assert open_store(handover.store).get_run("last")["config"] == {"lr": 0.5, "epochs": 3}
def test_redacted_values_are_filled_in_and_redacted_again(tmp_path, monkeypatch, capsys):
    stored = {"api_key": "<redacted>", "lr": 0.1,
              "db": {"host": "h", "password": "<redacted>"}}
    assert redacted_keys(stored) == ["api_key", "db.password"]
    seen = {}
    @recorder.experiment
    def main(api_key: str = "", lr: float = 0.1, db: dict | None = None):
        seen.update(api_key=api_key, password=db["password"])
        print("using", api_key)
    handover = hand_over(tmp_path, monkeypatch, stored, function=main.__qualname__,
                         secrets={"api_key": "sk-live-123456", "db.password": "hunter22"})
    main()
    assert seen == {"api_key": "sk-live-123456", "password": "hunter22"}
    run = open_store(handover.store).get_run("last")
    assert run["config"] == stored
    assert "sk-live-123456" not in run["captured_out"] and "using <redacted>" in run["captured_out"]
def test_a_pydantic_config_is_validated_from_the_stored_one(tmp_path, monkeypatch):
    class Optim(pydantic.BaseModel):
        lr: float = 0.1
        betas: tuple[float, float] = (0.9, 0.99)
    class Config(pydantic.BaseModel):
        optim: Optim = Optim()
        name: str = "default"
    stored = {"optim": {"lr": 0.01, "betas": [0.8, 0.9]}, "name": "recorded"}
    seen = []
    @recorder.experiment
    def main(cfg: Config):
        seen.append(cfg)
    handover = hand_over(tmp_path, monkeypatch, stored, function=main.__qualname__)
    main()
    assert seen[0] == Config(optim=Optim(lr=0.01, betas=(0.8, 0.9)), name="recorded")
    assert open_store(handover.store).get_run("last")["config"] == stored
def test_only_the_replayed_function_takes_the_hand_over(tmp_path, monkeypatch):
    other_store = mongomock_url()
    @recorder.experiment(store=other_store)
    def setup():
        pass
    @recorder.experiment
    def main(x: int = 1):
        return x
    handover = hand_over(tmp_path, monkeypatch, {"x": 2}, function=main.__qualname__)
    setup()
    assert os.environ.get(ENV_VAR) and "replay_of" not in open_store(other_store).get_run(
        "last")
    assert main() == 2
    assert open_store(handover.store).get_run("last")["replay_of"] == 41
def test_a_recorded_key_the_function_lacks_is_a_clear_error(tmp_path, monkeypatch):
    @recorder.experiment
    def main(lr: float = 0.1):
        pass
    hand_over(tmp_path, monkeypatch, {"lr": 0.5, "gone": 1}, function=main.__qualname__)
    with pytest.raises(recorder.ConfigError, match="'gone' is not a parameter of"):
        main()
def test_the_hand_over_file_is_private_and_a_broken_one_is_named(tmp_path, monkeypatch):
    @recorder.experiment(store=mongomock_url())
    def main():
        pass
    hand_over(tmp_path, monkeypatch, {}, function=main.__qualname__)
    assert stat.S_IMODE((tmp_path / "handover.json").stat().st_mode) == 0o600
    (tmp_path / "handover.json").write_text("{not json")
    with pytest.raises(recorder.ReplayError, match="cannot read the replay hand-over"):
        main()
def test_torch_settings_are_applied_when_torch_is_already_imported(monkeypatch):
    """A stand-in torch (the real one is imported by the test below): the settings are set
    with the seed, at start."""
    calls = []
    fake = types.SimpleNamespace(
        manual_seed=lambda seed: calls.append(("seed", seed)),
        set_num_threads=lambda n: calls.append(("threads", n)),
        get_num_interop_threads=lambda: 4,
        set_num_interop_threads=lambda n: calls.append(("interop", n)),
        use_deterministic_algorithms=lambda on, warn_only: calls.append(("det", on, warn_only)),
        backends=types.SimpleNamespace(cudnn=types.SimpleNamespace(
            enabled=True, deterministic=False, benchmark=True)))
    monkeypatch.setitem(sys.modules, "torch", fake)
    Seeder(7, {"torch_threads": 3, "torch_interop_threads": 2, "deterministic_algorithms": True,
               "deterministic_warn_only": False, "cudnn_benchmark": False,
               "cudnn_deterministic": True}).start()
    assert calls == [("seed", 7), ("threads", 3), ("interop", 2), ("det", True, False)]
    assert fake.backends.cudnn.benchmark is False and fake.backends.cudnn.deterministic is True
def test_torch_settings_are_applied_when_the_run_imports_torch(tmp_path):
    if importlib.util.find_spec("torch") is None:  # not imported here: it takes seconds
        pytest.skip("torch is not installed")
    threads = (os.cpu_count() or 1) + 1  # never torch's default
    store = tmp_path / "store"
    Handover(replay_of=1, uid=uuid.uuid4().hex, store=str(store), function="main", config={},
             seed=3, torch={"torch_threads": threads, "deterministic_algorithms": True}
             ).write(tmp_path / "handover.json")
    (tmp_path / "script.py").write_text(textwrap.dedent("""
        import recorder
        @recorder.experiment
        def main():
            import torch
            recorder.log("threads", torch.get_num_threads())
            recorder.log("deterministic", torch.are_deterministic_algorithms_enabled())
        main()
        """))
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, ENV_VAR: str(tmp_path / "handover.json")})
    assert done.returncode == 0, done.stderr
    db = open_store(store)
    run = db.get_run("last")
    metrics = {name: s["values"] for name, s in db.metrics(run["_id"]).items()}
    assert metrics["threads"] == [threads] and metrics["deterministic"] == [True]
    assert run["determinism"]["end"]["torch_threads"] == threads
