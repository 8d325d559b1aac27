"""recorder.watch: what it hooks, when it counts a step, what it stores, and that it leaves
the model as it found it."""

import copy
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import recorder
from recorder import cli
from recorder.hooks import watcher


def mlp(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 3))


def train(model, steps: int, lr: float = 0.1, seed: int = 1) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = torch.randn(5, 4, generator=generator)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = out.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def hooks_left(model: nn.Module) -> list[str]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
             "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_load_state_dict_pre_hooks")
    return [f"{name}.{kind}" for name, m in model.named_modules() for kind in kinds
            if getattr(m, kind, None)]


def test_outside_a_run_is_a_clear_error():
    with pytest.raises(recorder.NoActiveRun, match="recorder.watch was called outside a run"):
        recorder.watch(mlp())


@pytest.mark.parametrize("kwargs, fragment", [
    ({"every": 0}, "every=0"), ({"histograms_every": -1}, "histograms_every=-1"),
    ({"nan": "ignore"}, "nan='ignore'"), ({"vanishing_factor": 1}, "vanishing_factor=1"),
])
def test_bad_arguments_name_the_value(recorded, kwargs, fragment):
    def body():
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
            recorder.watch(mlp(), **kwargs)
        with pytest.raises(TypeError, match="torch.nn.Module"):
            recorder.watch(lambda x: x)
    recorded(body)


def test_import_recorder_does_not_import_torch():
    code = ("import sys, recorder; assert 'torch' not in sys.modules; "
            "recorder.watch; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("every", [1, 10])  # every output's node hooked, or two of them
def test_remove_leaves_no_hook_on_modules_or_tensors(recorded, monkeypatch, every):
    calls = []
    real = watcher.Watch._on_grad
    monkeypatch.setattr(watcher.Watch, "_on_grad",
                        lambda self, *a: (calls.append(1), real(self, *a))[1])

    def body():
        model = mlp(inplace=True)
        handle = recorder.watch(model, every=every)
        train(model, 2)
        assert hooks_left(model) and handle.step == 2
        pending = model(torch.randn(2, 4)).sum()  # a graph made while watched
        handle.remove()
        handle.remove()  # twice is fine
        assert hooks_left(model) == []
        before = len(calls)
        pending.backward()
        assert len(calls) == before  # the hooks put on its nodes are gone too
        assert handle.step == 2
        return handle.step

    r = recorded(body)
    assert r.series("grad/0.weight/norm")[0] == ([0, 1] if every == 1 else [0])


def test_a_step_is_a_backward_pass_not_a_forward(recorded):
    def body():
        model = mlp()
        handle = recorder.watch(model, every=1)
        train(model, 3)
        model.eval()
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(2, 4))
        model.train()
        assert handle.step == 3
        # gradient accumulation: each backward is a step
        for _ in range(2):
            model(torch.randn(2, 4)).sum().backward()
        assert handle.step == 5
    r = recorded(body)
    steps, values = r.series("grad/0.weight/norm")
    assert steps == [0, 1, 2, 3, 4]
    assert values[4] > values[3]  # .grad accumulated: the norm is of the running sum


def test_metrics_names_and_steps_follow_the_schedule(recorded):
    def body():
        model = mlp()
        recorder.watch(model, every=2, histograms_every=3)
        train(model, 7)
    r = recorded(body)
    grad_metrics = {n for n in r.metrics if n.startswith("grad/")}
    params = ["0.weight", "0.bias", "2.weight", "2.bias"]
    modules = ["0", "1", "2", "Sequential"]
    assert grad_metrics == ({f"grad/{p}/{s}" for p in params
                             for s in ("norm", "nonfinite", "mean_abs", "max_abs")}
                            | {f"grad/{m}/out_mean_abs" for m in modules})
    assert r.series("grad/0.weight/norm")[0] == [0, 2, 4, 6]
    assert r.series("grad/0.weight/nonfinite") == ([0, 2, 4, 6], [0, 0, 0, 0])
    assert r.series("grad/1/out_mean_abs")[0] == [0, 2, 4, 6]
    assert r.series("grad/2.bias/max_abs")[0] == [0, 3, 6]
    assert r.series("grad/2.bias/mean_abs")[0] == [0, 3, 6]
    assert sorted({(h["step"], h["kind"]) for h in r.histograms}) == [(0, "grad"), (3, "grad"),
                                                                       (6, "grad")]
    # the container's output is its last layer's output: the same value
    assert r.series("grad/Sequential/out_mean_abs") == r.series("grad/2/out_mean_abs")


