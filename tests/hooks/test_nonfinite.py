"""NaN/Inf events: the first module named with its phase and step, the rest as propagation
and per-module summaries; raise and breakpoint modes."""

import math
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import recorder
from recorder import cli

BREAKS: list[dict] = []


def stop(*args, **kwargs):
    """Set as PYTHONBREAKPOINT: keeps the locals of the frame that called breakpoint()."""
    BREAKS.append(dict(sys._getframe(1).f_locals))


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def train(model, steps: int, poison=lambda step, x: None, lr: float = 0.1):
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        x = torch.randn(5, 4, generator=generator)
        poison(step, x)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def nan_in_row_1_at(at: int):
    def poison(step, x):
        if step == at:
            x[1, 2] = float("nan")
    return poison


def test_the_first_module_phase_and_step_are_named(recorded):
    def body():
        model = mlp()
        recorder.watch(model)
        train(model, 3, nan_in_row_1_at(2))
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert origin["origin"] is True
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", "forward", 2)
    assert origin["module_type"] == "Linear"
    stats = origin["stats"]
    assert stats["shape"] == [5, 8] and origin["shape"] == [5, 8]
    assert (stats["nan"], stats["posinf"], stats["neginf"]) == (8, 0, 0)  # row 1: 8 units
    assert math.isfinite(stats["min"]) and stats["min"] < stats["max"]
    # where it went next in that step: propagation, never an origin
    reached = [(p["module"], p["phase"]) for p in origin["propagation"]]
    assert reached[:3] == [("1", "forward"), ("2", "forward"), ("Sequential", "forward")]
    assert ("0", "backward") in reached and all(p["origin"] is False
                                                for p in origin["propagation"])
    assert r.kind("nonfinite_summary") == []  # one bad step: nothing to summarise


def test_later_steps_are_one_summary_per_module(recorded):
    def body():
        model = mlp()
        recorder.watch(model)
        train(model, 8, nan_in_row_1_at(3))  # the weights are NaN from then on
    r = recorded(body)
    assert len(r.kind("nonfinite")) == 1
    summaries = {e["module"]: e for e in r.kind("nonfinite_summary")}
    assert set(summaries) == {"0", "1", "2", "Sequential"}
    for doc in summaries.values():
        assert (doc["first_step"], doc["last_step"], doc["count"]) == (3, 7, 5)
        assert sorted(doc["phases"]) == ["backward", "forward"]
    assert len(r.events) == 1 + 4  # never one event per module per step


def test_nonfinite_counts_in_the_gradient_metrics(recorded):
    def body():
        model = mlp()
        recorder.watch(model)
        train(model, 3, nan_in_row_1_at(1))
    r = recorded(body)
    steps, counts = r.series("grad/0.weight/nonfinite")
    assert steps == [0, 1, 2] and counts[0] == 0 and counts[1] == 32 == counts[2]
    assert math.isnan(r.series("grad/0.weight/norm")[1][1])


def test_a_gradient_made_non_finite_in_backward(recorded):
    class NaNGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    class Poison(nn.Module):
        def forward(self, x):
            return NaNGrad.apply(x)

    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Poison(), nn.Linear(4, 2))
        recorder.watch(model)
        model(torch.randn(3, 4)).sum().backward()
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    # the first output gradient that is not finite, in backward order: the Linear's below
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", "backward", 0)
    assert origin["stats"]["shape"] == [3, 4]
    assert origin["stats"]["posinf"] + origin["stats"]["neginf"] + origin["stats"]["nan"] > 0


def test_an_evaluation_pass_is_checked_too(recorded):
    def body():
        model = mlp()
        recorder.watch(model)
        train(model, 2)
        x = torch.randn(2, 4)
        x[0, 0] = float("inf")
        with torch.no_grad():
            model(x)
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", "forward", 2)


def test_a_sum_that_overflows_is_not_an_event(recorded):
    class Big(nn.Module):
        def forward(self, x):
            return torch.full((4,), 3e38) + 0 * x.sum()

    def body():
        model = nn.Sequential(nn.Linear(2, 2), Big())
        recorder.watch(model)
        model(torch.ones(1, 2)).sum()  # finite values whose sum is +Inf in float32
        with torch.no_grad():
            model(torch.ones(1, 2))
    r = recorded(body)
    assert r.kind("nonfinite") == []


