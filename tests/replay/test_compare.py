"""The verdict: same status (failing the same way), same metric names, same steps and values."""

import math

import pytest

from recorder.replay.compare import (
    COULD_NOT_REPLAY,
    DIVERGED,
    REPRODUCED,
    compare_metrics,
    compare_status,
    same_value,
    verdict,
)

NAN, INF = math.nan, math.inf


def series(values, steps=None):
    return {"steps": list(range(len(values))) if steps is None else steps, "values": values}


@pytest.mark.parametrize("a, b, tolerance, same", [
    (1.0, 1.0, 0, True),
    (1, 1.0, 0, True),
    (NAN, NAN, 0, True),
    (INF, INF, 0, True),
    (-INF, INF, 0, False),
    (INF, 1e308, 0.5, False),  # non-finite values match exactly, whatever the tolerance
    (NAN, 1.0, 0.5, False),
    (0.1 + 0.2, 0.3, 0, False),  # exact by default: one ulp is a difference
    (0.1 + 0.2, 0.3, 1e-12, True),
    (100.0, 101.0, 0.01, True),  # |a-b| = 1 <= 0.01 * 101
    (100.0, 102.0, 0.01, False),
    (0.0, 1e-300, 0.1, False),  # relative: nothing is close to 0 but 0
    (True, True, 0, True),
    (None, None, 0, True),
])
def test_same_value(a, b, tolerance, same):
    assert same_value(a, b, tolerance) is same


def test_identical_metrics_with_nan_are_identical():
    original = {"loss": series([1.0, NAN, 0.5]), "acc": series([0.1, 0.2])}
    found = compare_metrics(original, {k: dict(v) for k, v in original.items()})
    assert [(m.name, m.points, m.identical, m.summary()) for m in found] == [
        ("acc", 2, True, "identical"), ("loss", 3, True, "identical")]


def test_the_first_differing_step_is_named_with_both_values():
    [m] = compare_metrics({"loss": series([1.0, 0.5, 0.25, 0.125], [0, 10, 20, 30])},
                          {"loss": series([1.0, 0.5, 0.26, 0.3], [0, 10, 20, 30])})
    assert not m.identical and (m.step, m.original, m.replayed, m.why) == (20, 0.25, 0.26, "value")
    assert m.summary() == "step 20: 0.25 vs 0.26"


@pytest.mark.parametrize("original, replayed, why, text", [
    (series([1.0, 2.0, 3.0]), series([1.0, 2.0]), "missing point",
     "step 2: 3.0 vs no point in the replay"),
    (series([1.0, 2.0]), series([1.0, 2.0, 3.0]), "extra point",
     "step 2: no point in the original vs 3.0"),
    (series([1.0, 2.0], [0, 1]), series([1.0, 2.0], [0, 2]), "step",
     "point 1: steps differ (1 vs 2)"),
])
def test_a_missing_extra_or_moved_point_is_a_divergence(original, replayed, why, text):
    [m] = compare_metrics({"x": original}, {"x": replayed})
    assert not m.identical and m.why == why and m.summary() == text


def test_a_metric_missing_on_either_side_is_a_divergence():
    found = compare_metrics({"a": series([1.0]), "b": series([1.0])},
                            {"b": series([1.0]), "c": series([2.0])})
    assert [(m.name, m.identical, m.summary()) for m in found] == [
        ("a", False, "not logged by the replay"), ("b", True, "identical"),
        ("c", False, "not in the original")]


def test_tolerance_and_ignored_metrics():
    original = {"loss": series([1.0, 2.0]), "step_time": series([0.1, 0.2])}
    replayed = {"loss": series([1.0, 2.0000001]), "step_time": series([0.3, 0.1])}
    exact = compare_metrics(original, replayed)
    assert [m.identical for m in exact] == [False, False]
    loose = compare_metrics(original, replayed, tolerance=1e-6, ignore=["*_time"])
    assert [(m.identical, m.judged) for m in loose] == [(True, True), (False, False)]
    status = compare_status({"status": "COMPLETED"}, {"status": "COMPLETED"})
    assert verdict(status, loose)[0] == REPRODUCED
    assert verdict(status, exact) == (DIVERGED, "metric 'loss' differs: step 1: 2.0 vs 2.0000001")


def failed(last_line: str) -> dict:
    return {"status": "FAILED", "fail_trace": ["Traceback (most recent call last):\n",
                                               '  File "train.py", line 3, in main\n',
                                               f"{last_line}\n", "\n"]}


def test_a_run_that_failed_must_fail_the_same_way():
    same = compare_status(failed("ValueError: lr too high"), failed("ValueError: lr too high"))
    assert same.same and verdict(same, []) == (REPRODUCED, "same status, every metric identical")
    other = compare_status(failed("ValueError: lr too high"), failed("KeyError: 'lr'"))
    assert verdict(other, [])[0] == DIVERGED
    assert "FAILED (ValueError: lr too high) vs FAILED (KeyError: 'lr')" in verdict(other, [])[1]
    completed = compare_status(failed("ValueError: x"), {"status": "COMPLETED"})
    assert verdict(completed, [])[0] == DIVERGED


def test_a_replay_failing_where_the_original_completed_could_not_replay():
    status = compare_status({"status": "COMPLETED"}, failed("FileNotFoundError: data.csv"))
    assert verdict(status, []) == (COULD_NOT_REPLAY, ("the replay failed where the original "
                                                      "did not: FileNotFoundError: data.csv"))
    running = compare_status({"status": "COMPLETED"}, {"status": "RUNNING"})
    assert verdict(running, [])[0] == COULD_NOT_REPLAY


def test_another_config_is_a_divergence():
    status = compare_status({"status": "COMPLETED"}, {"status": "COMPLETED"})
    assert verdict(status, [], config_same=False)[0] == DIVERGED
