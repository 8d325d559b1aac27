"""A launched script's config: what argparse parsed, typed, storable, redacted."""

import argparse
import enum
from pathlib import Path

import pytest

from recorder.config import config_hash
from recorder.launch import ArgparseCapture, ScriptConfig, storable
from recorder.redact import Redactor


class Color(enum.Enum):
    RED = "red"


class FakeRun:
    def __init__(self):
        self.config, self.updates, self.function_config = None, {}, None

    def update(self, **fields):
        self.updates.update(fields)


def captured(parse):
    """What the capture saw while `parse()` ran, and what parse() returned."""
    seen = []
    capture = ArgparseCapture(seen.append)
    capture.start()
    try:
        result = parse()
    finally:
        capture.stop()
    return seen, result


def test_parse_args_and_parse_known_args_are_seen_with_defaults():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--flag", action="store_true")
    seen, args = captured(lambda: parser.parse_args(["--epochs", "5"]))
    assert seen == [{"lr": 0.1, "epochs": 5, "flag": False}] and args.epochs == 5
    seen, (args, rest) = captured(lambda: parser.parse_known_args(["--lr", "1", "--other"]))
    assert seen == [{"lr": 1.0, "epochs": 3, "flag": False}] and rest == ["--other"]


def test_subparsers_are_one_parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train")
    train.add_argument("--steps", type=int, default=10)
    seen, _ = captured(lambda: parser.parse_args(["train", "--steps", "7"]))
    assert seen == [{"verbose": False, "command": "train", "steps": 7}]


def test_intermixed_parsing_is_seen_once_done():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*")
    parser.add_argument("--n", type=int, default=1)
    seen, _ = captured(lambda: parser.parse_intermixed_args(["a", "--n", "2", "b"]))
    assert seen[-1] == {"files": ["a", "b"], "n": 2}


def test_a_parse_error_is_the_scripts_and_nothing_is_seen(capsys):
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--n", type=int)
    seen, _ = captured(lambda: pytest.raises(SystemExit, parser.parse_args, ["--n", "x"]))
    assert seen == [] and "invalid int value: 'x'" in capsys.readouterr().err


def test_stop_restores_argparse():
    original = argparse.ArgumentParser.parse_known_args
    capture = ArgparseCapture(lambda values: None)
    capture.start()
    assert argparse.ArgumentParser.parse_known_args is not original
    capture.stop()
    capture.stop()
    assert argparse.ArgumentParser.parse_known_args is original


def test_a_failing_recorder_never_breaks_parsing():
    def boom(values):
        raise RuntimeError("store down")
    capture = ArgparseCapture(boom)
    capture.start()
    try:
        assert argparse.ArgumentParser().parse_args([]) == argparse.Namespace()
    finally:
        capture.stop()


def test_values_become_what_bson_safe_makes_of_them(tmp_path):
    with open(tmp_path / "f.txt", "w") as handle:  # argparse.FileType gives such
        values = {"n": 3, "lr": 0.5, "out": Path("runs/a"), "color": Color.RED, "ids": (1, 2),
                  "optim.lr": 0.01, "optim.wd": 0.0, "file": handle, "big": 2**70,
                  "nested": argparse.Namespace(a=1), "$weird": 1, "none": None}
        stored = storable(values)
    assert stored["n"] == 3 and type(stored["n"]) is int
    assert stored["out"] == "runs/a" and stored["color"] == "red" and stored["ids"] == [1, 2]
    assert stored["optim"] == {"lr": 0.01, "wd": 0.0}
    assert stored["file"].startswith("<_io.TextIOWrapper name=")
    assert stored["big"] == str(2**70) and stored["nested"] == {"a": 1}
    assert stored["_weird"] == 1 and stored["none"] is None


def test_a_dotted_dest_that_clashes_is_kept_flat():
    assert storable({"optim": "adam", "optim.lr": 0.1}) == {"optim": "adam", "optim_lr": 0.1}


def test_script_config_follows_the_parses_and_redacts_secrets():
    redactor = Redactor(environ={})
    config = ScriptConfig(redactor, ["--lr", "0.5", "--api-key", "sk-123456"])
    assert config.stored == {"argv": ["--lr", "0.5", "--api-key", "sk-123456"]}
    run = FakeRun()
    config.parsed({"lr": 0.5, "api_key": "sk-123456"}, run)
    config.parsed({"seed": 1}, run)
    assert config.stored == {"lr": 0.5, "api_key": "<redacted>", "seed": 1}
    assert run.config == config.stored
    assert run.updates == {"config": config.stored, "config_hash": config_hash(config.stored)}
    assert redactor.text("key sk-123456") == "key <redacted>"
