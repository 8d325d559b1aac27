"""Timing metrics are shown by every replay but left out of its verdict, unless asked."""

import io

import pytest
from rich.console import Console

from recorder.replay.compare import compare_metrics, compare_status, is_timing, verdict
from recorder.replay.report import metrics_table


@pytest.mark.parametrize("name", [
    "time", "Time", "epoch_time", "epochTime", "ms/batch", "s/it", "train_runtime", "it/s",
    "samples/s", "tokens/sec", "train_samples_per_second", "eval_steps_per_second",
    "step_ms", "epoch_sec", "duration (s)", "ETA", "latency", "throughput", "Data time",
    "iter_time_ms", "fps",
])
def test_timing(name):
    assert is_timing(name)


@pytest.mark.parametrize("name", [
    "loss", "valid loss", "timestep", "ms_ssim", "lr", "ppl", "Acc@1", "epoch", "accuracy",
    "grad_norm", "v_num", "tokens", "seconds_left_in_epoch", "usage", "step",
])
def test_not_timing(name):
    assert not is_timing(name)


def series(*values):
    return {"steps": list(range(len(values))), "values": list(values)}


def test_a_replay_leaves_timings_out_and_the_table_says_so():
    original = {"loss": series(1.0, 0.5), "ms/batch": series(7.9, 8.1), "time": series(28.2)}
    replayed = {"loss": series(1.0, 0.5), "ms/batch": series(8.3, 7.7), "time": series(30.1)}
    found = compare_metrics(original, replayed, judge_timing=False)
    by_name = {m.name: m for m in found}
    assert not by_name["ms/batch"].judged and by_name["ms/batch"].timing
    assert by_name["loss"].judged and not by_name["loss"].timing
    status = compare_status({"status": "COMPLETED"}, {"status": "COMPLETED"})
    assert verdict(status, found)[0] == "reproduced"
    assert by_name["time"].summary() == "step 0: 28.2 vs 30.1 (timing: not judged)"

    out = io.StringIO()
    metrics_table(Console(file=out, width=120), found)
    assert "ms/batch, time: timing metrics, shown but left out of the verdict " \
           "(--compare-all judges them)" in out.getvalue()

    judged = compare_metrics(original, replayed, judge_timing=True)  # --compare-all
    assert verdict(status, judged)[0] == "diverged"
    assert "timing metrics" not in _table(judged)


def test_ignore_still_works_beside_the_rule():
    found = compare_metrics({"a_time": series(1)}, {"a_time": series(2)}, ignore=["a_*"],
                            judge_timing=True)
    assert not found[0].judged


def _table(metrics):
    out = io.StringIO()
    metrics_table(Console(file=out, width=120), metrics)
    return out.getvalue()
