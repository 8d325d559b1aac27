"""What differs between the environment a run recorded and another one (this machine, or
another run's): python, installed packages, torch and CUDA, GPUs and CPU; and the recorded
packages as a requirements list to install from.

The recorder never imports torch itself: when the recorded run had imported torch (so its
CUDA build, cuDNN and devices were recorded), this machine's are read by importing torch in
a child process (`TORCH_PROBE_TIMEOUT` seconds at most).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..capture.environment import capture_host, installed_packages
from ..redact import Redactor

TORCH_PROBE_TIMEOUT = 120.0
NOT_INSTALLED = "not installed"
_TORCH_DETAILS = ("cuda", "cudnn", "cuda_available", "devices")
_PROBE = ("import json; from recorder.capture.environment import torch_info; "
          "print(json.dumps(torch_info()))")


@dataclass
class Difference:
    what: str  # "python", "package numpy", "torch cuda", "gpus", ...
    recorded: str
    now: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def facts(run: dict) -> dict[str, str]:
    """The comparable facts a run recorded, flat: {"python": "3.11.9 CPython", ...}."""
    env = run.get("environment") if isinstance(run.get("environment"), dict) else {}
    host = run.get("host") if isinstance(run.get("host"), dict) else {}
    python = env.get("python") if isinstance(env.get("python"), dict) else {}
    found: dict[str, str] = {}
    if python.get("version") or host.get("python_version"):
        found["python"] = " ".join(str(v) for v in (python.get("version")
                                                    or host.get("python_version"),
                                                    python.get("implementation")) if v)
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    found.update({f"package {name}": str(version) for name, version in packages.items()})
    torch = env.get("torch") if isinstance(env.get("torch"), dict) else {}
    found.update(_torch_facts(torch))
    if isinstance(host.get("gpus"), list):
        found["gpus"] = _gpu_text(host["gpus"])
    if host.get("cpu"):
        found["cpu"] = str(host["cpu"])
    return found


def current_facts(recorded: dict[str, str], path: Sequence[str] | None = None) -> dict[str, str]:
    """This machine's facts, for the keys `recorded` has (torch details by a child process
    only when they were recorded)."""
    import platform

    found = {"python": f"{platform.python_version()} {platform.python_implementation()}"}
    found.update({f"package {name}": version
                  for name, version in installed_packages(list(path) if path else None).items()})
    if any(key.startswith("torch ") for key in recorded) and "package torch" in found:
        found.update(_torch_facts(probe_torch()))
    if "gpus" in recorded or "cpu" in recorded:
        host = capture_host(Redactor(environ={}))
        found["gpus"] = _gpu_text(host.get("gpus") or [])
        if host.get("cpu"):
            found["cpu"] = str(host["cpu"])
    return found


def differences(recorded: dict[str, str], other: dict[str, str]) -> list[Difference]:
    """Every fact that differs; a package on one side only shows as `not installed`."""
    keys = [k for k in recorded if k in other or k.startswith("package ")]
    keys += [k for k in other if k.startswith("package ") and k not in recorded]
    found = [Difference(k, recorded.get(k, NOT_INSTALLED), other.get(k, NOT_INSTALLED))
             for k in keys if recorded.get(k, NOT_INSTALLED) != other.get(k, NOT_INSTALLED)]
    return sorted(found, key=lambda d: (d.what.startswith("package "), d.what))


def determinism_differences(original: dict, replayed: dict) -> list[Difference]:
    """Settings that change results (thread counts, deterministic algorithms...) as they
    were at the end of each run."""
    def end(run):
        det = run.get("determinism") if isinstance(run.get("determinism"), dict) else {}
        return det.get("end") if isinstance(det.get("end"), dict) else {}
    a, b = end(original), end(replayed)
    return [Difference(f"determinism {key}", str(a.get(key)), str(b.get(key)))
            for key in sorted(set(a) & set(b)) if a.get(key) != b.get(key)]


def probe_torch() -> dict[str, Any]:
    """torch's details on this machine, from a child process; {} when it cannot tell."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=TORCH_PROBE_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        info = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        info = None
    return info if isinstance(info, dict) else {}


def requirements(run: dict) -> str:
    """The recorded packages pinned (`name==version`, names as pip compares them), with the
    PyTorch wheel index when torch was a local build (`2.13.0+cpu`, `+cu121`)."""
    env = run.get("environment") if isinstance(run.get("environment"), dict) else {}
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    python = env.get("python") if isinstance(env.get("python"), dict) else {}
    lines = [(f"# packages of run {run.get('_id')}, recorded with python "
              f"{python.get('version', '?')}: pip install -r this-file")]
    local = str(packages.get("torch", "")).partition("+")[2]
    if local:
        lines.append(f"--extra-index-url https://download.pytorch.org/whl/{local}")
    lines += [f"{name}=={version}" for name, version in sorted(packages.items())]
    return "\n".join(lines) + "\n"


def _torch_facts(torch: dict) -> dict[str, str]:
    found = {}  # torch's version is compared as the package's
    for key in _TORCH_DETAILS:
        if key in torch:
            value = torch[key]
            found[f"torch {key}"] = ", ".join(map(str, value)) if isinstance(value, list) \
                else str(value)
    return found


def _gpu_text(gpus: list) -> str:
    names = sorted(str(g.get("name")) if isinstance(g, dict) else str(g) for g in gpus)
    return ", ".join(names) if names else "none"
