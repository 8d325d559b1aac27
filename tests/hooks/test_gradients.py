"""Vanishing/exploding: the one definition (`classify`) and its events, one per episode."""

import math

import pytest
import torch
from torch import nn

import recorder
from recorder.hooks.gradients import EXPLODING_FACTOR, VANISHING_FACTOR, classify


def test_classify_compares_with_the_last_module_in_forward_order():
    values = {"0": 0.001, "1": 0.02, "2": 0.5, "3": 2.0, "head": 0.1}
    assert classify(values) == {"0": "vanishing", "3": "exploding"}
    assert classify(values, factor=4) == {"0": "vanishing", "1": "vanishing", "2": "exploding",
                                          "3": "exploding"}
    assert classify(values, factor=10, exploding_factor=30) == {"0": "vanishing"}
    assert VANISHING_FACTOR == EXPLODING_FACTOR == 10


@pytest.mark.parametrize("values", [
    {}, {"0": 1.0, "head": 0.0}, {"0": 1.0, "head": math.nan}, {"0": 1.0, "head": math.inf},
])
def test_classify_without_a_usable_reference_says_nothing(values):
    assert classify(values) == {}


def test_classify_skips_non_finite_values_and_the_border_is_exclusive():
    assert classify({"0": math.nan, "1": math.inf, "2": 0.1, "3": 10.0, "head": 1.0}) == {}
    assert classify({"0": 0.0, "head": 1.0}) == {"0": "vanishing"}


class Scale(nn.Module):
    """Multiplies by `k`: the gradient reaching the layers below is k times the one above."""

    def __init__(self):
        super().__init__()
        self.k = 1.0

    def forward(self, x):
        return x * self.k


def test_vanishing_and_exploding_events_start_and_end(recorded):
    schedule = [1, 1, 0.01, 0.01, 0.01, 1, 100, 100, 1, 0.001]

    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Scale())
        recorder.watch(model)
        for k in schedule:
            model[1].k = k
            model(torch.randn(3, 4)).pow(2).sum().backward()
    r = recorded(body)
    vanishing, exploding = r.kind("vanishing"), r.kind("exploding")
    assert [(e["module"], e["start_step"], e["end_step"], e["last_step"]) for e in vanishing] == [
        ("0", 2, 5, 4), ("0", 9, None, None)]  # the last one still on at the end
    assert [(e["module"], e["start_step"], e["end_step"], e["last_step"]) for e in exploding] == [
        ("0", 6, 8, 7)]
    first = vanishing[0]
    assert first["phase"] == "backward" and first["step"] == 2
    assert first["stats"]["reference_module"] == "Sequential"
    assert first["stats"]["ratio"] == pytest.approx(0.01, rel=1e-4)
    assert first["stats"]["factor"] == 10


def test_the_factors_are_parameters(recorded):
    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Scale())
        model[1].k = 0.2
        recorder.watch(model, vanishing_factor=4)
        model(torch.randn(3, 4)).sum().backward()
    assert [e["module"] for e in recorded(body).kind("vanishing")] == ["0"]


def test_checked_only_on_the_every_steps(recorded):
    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Scale())
        recorder.watch(model, every=3)
        for k in [1, 0.01, 0.01, 0.01, 1, 1, 1]:
            model[1].k = k
            model(torch.randn(3, 4)).sum().backward()
    [event] = recorded(body).kind("vanishing")
    assert (event["start_step"], event["last_step"], event["end_step"]) == (3, 3, 6)
