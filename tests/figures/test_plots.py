"""Figures checked for content: the marker where the diagnosis says, the red layer, what is
missing said out loud, and files that are real images."""

import math
import random
import uuid

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

import recorder
from recorder import plots
from recorder.cli import app
from recorder.diagnose import overfitting
from recorder.figures import plot_run
from recorder.store import open_store

ORDER = ["0", "1", "2", "3"]
OUT_MEAN_ABS = {"0": 0.0016, "1": 0.002, "2": 0.012, "3": 0.031}  # the vanishing chart


def overfit_series(n=150, turn=70, seed=0):
    rng = random.Random(seed)
    steps = list(range(n))
    train = [math.exp(-s / 30) + 0.05 + rng.gauss(0, 0.01) for s in steps]
    val = [math.exp(-s / 30) + 0.2 + (0.005 * (s - turn) if s > turn else 0) + rng.gauss(0, 0.01)
           for s in steps]
    return steps, train, val


@pytest.fixture
def store():
    return f"mongomock://{uuid.uuid4().hex}"


def record_full_run(store):
    steps, train, val = overfit_series()

    @recorder.experiment(store=store)
    def train_model():
        run = recorder.current_run()
        run.info["watched"] = [{"model": "MLP", "forward_order": ORDER}]
        for step, t, v in zip(steps, train, val, strict=True):
            recorder.log({"train_loss": t, "val_loss": v, "lr": 0.1}, step=step)
            if step % 50 == 0:
                for module, value in OUT_MEAN_ABS.items():
                    recorder.log(f"grad/{module}/out_mean_abs", value, step=step)
                    counts = np.histogram(np.random.default_rng(step).normal(0, value, 500),
                                          bins=64)
                    run.emit("histograms", {"name": f"{module}.weight", "kind": "grad",
                                            "step": step, "edges": counts[1].tolist(),
                                            "counts": counts[0].tolist(), "nan": 0,
                                            "posinf": 0, "neginf": 0})
        run.emit("events", {"kind": "nonfinite", "module": "0", "phase": "forward",
                            "step": 120, "origin": True, "propagation": [
                                {"module": "1", "phase": "forward"},
                                {"module": "2", "phase": "forward"}]})
        run.emit("events", {"kind": "nonfinite_summary", "module": "0", "first_step": 121,
                            "last_step": 140, "count": 20})
        labels = [i % 3 for i in range(300)]
        points = np.random.default_rng(0).normal(size=(300, 16)) + np.array(labels)[:, None] * 3
        recorder.log_embedding("features", points, labels=labels)

    train_model()
    return open_store(store).get_run("last"), steps, train, val


def test_every_figure_is_written_as_a_real_image(store, tmp_path):
    run, *_ = record_full_run(store)
    done = plot_run(open_store(store), "last", tmp_path, "png")
    assert [p.name for p in done.written] == [
        f"run{run['_id']}_{name}.png" for name in
        ("losses", "gradient_flow", "gradient_histograms", "nonfinite", "embeddings")]
    assert done.missing == []
    for path in done.written:
        image = imread(path)
        assert image.shape[0] >= 250 and image.shape[1] >= 350, path
        assert image.std() > 0.01  # not a blank canvas
    svg = plot_run(open_store(store), "last", tmp_path / "svg", "svg").written[0]
    assert svg.read_text().lstrip().startswith("<?xml") and "overfitting-onset" in svg.read_text()


