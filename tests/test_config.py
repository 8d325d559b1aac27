import enum
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import pytest

from recorder import ConfigError
from recorder.config import bson_safe, config_hash, resolve, split_argv


def train(lr: float = 0.1, epochs: int = 3, name: str = "run", use_amp: bool = False,
          layers: list = (64, 64), out: Path = Path("out"), dropout: float | None = None,
          optim: Literal["sgd", "adam"] = "sgd", seed=0):
    pass


def test_defaults_then_overrides_then_kwargs():
    resolved = resolve(train, (), {"epochs": 5}, {"lr": "0.5", "use_amp": "true"})
    assert resolved.config["lr"] == 0.5 and resolved.config["epochs"] == 5
    assert resolved.config["use_amp"] is True
    assert resolved.kwargs["out"] == Path("out")  # the function gets the real object ...
    assert resolved.config["out"] == "out"  # ... the store gets what BSON can hold
    assert resolved.config["layers"] == [64, 64]


@pytest.mark.parametrize("key, text, expected", [
    ("epochs", "7", 7),
    ("lr", "1e-3", 0.001),
    ("use_amp", "no", False),
    ("layers", "[1, 2, 3]", [1, 2, 3]),
    ("out", "/tmp/x", Path("/tmp/x")),
    ("dropout", "none", None),
    ("dropout", "0.25", 0.25),
    ("optim", "adam", "adam"),
    ("seed", "42", 42),  # unannotated, default 0: read as the default's type
    ("name", "42", "42"),  # a str parameter keeps the text
])
def test_overrides_convert_to_the_annotated_type(key, text, expected):
    assert resolve(train, (), {}, {key: text}).kwargs[key] == expected


@pytest.mark.parametrize("key, text, message", [
    ("epochs", "seven", "config key 'epochs' expects int, got 'seven'"),
    ("use_amp", "maybe", "config key 'use_amp' expects a bool"),
    ("optim", "rmsprop", "expects one of sgd, adam"),
    ("layers", "64", "expects a JSON list"),
])
def test_a_value_that_does_not_convert_names_the_key(key, text, message):
    with pytest.raises(ConfigError, match=message):
        resolve(train, (), {}, {key: text})


def test_an_unknown_key_names_what_is_accepted():
    with pytest.raises(ConfigError) as info:
        resolve(train, (), {}, {"lrr": "1"})
    assert str(info.value).startswith("unknown config key 'lrr' (accepted: lr, epochs, name")
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        resolve(train, (), {"bogus": 1}, {})


def test_a_parameter_without_default_must_be_given():
    def needs(data_dir: str, lr: float = 0.1):
        pass

    with pytest.raises(ConfigError, match="'data_dir' has no default"):
        resolve(needs, (), {}, {})
    assert resolve(needs, (), {}, {"data_dir": "/d"}).config == {"data_dir": "/d", "lr": 0.1}


def test_split_argv_takes_only_key_value_tokens():
    overrides, rest = split_argv(["lr=0.1", "--verbose", "--out=x", "data", "model.depth=3"])
    assert overrides == {"lr": "0.1", "model.depth": "3"}
    assert rest == ["--verbose", "--out=x", "data"]


class Optim(pydantic.BaseModel):
    name: str = "sgd"
    lr: float = 0.1


class TrainConfig(pydantic.BaseModel):
    epochs: int = 3
    optim: Optim = Optim()


def with_model(cfg: TrainConfig):
    pass


def test_a_pydantic_model_parameter_is_the_config_with_dotted_overrides():
    resolved = resolve(with_model, (), {}, {"optim.lr": "0.01", "epochs": "9"})
    assert isinstance(resolved.kwargs["cfg"], TrainConfig)
    assert resolved.kwargs["cfg"].optim.lr == 0.01
    assert resolved.config == {"epochs": 9, "optim": {"name": "sgd", "lr": 0.01}}


def test_a_pydantic_validation_error_names_the_dotted_key():
    with pytest.raises(ConfigError, match="config key 'optim.lr'"):
        resolve(with_model, (), {}, {"optim.lr": "fast"})
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentum'"):
        resolve(with_model, (), {}, {"optim.momentum": "0.9"})


class Color(enum.Enum):
    RED = "red"


def test_documented_conversions_for_storage():
    stored = bson_safe({"t": (1, 2), "p": Path("/a/b"), "n": np.float32(0.5), "i": np.int64(3),
                        "e": Color.RED, "s": {3, 1}})
    assert stored == {"t": [1, 2], "p": "/a/b", "n": 0.5, "i": 3, "e": "red", "s": [1, 3]}
    assert type(stored["i"]) is int


@pytest.mark.parametrize("config, key", [
    ({"a.b": 1}, "a.b"),
    ({"$where": 1}, "$where"),
    ({"outer": {"x.y": 1}}, "outer.x.y"),
    ({"big": 2**64}, "big"),
    ({"model": object()}, "model"),
    ({"nested": [{"f": lambda: 0}]}, "nested[0].f"),
])
def test_what_bson_cannot_hold_is_refused_naming_the_key(config, key):
    with pytest.raises(ConfigError) as info:
        bson_safe(config)
    assert str(info.value).startswith(f"config key {key!r}")


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})
    assert len(config_hash({"x": math.inf})) == 64
