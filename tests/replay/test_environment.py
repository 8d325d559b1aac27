"""Environment differences (python, packages, torch/CUDA, GPUs, CPU) and `recorder env`'s
requirements list."""

from packaging.requirements import Requirement

from recorder.capture.environment import capture_environment, capture_host
from recorder.redact import Redactor
from recorder.replay.environment import (
    current_facts,
    determinism_differences,
    differences,
    facts,
    requirements,
)


def recorded_here() -> dict:
    return {"_id": 7, "environment": capture_environment(),
            "host": capture_host(Redactor(environ={}))}


def test_a_run_recorded_here_shows_no_difference():
    recorded = facts(recorded_here())
    assert "python" in recorded and "package pymongo" in recorded
    assert differences(recorded, current_facts(recorded)) == []


def test_every_kind_of_difference_is_listed_python_first():
    run = recorded_here()
    packages = run["environment"]["packages"]
    packages["pymongo"] = "0.0.1"
    del packages["rich"]
    packages["left-pad"] = "1.0"
    run["environment"]["python"]["version"] = "3.10.0"
    run["host"]["cpu"] = "A CPU from elsewhere"
    found = {d.what: (d.recorded, d.now) for d in differences(facts(run), current_facts(
        facts(run)))}
    assert found["python"][0].startswith("3.10.0 ")
    assert found["package pymongo"][0] == "0.0.1"
    assert found["package rich"][0] == "not installed"
    assert found["package left-pad"] == ("1.0", "not installed")
    assert found["cpu"][0] == "A CPU from elsewhere"
    assert next(iter(found)) == "cpu"  # machine facts first, then packages


def test_torch_details_compare_when_both_sides_have_them():
    a = {"environment": {"packages": {"torch": "2.13.0+cpu"},
                         "torch": {"version": "2.13.0+cpu", "cuda": None, "cudnn": None,
                                   "cuda_available": False, "devices": []}}}
    b = {"environment": {"packages": {"torch": "2.13.0+cu121"},
                         "torch": {"version": "2.13.0+cu121", "cuda": "12.1", "cudnn": 90100,
                                   "cuda_available": True, "devices": ["NVIDIA H100"]}},
         "host": {"gpus": [{"name": "NVIDIA H100"}]}}
    found = {d.what: (d.recorded, d.now) for d in differences(facts(a), facts(b))}
    assert found == {"package torch": ("2.13.0+cpu", "2.13.0+cu121"),
                     "torch cuda": ("None", "12.1"), "torch cudnn": ("None", "90100"),
                     "torch cuda_available": ("False", "True"),
                     "torch devices": ("", "NVIDIA H100")}


def test_determinism_settings_at_the_end_are_compared():
    a = {"determinism": {"end": {"torch_threads": 4, "cudnn_benchmark": False}}}
    b = {"determinism": {"end": {"torch_threads": 2, "cudnn_benchmark": False}}}
    [d] = determinism_differences(a, b)
    assert (d.what, d.recorded, d.now) == ("determinism torch_threads", "4", "2")


def test_requirements_pin_every_recorded_package():
    run = {"_id": 3, "environment": {"python": {"version": "3.11.9"}, "packages": {
        "numpy": "2.4.6", "zope-interface": "6.0", "torch": "2.13.0+cpu", "typing-extensions":
        "4.12.2"}}}
    text = requirements(run)
    lines = text.splitlines()
    assert lines[0].startswith("# packages of run 3, recorded with python 3.11.9")
    assert lines[1] == "--extra-index-url https://download.pytorch.org/whl/cpu"
    pins = [Requirement(line) for line in lines[2:]]
    assert [(r.name, str(r.specifier)) for r in pins] == [
        ("numpy", "==2.4.6"), ("torch", "==2.13.0+cpu"), ("typing-extensions", "==4.12.2"),
        ("zope-interface", "==6.0")]
    assert "extra-index-url" not in requirements({"environment": {"packages": {"a": "1"}}})