def test_inf_counts_and_dtype(recorded):
    class Clip(nn.Module):
        def forward(self, x):
            return torch.log(x)  # log(0) = -inf

    def body():
        model = nn.Sequential(nn.ReLU(), Clip())
        recorder.watch(model)
        with torch.no_grad():
            model(torch.tensor([[0.0, 1.0, -2.0, 4.0]]))
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert origin["module"] == "1"
    s = origin["stats"]
    assert (s["nan"], s["posinf"], s["neginf"], s["min"]) == (0, 0, 2, 0.0)
    assert s["max"] == pytest.approx(math.log(4.0))
    assert s["dtype"] == "float32"


def test_raise_mode(recorded):
    def body():
        model = mlp()
        recorder.watch(model, nan="raise")
        with pytest.raises(recorder.NonFiniteError) as caught:
            train(model, 4, nan_in_row_1_at(2))
        return caught.value
    r = recorded(body)
    error = r.value
    assert isinstance(error, recorder.RecorderError)
    assert (error.module, error.phase, error.step, error.shape) == ("0", "forward", 2, (5, 8))
    assert (error.nan, error.posinf, error.neginf) == (8, 0, 0)
    assert str(error).startswith("non-finite output of module '0' in the forward pass at step "
                                 "2: shape (5, 8), 8 NaN, 0 +Inf, 0 -Inf, finite values in [")
    [origin] = r.kind("nonfinite")  # recorded before raising
    assert origin["step"] == 2


def test_raise_mode_fails_the_run(mem_store):
    @recorder.experiment(store=mem_store)
    def main():
        model = mlp()
        recorder.watch(model, nan="raise")
        train(model, 4, nan_in_row_1_at(1))

    with pytest.raises(recorder.NonFiniteError, match="module '0'"):
        main()
    from recorder.store import open_store
    run = open_store(mem_store).get_run("last")
    assert run["status"] == "FAILED" and "NonFiniteError" in "".join(run["fail_trace"])


def test_breakpoint_mode_stops_with_module_name_and_tensor_in_scope(recorded, monkeypatch):
    monkeypatch.setenv("PYTHONBREAKPOINT", f"{__name__}.stop")
    BREAKS.clear()

    def body():
        model = mlp()
        recorder.watch(model, nan="breakpoint")
        train(model, 3, nan_in_row_1_at(1))
        return model
    r = recorded(body)
    assert len(BREAKS) == 2  # steps 1 and 2 (the weights stay NaN), once each
    first = BREAKS[0]
    assert first["module"] is r.value[0] and first["name"] == "0"
    assert first["tensor"].shape == (5, 8) and torch.isnan(first["tensor"]).sum() == 8
    assert first["phase"] == "forward" and first["step"] == 1
    assert r.kind("nonfinite")[0]["step"] == 1  # and it was recorded


def test_a_module_used_twice_is_named_on_the_call_that_went_wrong(recorded):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.twice = nn.Linear(4, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x, scale):
            return self.head(self.twice(self.twice(x) * scale))

    def body():
        torch.manual_seed(0)
        model = Net()
        recorder.watch(model)
        model(torch.randn(3, 4), 1.0).sum().backward()
        model(torch.randn(3, 4), float("inf")).sum().backward()  # the second call's input
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert (origin["module"], origin["phase"], origin["step"]) == ("twice", "forward", 1)
    assert [p["module"] for p in origin["propagation"] if p["phase"] == "forward"] == [
        "head", "Net"]


def test_low_precision_sums_do_not_overflow_into_false_alarms(recorded):
    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU()).to(torch.float16)
        recorder.watch(model)
        x = torch.full((64, 64), 30.0, dtype=torch.float16)  # outputs sum far past 65504
        with torch.no_grad():
            out = model(x)
        assert torch.isfinite(out).all() and out.float().sum() > 65504
    assert recorded(body).kind("nonfinite") == []


def test_an_output_changed_in_place_is_named_and_flagged(recorded):
    """`ReLU(inplace=True)` rewrites the Linear's output before the step's one check: the NaN
    survives it and is named where it was made; the event says the values were changed."""
    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
        recorder.watch(model)
        train(model, 2, nan_in_row_1_at(1))
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", "forward", 1)
    assert origin["stats"]["changed_in_place"] is True and origin["stats"]["nan"] == 8
    assert ("1", "forward") in [(p["module"], p["phase"]) for p in origin["propagation"]]


