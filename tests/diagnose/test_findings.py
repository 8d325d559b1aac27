"""Diagnoses on curves with known onsets and plateaus."""

import math
import random

import pytest

from recorder.diagnose import diagnose, from_events, loss_pairs, overfitting, plateau


def noisy(values, scale, seed=0):
    rng = random.Random(seed)
    return [v + rng.gauss(0, scale) for v in values]


def true_val(s, turn):
    """Falls like the training loss, then a linear rise from step `turn` on."""
    return math.exp(-s / 40) + 0.15 + (0.004 * (s - turn) if s > turn else 0)


def overfit_curves(n=200, turn=80, noise=0.01, seed=0):
    steps = list(range(n))
    train = noisy([math.exp(-s / 40) + 0.05 for s in steps], noise, seed)
    val = noisy([true_val(s, turn) for s in steps], noise, seed + 1)
    return steps, train, val


@pytest.mark.parametrize("turn, noise, seed", [(80, 0.01, 0), (120, 0.03, 1), (50, 0.02, 2)])
def test_overfitting_onset_is_found_near_the_true_step(turn, noise, seed):
    steps, train, val = overfit_curves(turn=turn, noise=noise, seed=seed)
    onset = min(steps, key=lambda s: true_val(s, turn))  # where the noiseless curve turns up
    finding = overfitting(train, val, steps)
    assert finding is not None
    assert abs(finding.step - onset) <= 12, finding.message
    assert finding.message.startswith(f"overfitting from step {finding.step}")


def test_a_single_bump_is_no_alarm():
    steps = list(range(200))
    train = [math.exp(-s / 40) for s in steps]
    val = [math.exp(-s / 40) + 0.1 + (0.5 if 100 <= s < 104 else 0) for s in steps]
    assert overfitting(noisy(train, 0.01), noisy(val, 0.01), steps) is None


def test_no_overfitting_when_validation_keeps_falling_or_training_rises_too():
    steps = list(range(200))
    train = noisy([math.exp(-s / 40) for s in steps], 0.01)
    assert overfitting(train, noisy([t + 0.1 for t in train], 0.01, 3), steps) is None
    rising = [1 + s / 100 for s in steps]
    assert overfitting(rising, [r + 0.1 for r in rising], steps) is None


def test_a_plateau_is_found_with_its_first_and_last_step():
    steps = list(range(300))
    loss = [2.0 - s / 50 if s < 50 else 1.0 if s < 150 else max(0.1, 1.0 - (s - 150) / 50)
            for s in steps]
    finding = plateau(noisy(loss, 0.005), steps)
    assert finding is not None
    assert 45 <= finding.step <= 65 and 130 <= finding.end_step <= 160, finding.message


def test_convergence_at_the_end_is_not_a_plateau():
    steps = list(range(300))
    assert plateau(noisy([math.exp(-s / 30) + 0.2 for s in steps], 0.003), steps) is None


def test_a_loss_that_never_improves_is_a_plateau_from_start_to_end():
    steps = list(range(50))
    finding = plateau([1.0 + s / 1000 for s in steps], steps)
    assert finding.step == 0 and finding.end_step == 49
    assert "never improved" in finding.message


@pytest.mark.parametrize("names, expected", [
    (["train_loss", "val_loss"], [("train_loss", "val_loss")]),
    (["train/loss", "val/loss", "train/acc", "val/acc"],
     [("train/loss", "val/loss"), ("train/acc", "val/acc")]),
    (["loss", "val_loss"], [("loss", "val_loss")]),
    (["training_loss", "validation_loss"], [("training_loss", "validation_loss")]),
    (["loss", "lr", "grad/0/norm"], []),
])
def test_train_validation_pairs(names, expected):
    assert loss_pairs(names) == expected


def test_events_give_the_nan_origin_and_the_vanishing_layers():
    events = [
        {"kind": "nonfinite", "module": "2", "phase": "forward", "step": 7, "origin": False},
        {"kind": "nonfinite", "module": "0", "phase": "forward", "step": 7, "origin": True},
        {"kind": "vanishing", "module": "0", "start_step": 3},
        {"kind": "vanishing", "module": "2", "start_step": 5},
    ]
    found = {f.kind: f for f in from_events(events)}
    assert found["nonfinite"].module == "0" and found["nonfinite"].step == 7
    assert "'0' (forward) at step 7" in found["nonfinite"].message
    assert found["vanishing"].message.startswith("vanishing gradients in 0, 2")


def test_diagnose_a_whole_run():
    steps, train, val = overfit_curves()
    series = {"train_loss": {"steps": steps, "values": train},
              "val_loss": {"steps": steps, "values": val},
              "lr": {"steps": steps, "values": [0.1] * len(steps)}}
    kinds = [f.kind for f in diagnose(series)]
    assert kinds == ["overfitting"]