def test_statistics_are_those_of_the_gradients(recorded):
    def body():
        model = mlp()
        recorder.watch(model, histograms_every=1)
        x = torch.randn(5, 4)
        out = model(x)
        out.retain_grad()
        out.pow(2).mean().backward()
        return {"norm": model[0].weight.grad.norm().item(),
                "mean_abs": model[0].weight.grad.abs().mean().item(),
                "max_abs": model[0].weight.grad.abs().max().item(),
                "out": out.grad.abs().mean().item()}
    r = recorded(body)
    expected = r.value
    for stat in ("norm", "mean_abs", "max_abs"):
        assert r.series(f"grad/0.weight/{stat}")[1][0] == pytest.approx(expected[stat], rel=1e-5)
    assert r.series("grad/2/out_mean_abs")[1][0] == pytest.approx(expected["out"], rel=1e-5)


def test_histograms_count_every_value(recorded):
    def body():
        model = mlp()
        recorder.watch(model, histograms_every=1, weights=True)
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")
            model[0].weight[1, 1] = float("inf")
            model[0].weight[2, 2] = -float("inf")
            model[2].bias.fill_(0.5)  # a single value
        train(model, 1)
    r = recorded(body)
    docs = {(h["name"], h["kind"]): h for h in r.histograms}
    assert len(docs) == 8  # 4 parameters x grad and weight, one step
    numel = {"0.weight": 32, "0.bias": 8, "2.weight": 24, "2.bias": 3}
    for (name, kind), h in docs.items():
        total = sum(h["counts"]) + h["nan"] + h["posinf"] + h["neginf"]
        assert total == numel[name], (name, kind)
        assert h["step"] == 0
        if h["counts"]:
            assert len(h["counts"]) == 64 and len(h["edges"]) == 65
    w = docs[("0.weight", "weight")]
    assert (w["nan"], w["posinf"], w["neginf"]) == (1, 1, 1)
    assert -1 < w["edges"][0] < w["edges"][-1] < 1  # the finite range
    b = docs[("2.bias", "weight")]
    assert b["edges"][0] == 0.0 and b["edges"][-1] == 1.0 and sum(b["counts"]) == 3


@pytest.mark.parametrize("every", [1, 3])
def test_watched_and_unwatched_runs_give_identical_losses(recorded, every):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(inplace=True),
                                      nn.Linear(16, 16), nn.Tanh())
            self.shared = nn.Linear(16, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = self.body(x)
            h = self.shared(self.shared(h).relu())  # one module used twice
            return self.head(h), {"h": h}

    def losses(watched: bool):
        torch.manual_seed(0)
        model = Net()
        if watched:
            recorder.watch(model, every=every, histograms_every=5, weights=True)
        return train(model, 20)

    plain = losses(False)
    r = recorded(lambda: losses(True))
    assert r.value == plain  # bitwise: the same floats
    assert len(r.series("grad/shared/out_mean_abs")[0]) == len(range(0, 20, every))


def test_tuple_and_dict_outputs_and_a_module_used_twice(recorded):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x), {"b": self.b(x), "n": 3}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.twice = nn.Linear(4, 4)

        def forward(self, x):
            a, d = self.pair(x)
            return self.twice(self.twice(a) + d["b"])

    def body():
        model = Net()
        recorder.watch(model)
        model(torch.ones(2, 4)).sum().backward()
    r = recorded(body)
    names = {n.split("/")[1] for n in r.metrics if n.endswith("/out_mean_abs")}
    assert names == {"pair", "pair.a", "pair.b", "twice", "Net"}


def test_layers_of_different_precisions_in_one_model(recorded):
    """float64 and bfloat16 layers side by side: their checks and statistics in one read."""
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide = nn.Linear(4, 4).double()
            self.narrow = nn.Linear(4, 3).to(torch.bfloat16)

        def forward(self, x):
            return self.narrow(self.wide(x.double()).to(torch.bfloat16)).float()

    def body():
        model = Mixed()
        recorder.watch(model, histograms_every=1)
        for _ in range(2):
            model(torch.randn(5, 4)).pow(2).mean().backward()
    r = recorded(body)
    for name in ("wide.weight", "narrow.weight"):
        steps, values = r.series(f"grad/{name}/norm")
        assert steps == [0, 1] and all(math.isfinite(v) and v > 0 for v in values)
    assert r.kind("nonfinite") == []