class NaNScaleGrad(torch.autograd.Function):
    """x * scale, whose backward gives `scale` a NaN gradient when told to (and x a finite
    one): a non-finite value that only a parameter's gradient shows."""

    @staticmethod
    def forward(ctx, x, scale, poisoned):
        ctx.save_for_backward(scale)
        ctx.poisoned = poisoned
        return x * scale

    @staticmethod
    def backward(ctx, g):
        (scale,) = ctx.saved_tensors
        grad_scale = torch.full_like(scale, float("nan")) if ctx.poisoned else g.sum().reshape(1)
        return g * scale, grad_scale, None


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.poisoned = False

    def forward(self, x):
        return NaNScaleGrad.apply(x, self.scale, self.poisoned)


def poisoned_at(at: int):
    def body(steps: int = 4):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Scale(), nn.Linear(4, 2))
        handle = recorder.watch(model, every=10)
        for step in range(steps):
            model[1].poisoned = step == at
            model(torch.randn(3, 4)).sum().backward()
        return handle.step
    return body


def test_between_sampled_steps_a_parameter_gradient_is_checked_and_named(recorded):
    """every=10: steps 1-9 keep no module's output gradient but the first and the last;
    every parameter's gradient is still checked, and names its module."""
    r = recorded(poisoned_at(2))
    assert r.value == 4
    [origin] = r.kind("nonfinite")
    assert (origin["module"], origin["phase"], origin["step"]) == ("1", "backward", 2)
    assert origin["stats"]["parameter"] == "1.scale"
    assert origin["stats"]["shape"] == [1] and origin["stats"]["nan"] == 1
    shown = CliRunner().invoke(cli.app, ["show", "last", "--store", r.url])
    assert ("first NaN module 1 (Scale), the gradient of 1.scale, backward pass, step 2"
            in " ".join(shown.output.split())), shown.output


def test_raise_names_the_parameter_whose_gradient_is_not_finite(recorded):
    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Scale(), nn.Linear(4, 2))
        recorder.watch(model, every=10, nan="raise")
        model(torch.randn(3, 4)).sum().backward()
        model[1].poisoned = True
        with pytest.raises(recorder.NonFiniteError) as caught:
            model(torch.randn(3, 4)).sum().backward()
        return caught.value
    error = recorded(body).value
    assert (error.module, error.phase, error.step) == ("1", "backward", 1)
    assert str(error).startswith("non-finite gradient of parameter '1.scale' of module '1' "
                                 "in the backward pass at step 1: shape (1,), 1 NaN")


@pytest.mark.parametrize("phase, at", [("forward", 3), ("backward", 4)])
@pytest.mark.parametrize("every", [1, 10])
def test_between_sampled_steps_the_same_origins_are_named(recorded, every, phase, at):
    """A NaN in the input (forward) or an Inf made by a backward, at a step that every=10
    does not sample: named as on a sampled step."""
    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    class Poison(nn.Module):
        armed = False

        def forward(self, x):
            return InfGrad.apply(x) if self.armed else x

    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), Poison(), nn.Linear(4, 2))
        recorder.watch(model, every=every)
        for step in range(6):
            x = torch.randn(3, 4)
            if phase == "forward" and step == at:
                x[0, 0] = float("nan")
            model[1].armed = phase == "backward" and step == at
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
    r = recorded(body)
    [origin] = r.kind("nonfinite")
    assert (origin["module"], origin["phase"], origin["step"]) == ("0", phase, at)
    assert "parameter" not in origin["stats"]  # an output gradient, kept at every step
    assert r.kind("nonfinite_summary") == []


def test_modules_called_without_their_container_still_count_steps(recorded):
    """The training loop calls the watched model's layers itself, never the model."""
    def body():
        model = mlp()
        handle = recorder.watch(model, every=10)
        for _ in range(3):
            x = model[0](torch.randn(5, 4))
            model[2](model[1](x)).sum().backward()
        return handle.step
    assert recorded(body).value == 3


def test_a_grad_mode_pass_without_backward_then_a_training_pass(recorded):
    """A validation pass left in grad mode (no backward) does not swallow the next step."""
    def body():
        model = mlp()
        handle = recorder.watch(model, every=10)
        for _ in range(3):
            model(torch.randn(5, 4)).sum()  # no backward
            model(torch.randn(5, 4)).sum().backward()
        return handle.step
    assert recorded(body).value == 3
