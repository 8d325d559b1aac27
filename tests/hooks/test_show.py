"""`recorder show RUN` says where the first NaN came from and which layers' gradients
vanished or exploded."""

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import recorder
from recorder import cli, render
from recorder.store import open_store


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.k = 1.0

    def forward(self, x):
        return x * self.k


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An embedded store with one run: vanishing at steps 1-2, then a NaN at step 4."""
    path = str(tmp_path_factory.mktemp("show") / "store")

    @recorder.experiment(name="nan_run", store=path)
    def main():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Scale())
        recorder.watch(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for step, k in enumerate([1, 0.01, 0.01, 1, 1, 1]):
            model[2].k = k
            x = torch.randn(3, 4)
            if step == 4:
                x[0, 0] = float("nan")
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()

    main()
    return path


EXPECTED = [
    "NaN/Inf and gradients",
    "  first NaN   module 0 (Linear), forward pass, step 4",
    "then reached 1 (forward), 2 (forward), Sequential (forward)",
    "  non-finite  0 (2 steps, 4-5), 1 (2 steps, 4-5)",
    "  vanishing   0 (steps 1-2, 0.01x the last module's), 1 (steps 1-2, 0.01x",
]


def shown_text(store_path: str, capsys) -> str:
    db = open_store(store_path)
    doc = db.get_run("last")
    events = list(db.db["events"].find({"run_id": doc["_id"]}))
    shown = {"run": doc, "metrics": db.metrics(doc["_id"]), "counts": {}, "diff_bytes": None,
             "events": events}
    render.run_details(render.console(), shown)
    return capsys.readouterr().out


def test_show_section_names_the_origin_and_the_vanishing_layers(store, capsys):
    text = shown_text(store, capsys)
    for line in EXPECTED:
        assert line in text, (line, text)


def test_show_without_events_prints_no_section(store, capsys):
    db = open_store(store)
    doc = db.get_run("last")
    render.run_details(render.console(), {"run": doc, "metrics": {}, "counts": {}})
    assert "NaN/Inf" not in capsys.readouterr().out


def test_odd_event_documents_do_not_hide_the_rest(store, capsys):
    db = open_store(store)
    doc = db.get_run("last")
    events = [{"kind": "nonfinite", "origin": True, "stats": "odd"}, "not a dict",
              {"kind": "vanishing", "step": "x"}]
    render.run_details(render.console(), {"run": doc, "metrics": {}, "counts": {},
                                          "events": events})
    out = capsys.readouterr().out
    assert "first NaN   module ?" in out and "vanishing   ? (from step x" in out


def test_recorder_show_cli(store):
    result = CliRunner().invoke(cli.app, ["show", "last", "--store", store])
    assert result.exit_code == 0, result.output
    for line in EXPECTED:
        assert line in result.output