def test_a_sparse_embedding_gradient(recorded):
    """`nn.Embedding(sparse=True)`: its statistics are those of the dense gradient; its
    histogram counts the values stored (the rows that received a gradient)."""
    grads = []

    def body():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2))
        recorder.watch(model, histograms_every=1)
        model(torch.tensor([1, 2, 2])).sum().backward()
        grads.append(model[0].weight.grad.to_dense())
    r = recorded(body)
    dense = grads[0]
    assert r.series("grad/0.weight/norm")[1] == [pytest.approx(dense.norm().item())]
    assert r.series("grad/0.weight/mean_abs")[1] == [pytest.approx(dense.abs().mean().item())]
    assert r.series("grad/0.weight/max_abs")[1] == [pytest.approx(dense.abs().max().item())]
    [hist] = [h for h in r.histograms if h["name"] == "0.weight"]
    assert sum(hist["counts"]) == 2 * 4  # rows 1 and 2, coalesced


def test_inplace_activation_gets_its_own_gradient(recorded):
    def body():
        model = mlp(inplace=True)
        recorder.watch(model)
        x = torch.randn(6, 4)
        with torch.no_grad():
            on = model[0](x) > 0
        model(x).sum().backward()  # no "a view was modified in place"
        g = model[2].weight.sum(0).expand(6, 8)  # d(sum)/d(ReLU output), every row
        return g.abs().mean().item(), (g * on).abs().mean().item()
    r = recorded(body)
    relu, linear = r.value  # ReLU's gradient, and Linear's: masked where ReLU was off
    assert r.series("grad/1/out_mean_abs")[1][0] == pytest.approx(relu, rel=1e-5)
    assert r.series("grad/0/out_mean_abs")[1][0] == pytest.approx(linear, rel=1e-5)


def test_several_models_in_one_run(recorded):
    def body():
        a, b, c = mlp(), mlp(), mlp()
        recorder.watch(a)
        recorder.watch(b)
        recorder.watch(c, name="critic")
        for m in (a, b, c):
            train(m, 1)
    r = recorded(body)
    for name in ("grad/0.weight/norm", "grad/model1.0.weight/norm",
                 "grad/critic.0.weight/norm", "grad/critic/out_mean_abs"):
        assert r.series(name)[0] == [0]


def test_copies_of_a_watched_model_are_not_watched(recorded):
    def body():
        model = mlp()
        handle = recorder.watch(model)
        twin = copy.deepcopy(model)
        train(twin, 2)
        assert handle.step == 0
        train(model, 1)
        assert handle.step == 1
    recorded(body)


def test_the_run_ending_stops_the_watch(recorded):
    def body():
        model = mlp()
        return model, recorder.watch(model)
    r = recorded(body)
    model, handle = r.value
    train(model, 1)  # after the run: the hooks take themselves off
    assert hooks_left(model) == [] and handle.step == 0


def test_a_failure_inside_the_watch_stops_the_watch_not_the_training(recorded, monkeypatch,
                                                                    capfd):
    def refuse(tensors, ord=2.0):
        raise RuntimeError("no norm for this kind of tensor")
    monkeypatch.setattr(watcher, "norms", refuse)

    def body():
        model = mlp()
        handle = recorder.watch(model)
        losses = train(model, 3)
        assert hooks_left(model) == [] and "removed" in repr(handle)
        return losses
    r = recorded(body)
    assert len(r.value) == 3 and all(math.isfinite(v) for v in r.value)
    [stopped] = r.kind("watch_stopped")
    assert stopped["step"] == 0 and "no norm for this kind of tensor" in stopped["error"]
    assert "recorder.watch stopped watching Sequential at step 0" in capfd.readouterr().err
    shown = CliRunner().invoke(cli.app, ["show", "last", "--store", r.url])
    assert "watch error Sequential at step 0: RuntimeError: no norm" in " ".join(
        shown.output.split()), shown.output