def test_the_overfitting_marker_sits_at_the_computed_step(store):
    run, steps, train, val = record_full_run(store)
    expected = overfitting(train, val, steps)
    stored = [d for d in run["diagnoses"] if d["kind"] == "overfitting"]
    assert stored and stored[0]["step"] == expected.step  # diagnosed when the run ended
    figure = plots.losses(open_store(store).metrics(run["_id"]), [expected])
    markers = [line for ax in figure.axes for line in ax.get_lines()
               if line.get_gid() == "overfitting-onset"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [expected.step] * 2
    assert any(f"overfitting from step {expected.step}" in t.get_text()
               for ax in figure.axes for t in ax.texts)


def test_a_layer_below_the_factor_is_red(store):
    run, *_ = record_full_run(store)
    figure = plots.gradient_flow(open_store(store).metrics(run["_id"]), ORDER)
    bars = figure.axes[0].patches
    colors = [mcolors.to_hex(bar.get_facecolor()) for bar in bars]
    # 0.0016 and 0.002 are over 10x below the last layer's 0.031; 0.012 is not
    assert colors == [plots.VANISHING_COLOR, plots.VANISHING_COLOR, plots.NORMAL_COLOR,
                      plots.NORMAL_COLOR]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ORDER


def test_the_nan_origin_is_marked(store):
    run, *_ = record_full_run(store)
    figure = plots.nonfinite_timeline(open_store(store).documents("events", run["_id"]))
    origins = [c for c in figure.axes[0].collections if c.get_gid() == "origin"]
    assert len(origins) == 1 and origins[0].get_offsets().tolist() == [[120, 0]]
    reached = [c for c in figure.axes[0].collections if c.get_gid() != "origin"]
    assert reached[0].get_offsets().tolist() == [[120, 1], [120, 2]]  # propagation, not origins
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["0", "1", "2"]


def test_a_run_without_gradients_or_validation_says_what_is_missing(store, tmp_path):
    @recorder.experiment(store=store)
    def train_model():
        for step in range(30):
            recorder.log("loss", 1 / (step + 1), step=step)

    train_model()
    done = plot_run(open_store(store), "last", tmp_path)
    assert [p.name.split("_", 1)[1] for p in done.written] == ["losses.png"]
    assert "gradient_flow: no gradient statistics: call recorder.watch(model) to record them" \
        in done.missing
    assert any(m.startswith("embeddings: no embeddings") for m in done.missing)
    figure = plots.losses(open_store(store).metrics(open_store(store).get_run("last")["_id"]))
    assert "no validation metric: overfitting cannot be judged" in figure.texts[0].get_text()


def test_embedding_projection_separates_the_classes():
    labels = np.repeat([0, 1], 100)
    vectors = np.random.default_rng(0).normal(size=(200, 32)) + labels[:, None] * 4
    points = plots.project(vectors)
    assert points.shape == (200, 2)
    first = points[:, 0]
    assert abs(first[labels == 0].mean() - first[labels == 1].mean()) > 10


def test_large_embeddings_are_sampled_down_and_labels_follow(store):
    @recorder.experiment(store=store)
    def train_model():
        recorder.log_embedding("big", np.arange(5000 * 4, dtype=float).reshape(5000, 4),
                               labels=list(range(5000)))

    train_model()
    (doc,) = open_store(store).documents("embeddings", open_store(store).get_run("last")["_id"])
    assert doc["shape"] == [2000, 4] and doc["sampled_from"] == 5000
    rows = np.frombuffer(doc["vectors"], "<f4").reshape(2000, 4)
    assert [int(rows[i, 0]) // 4 for i in (0, 1, 1999)] == [doc["labels"][i] for i in (0, 1, 1999)]


def test_plot_command_lists_what_it_wrote(store, tmp_path):
    record_full_run(store)
    result = CliRunner().invoke(app, ["plot", "last", "--store", store, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(line.startswith("wrote ") for line in lines) == 5
    assert any(line.startswith("diagnosis: overfitting from step") for line in lines)
    bad = CliRunner().invoke(app, ["plot", "last", "--store", store, "--format", "gif"])
    assert bad.exit_code == 2 and "unknown format 'gif'" in bad.stderr


def test_compare_plot_overlays_shared_metrics_with_the_differing_config(store, tmp_path):
    @recorder.experiment(store=store)
    def train_model(lr: float = 0.1, batch: int = 32, seed: int = 0):
        for step in range(20):
            recorder.log({"train_loss": lr / (step + 1), "val_loss": lr / (step + 2)}, step=step)
        if lr > 0.2:
            recorder.log("only_here", 1.0)

    for lr in (0.1, 0.3, 0.5):
        train_model(lr=lr)
    result = CliRunner().invoke(app, ["compare", "1", "2", "3", "--plot", "--store", store,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "compare_1_2_3.png"
    assert f"wrote {path}" in result.stdout and imread(path).shape[0] > 250
    figure = plots.overlay([(f"run {i}", open_store(store).metrics(i)) for i in (1, 2, 3)])
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["train_loss", "val_loss"]
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["run 1", "run 2", "run 3"]
    colors = {line.get_color() for line in figure.axes[0].get_lines()}
    assert len(colors) == 3  # one colour per run


def test_compare_plot_labels_runs_with_the_config_that_differs(store, tmp_path):
    @recorder.experiment(store=store)
    def train_model(lr: float = 0.1, batch: int = 32):
        recorder.log("loss", lr)

    train_model(lr=0.1)
    train_model(lr=0.2)
    from recorder.figures import compare_plot

    path = compare_plot(open_store(store), ["1", "2"], tmp_path, "svg")
    text = path.read_text()
    assert "run 1: lr=0.1" in text and "run 2: lr=0.2" in text and "batch" not in text


def test_the_vanishing_example_plots_its_layers_in_forward_order_with_the_first_red(tmp_path):
    pytest.importorskip("torch")
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "vanishing_gradients.py"
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    store = open_store(tmp_path / ".recorder")
    run = store.get_run("last")
    from recorder.figures import module_order

    order = module_order(run)
    assert order[:3] == ["0", "1", "2"] and order[-1] == "Sequential"
    figure = plots.gradient_flow(store.metrics(run["_id"]), order)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    colors = [mcolors.to_hex(bar.get_facecolor()) for bar in figure.axes[0].patches]
    assert labels == order
    assert colors[0] == plots.VANISHING_COLOR and colors[-1] == plots.NORMAL_COLOR
    assert any(d["kind"] == "vanishing" for d in run["diagnoses"])


def test_tsne_without_scikit_learn_says_how_to_get_it(store, tmp_path):
    pytest.importorskip("numpy")
    try:
        import sklearn  # noqa: F401
        pytest.skip("scikit-learn is installed here")
    except ImportError:
        pass
    record_full_run(store)
    result = CliRunner().invoke(app, ["plot", "last", "--store", store, "--out", str(tmp_path),
                                      "--projection", "tsne"])
    assert result.exit_code == 2
    assert "--projection tsne needs scikit-learn: pip install 'recorder[projections]'" \
        in result.stderr


def test_diagnoses_of_a_run_still_going_are_computed_on_demand(store):
    steps, train, val = overfit_series()
    db = recorder.connect(store)

    @recorder.experiment(store=store)
    def train_model():
        for step, t, v in zip(steps, train, val, strict=True):
            recorder.log({"train_loss": t, "val_loss": v}, step=step)

    train_model()
    db.runs.update_one({"_id": 1}, {"$set": {"status": "RUNNING"}, "$unset": {"diagnoses": 1}})
    result = CliRunner().invoke(app, ["show", "1", "--store", store])
    expected = overfitting(train, val, steps)
    assert f"overfitting from step {expected.step}" in result.stdout
