"""The host and environment snapshot: secrets kept out, packages and torch found, no hangs."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from recorder.capture import environment
from recorder.capture.environment import (
    ENV_ALLOWLIST,
    capture_environment,
    capture_host,
    installed_packages,
    select_env,
    torch_info,
)
from recorder.redact import REDACTED, Redactor

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
DB_PASSWORD = "correct-horse-battery"


@pytest.fixture
def user_env(monkeypatch):
    """A user's shell: secrets, a proxy with a password, and variables that affect results."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pr0xypw@proxy:3128")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setenv("TORCH_HOME", "/data/torch")
    monkeypatch.setenv("TORCH_HUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    monkeypatch.setenv("TF_PROXY", "http://user:pr0xypw@proxy:3128")


@pytest.fixture
def no_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))


def test_host_fields(user_env, no_nvidia_smi):
    host = capture_host(Redactor())
    assert set(host) == {"hostname", "os", "cpu", "python_version", "gpus", "ENV"}
    assert host["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(host["os"], list) and len(host["os"]) == 2


def test_host_keeps_secrets_out(user_env, no_nvidia_smi):
    host = capture_host(Redactor())
    dumped = json.dumps(host)
    for secret in (AWS_SECRET, GITHUB_TOKEN, DB_PASSWORD, "pr0xypw"):
        assert secret not in dumped
    env = host["ENV"]
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["TORCH_HOME"] == "/data/torch"
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert env["TORCH_HUB_TOKEN"] == REDACTED
    assert env["TF_PROXY"] == "http://user:***@proxy:3128"
    assert "AWS_SECRET_ACCESS_KEY" not in env  # not allowlisted at all
    assert "HTTPS_PROXY" not in env


def test_select_env_names_and_prefixes():
    environ = {"OMP_NUM_THREADS": "4", "NCCL_DEBUG": "INFO", "OMP_OTHER": "x", "HOME": "/h"}
    assert select_env(environ) == {"NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4"}
    assert "TORCH_*" in ENV_ALLOWLIST and "CUDA_VISIBLE_DEVICES" in ENV_ALLOWLIST


def test_no_nvidia_smi_means_no_gpus(no_nvidia_smi):
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            pytest.skip("torch sees a GPU here")
    assert capture_host(Redactor({}))["gpus"] == []


def _fake_nvidia_smi(tmp_path, body):
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)


def test_gpus_from_nvidia_smi(monkeypatch, tmp_path):
    _fake_nvidia_smi(tmp_path, 'echo "NVIDIA H100 80GB HBM3, 81559, 550.54.15"')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert environment._nvidia_smi_gpus() == [
        {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver_version": "550.54.15"}
    ]


@pytest.mark.parametrize("body", ["exit 9", "exec sleep 5", "echo garbage"])
def test_broken_nvidia_smi_means_no_gpus(monkeypatch, tmp_path, body):
    _fake_nvidia_smi(tmp_path, body)
    monkeypatch.setenv("PATH", f"{tmp_path}:/bin:/usr/bin")
    monkeypatch.setattr(environment, "_NVIDIA_SMI_TIMEOUT_S", 0.3)
    start = time.monotonic()
    assert environment._nvidia_smi_gpus() == []
    assert time.monotonic() - start < 3


def test_environment_fields():
    env = capture_environment()
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["python"]["executable"] == sys.executable
    assert env["python"]["implementation"]
    assert isinstance(env["platform"], str)


def test_packages_include_pytest_with_its_version():
    packages = capture_environment()["packages"]
    assert packages["pytest"] == pytest.__version__
    assert all("." not in name and name == name.lower() for name in packages)


def test_packages_match_importlib_metadata():
    from importlib import metadata

    expected = {}
    for dist in metadata.distributions():
        name = environment.canonical_name(dist.metadata["Name"])
        expected.setdefault(name, dist.version)
    assert installed_packages() == expected


def test_broken_and_odd_distributions_skipped(tmp_path):
    (tmp_path / "good-1.0.dist-info").mkdir()
    (tmp_path / "good-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: Good.Pkg\nVersion: 1.0\n\nName: not-a-header\n"
    )
    (tmp_path / "broken-2.0.dist-info").mkdir()  # no METADATA
    (tmp_path / "noversion.dist-info").mkdir()
    (tmp_path / "noversion.dist-info" / "METADATA").write_text("Name: noversion\n")
    (tmp_path / "old.egg-info").write_text("Metadata-Version: 1.0\nName: old\nVersion: 0.1\n")
    path = [str(tmp_path), str(tmp_path / "missing"), "/nonexistent.zip"]
    assert installed_packages(path) == {"good-pkg": "1.0", "old": "0.1"}


def _run_python(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PATH": os.path.dirname(sys.executable)},
    )
    return json.loads(done.stdout)


def test_torch_info_never_imports_torch():
    out = _run_python(
        """
        import json, sys
        from recorder.capture.environment import capture_environment, capture_host, torch_info
        from recorder.redact import Redactor
        info = torch_info()
        capture_host(Redactor())
        capture_environment()
        missing = torch_info({"numpy": "2.0"})  # packages as if torch were not installed
        print(json.dumps({"info": info, "missing": missing, "imported": "torch" in sys.modules}))
        """
    )
    assert out["imported"] is False
    assert out["missing"] is None
    packages = installed_packages()
    if "torch" in packages:
        assert out["info"] == {"version": packages["torch"]}
    else:
        assert out["info"] is None


def test_torch_info_after_import():
    pytest.importorskip("torch")  # the user's code imported it
    import torch

    info = torch_info()
    assert info["version"] == torch.__version__
    assert info["threads"] == torch.get_num_threads()
    assert info["cuda"] == torch.version.cuda
    assert info["cuda_available"] == torch.cuda.is_available()
    assert isinstance(info["devices"], list)
    assert "cudnn" in info
