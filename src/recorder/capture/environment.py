"""Snapshot the machine and software a run starts on, so replay can say what differs.

`capture_host` fills Sacred's `host` field; `capture_environment` fills ours, `environment`.
Both run at every run start, so they read files rather than import anything heavy: they
never import torch (that is the user's choice and costs a second), never import
`importlib.metadata` (40 ms), and give `nvidia-smi` two seconds at most.

Environment variables recorded (`host.ENV`) are the ones that can change results:
`ENV_ALLOWLIST` holds exact names, and `PREFIX_*` families (every name that starts with
`PREFIX_`). Their values go through the run's `Redactor` first.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from recorder.redact import Redactor

__all__ = [
    "ENV_ALLOWLIST",
    "canonical_name",
    "capture_environment",
    "capture_host",
    "installed_packages",
    "select_env",
    "torch_info",
]

ENV_ALLOWLIST: tuple[str, ...] = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLASLT_WORKSPACE_SIZE",
    "PYTHONHASHSEED",
    "PYTHONOPTIMIZE",
    "OMP_NUM_THREADS",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_DEBUG_CPU_TYPE",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TF_*",
    "TORCH_*",
    "TORCHINDUCTOR_*",
    "TORCHDYNAMO_*",
    "PYTORCH_*",
    "NCCL_*",
    "CUDNN_*",
    "XLA_*",
    "JAX_*",
    "CUBLAS_*",
    "NVIDIA_*",
)
"""Environment variables recorded with a run: exact names, and `PREFIX_*` families."""

_EXACT = frozenset(n for n in ENV_ALLOWLIST if not n.endswith("*"))
_PREFIXES = tuple(n[:-1] for n in ENV_ALLOWLIST if n.endswith("*"))
_NVIDIA_SMI_TIMEOUT_S = 2.0
_NVIDIA_SMI_QUERY = "--query-gpu=name,memory.total,driver_version"
_CANONICAL = re.compile(r"[-_.]+")


def select_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the allowlisted variables of environ (default os.environ), not yet redacted."""
    env = os.environ if environ is None else environ
    return {
        name: value
        for name, value in sorted(env.items())
        if name in _EXACT or name.startswith(_PREFIXES)
    }


def capture_host(redactor: Redactor) -> dict[str, Any]:
    """Sacred's `host` field: where the run ran, with allowlisted env vars redacted."""
    return {
        "hostname": socket.gethostname(),
        "os": [platform.system(), platform.platform()],
        "cpu": _cpu_model(),
        "python_version": platform.python_version(),
        "gpus": _gpus(),
        "ENV": redactor.environ(select_env()),
    }


def capture_environment() -> dict[str, Any]:
    """Our `environment` field: what replay compares (python, packages, torch)."""
    packages = installed_packages()
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "packages": packages,
        "torch": torch_info(packages),
    }


def canonical_name(name: str) -> str:
    """PEP 503 name: `Jinja2` -> `jinja2`, `zope.interface` -> `zope-interface`.

    Used as the key of `packages` because it is how pip compares names, and it has no dots,
    so `{"environment.packages.zope-interface": ...}` is a valid MongoDB query path.
    """
    return _CANONICAL.sub("-", name).lower()


def installed_packages(path: list[str] | None = None) -> dict[str, str]:
    """Every installed distribution as {canonical name: version}, first on sys.path wins.

    Reads only the name and version headers of each `*.dist-info/METADATA` and
    `*.egg-info` directly (importlib.metadata parses every header: 80 ms for 50 packages);
    broken distributions are skipped.
    """
    packages: dict[str, str] = {}
    for entry in sys.path if path is None else path:
        if not isinstance(entry, str):  # sys.path may hold anything; only str paths name dists
            continue
        try:
            with os.scandir(entry or ".") as it:
                names = [e.name for e in it]
        except OSError:  # a zip file, or a path that is not there
            continue
        for name in names:
            if name.endswith(".dist-info"):
                meta = os.path.join(entry, name, "METADATA")
            elif name.endswith(".egg-info"):
                meta = os.path.join(entry, name)
                if os.path.isdir(meta):
                    meta = os.path.join(meta, "PKG-INFO")
            elif name.endswith(".egg"):
                meta = os.path.join(entry, name, "EGG-INFO", "PKG-INFO")
            else:
                continue
            found = _name_and_version(meta)
            if found is not None:
                packages.setdefault(canonical_name(found[0]), found[1])
    return dict(sorted(packages.items()))


def _name_and_version(path: str) -> tuple[str, str] | None:
    name = version = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():  # the headers end at the first blank line
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    return name, version
    except OSError:
        pass
    return None


def torch_info(packages: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """What torch the run has, without ever importing it.

    Full details when the user's code has imported torch; only the installed version when
    it has not; None when torch is not installed. packages: `installed_packages()` output,
    if already at hand.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        version = (packages if packages is not None else installed_packages()).get("torch")
        return None if version is None else {"version": version}
    # str(): torch's TorchVersion is a str subclass; store the plain string.
    info: dict[str, Any] = {"version": _safe(lambda: str(torch.__version__))}
    info["cuda"] = _safe(lambda: torch.version.cuda and str(torch.version.cuda))
    info["cudnn"] = _safe(lambda: torch.backends.cudnn.version())
    info["threads"] = _safe(lambda: torch.get_num_threads())
    info["cuda_available"] = bool(_safe(lambda: torch.cuda.is_available()))
    info["devices"] = [gpu["name"] for gpu in _torch_gpus(torch)]
    return info


def _safe(get: Any) -> Any:
    try:
        return get()
    except Exception:  # noqa: BLE001 - a broken torch build must not stop the run starting
        return None


def _cpu_model() -> str | None:
    """The CPU's model name: /proc/cpuinfo on Linux, else platform.processor(), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[dict[str, Any]]:
    """GPUs as [{name, memory_mib, driver_version}]: from torch when it has CUDA, else nvidia-smi.

    Never raises; nvidia-smi missing, failing or slower than 2 s gives [].
    """
    torch = sys.modules.get("torch")
    if torch is not None and _safe(lambda: torch.cuda.is_available()):
        gpus = _torch_gpus(torch)
        if gpus:
            return gpus
    return _nvidia_smi_gpus()


def _torch_gpus(torch: Any) -> list[dict[str, Any]]:
    # get_device_properties initializes CUDA in this process (as the user's own .cuda()
    # would); it is only reached once torch.cuda.is_available() said yes.
    try:
        if not torch.cuda.is_available():
            return []
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "name": props.name,
                    "memory_mib": int(props.total_memory) // (1024 * 1024),
                    "driver_version": None,
                }
            )
        return gpus
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop the run starting
        return []


def _nvidia_smi_gpus() -> list[dict[str, Any]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, _NVIDIA_SMI_QUERY, "--format=csv,noheader,nounits"],
            check=False,
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0]:
            continue
        name, memory, driver = fields
        gpus.append(
            {
                "name": name,
                "memory_mib": int(memory) if memory.isdigit() else None,
                "driver_version": driver or None,
            }
        )
    return gpus
