"""Properties, over generated inputs, through real `@recorder.experiment` runs on mongomock:

- any JSON-like config whose keys are allowed (no `.`, no leading `$`, no NUL) and whose
  integers fit in 64 bits is stored unchanged (NaN compared as equal to NaN);
- any other is refused before the run starts, with a message naming the key;
- any sequence of logged points is stored in order, each metric with its steps and values.
"""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recorder
from recorder import run as run_module
from recorder.config import config_hash
from recorder.errors import RecorderError
from recorder.store import open_store

INT64 = st.integers(-(2**63), 2**63 - 1)
KEYS = st.text(max_size=6).filter(lambda k: "." not in k and not k.startswith("$")
                                  and "\0" not in k)
SCALARS = st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=8)
CONFIGS = st.dictionaries(KEYS, st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12), max_size=5)
FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def same(a, b) -> bool:
    """Equal with the same types, NaN equal to NaN, at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def recorded(config: dict) -> tuple[str, dict | None]:
    """Run a decorated function with `config` as its keyword arguments on a fresh store."""
    store = f"mongomock://{uuid.uuid4().hex}"

    @recorder.experiment(store=store)
    def train(**kwargs):
        return None

    try:
        train(**config)
    except RecorderError as exc:
        return str(exc), None
    runs = open_store(store).find_runs()
    assert len(runs) == 1
    return "", runs[0]


@FAST
@given(CONFIGS)
def test_an_allowed_config_round_trips_unchanged(config):
    message, run = recorded(config)
    assert message == ""
    assert same(run["config"], config), (run["config"], config)
    assert run["config_hash"] == config_hash(config)


BAD_VALUES = st.one_of(
    st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1),
    st.builds(object), st.complex_numbers(allow_nan=False), st.builds(bytearray, st.binary()),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
            max_size=2),  # lone surrogates: not UTF-8
)
BAD_KEYS = st.one_of(
    st.tuples(KEYS, KEYS).map(lambda p: f"{p[0]}.{p[1]}"),
    KEYS.map(lambda k: "$" + k),
    st.tuples(KEYS, KEYS).map(lambda p: f"{p[0]}\0{p[1]}"),
)


@st.composite
def refused(draw) -> tuple[dict, str]:
    """A valid config with one bad key or value put somewhere in it; and its dotted path."""
    config = draw(CONFIGS)
    where = draw(st.lists(KEYS.filter(bool), max_size=2))
    parent, path = config, []
    for key in where:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
        parent, path = parent[key], [*path, key]
    if draw(st.booleans()):
        key = draw(BAD_KEYS)
        parent[key] = draw(SCALARS)
    else:
        key = draw(KEYS)
        value = draw(BAD_VALUES)
        if draw(st.booleans()):  # inside a list
            items = draw(st.lists(SCALARS, max_size=2))
            parent[key] = [*items, value]
            key = f"{key}[{len(items)}]"
        else:
            parent[key] = value
    return config, ".".join([*path, key])


@FAST
@given(refused())
def test_any_other_config_is_refused_naming_the_key(case):
    config, path = case
    message, run = recorded(config)
    assert run is None, f"stored: {config!r}"
    assert message.startswith(f"config key {path!r}"), (message, path)


METRIC = st.sampled_from(["loss", "acc", "λ/ü", "x" * 40])
VALUES = st.booleans() | INT64 | st.floats()
STEPS = st.none() | st.integers(-(2**62), 2**62)  # a step of 2**63-1 has no next step in int64
POINTS = st.lists(st.tuples(METRIC, VALUES, STEPS), max_size=60)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of at most 7 points instead of 1000, closed at a flush from 3 instead of 100:
    a few dozen points cross several chunks of both kinds."""
    monkeypatch.setattr(run_module.MetricChunks.__init__, "__defaults__", (7, 3))


@FAST
@given(POINTS)
def test_any_sequence_of_points_round_trips_in_order(small_chunks, points):
    store = f"mongomock://{uuid.uuid4().hex}"

    @recorder.experiment(store=store)
    def train():
        for name, value, step in points:
            recorder.log(name, value, step=step)

    train()
    expected: dict[str, dict[str, list]] = {}
    next_step: dict[str, int] = {}
    for name, value, step in points:  # the documented rule: no step, the metric's next one
        step = next_step.get(name, 0) if step is None else step
        next_step[name] = step + 1
        series = expected.setdefault(name, {"steps": [], "values": []})
        series["steps"].append(step)
        series["values"].append(value)
    db = open_store(store)
    stored = db.metrics(db.find_runs()[0]["_id"])
    assert sorted(stored) == sorted(expected)
    for name, series in expected.items():
        assert stored[name]["steps"] == series["steps"], name
        assert same(stored[name]["values"], series["values"]), name
        assert len(stored[name]["timestamps"]) == len(series["steps"])


def test_var_keyword_arguments_arrive_flat_and_var_positional_ones_are_refused():
    """Found by the round trip above: `**extra` used to arrive as `extra={'extra': {...}}`
    (and be stored so); extra positional values, once that was fixed, would have been
    dropped without a word."""
    store = f"mongomock://{uuid.uuid4().hex}"

    @recorder.experiment(store=store)
    def train(lr: float = 0.1, *rest, **extra):
        return {"rest": list(rest), "extra": extra}

    assert train(lr=0.2, momentum=0.9) == {"rest": [], "extra": {"momentum": 0.9}}
    assert open_store(store).find_runs()[0]["config"] == {"lr": 0.2, "momentum": 0.9}
    with pytest.raises(RecorderError, match=r"positional arguments beyond the named "
                                            r"parameters \(\*rest\) have no config key"):
        train(0.2, 5)
    assert len(open_store(store).find_runs()) == 1
