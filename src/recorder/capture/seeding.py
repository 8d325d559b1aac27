"""The run's seed, and the determinism settings that decide whether it reproduces.

Python's `random` is seeded before `main` runs; numpy and torch are seeded then if
they are already imported, otherwise the moment they are first imported during the
run (an import hook): the recorder never imports torch just to seed it. A replay also
hands the recorded torch settings (thread counts, deterministic algorithms, cuDNN flags:
they change results) to the Seeder, which applies them at the same moment.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

SEEDED_LIBRARIES = ("numpy", "torch")


def choose_seed(config: dict[str, Any]) -> int:
    """The config's `seed` when it has one, else a fresh one (recorded with the run)."""
    seed = config.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return random.SystemRandom().randrange(2**31)


def seed_library(name: str, seed: int) -> None:
    module = sys.modules[name]
    if name == "numpy":
        module.random.seed(seed % 2**32)
    elif name == "torch":
        module.manual_seed(seed)


class Seeder:
    """Seeds python now, numpy/torch now or at their first import; `seeded` says which.
    `torch_settings` (keys of `determinism()`) are applied to torch with its seed."""

    def __init__(self, seed: int, torch_settings: dict[str, Any] | None = None):
        self.seed = seed
        self.torch_settings = torch_settings or {}
        self.seeded: list[str] = []
        self._hook: _SeedOnImport | None = None

    def start(self) -> None:
        random.seed(self.seed)
        self.seeded.append("random")
        waiting = []
        for name in SEEDED_LIBRARIES:
            if name in sys.modules:
                self._seed(name)
            else:
                waiting.append(name)
        if waiting:
            self._hook = _SeedOnImport(waiting, self._seed)
            sys.meta_path.insert(0, self._hook)

    def stop(self) -> None:
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
        self._hook = None

    def _seed(self, name: str) -> None:
        seed_library(name, self.seed)
        self.seeded.append(name)
        if name == "torch" and self.torch_settings:
            apply_torch_settings(sys.modules["torch"], self.torch_settings)


def apply_torch_settings(torch: Any, settings: dict[str, Any]) -> None:
    """Set what `determinism()` reads; a setting torch refuses now (the inter-op thread
    count once parallel work has started) is left as it is: the replay reports it."""
    threads = settings.get("torch_threads")
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    interop = settings.get("torch_interop_threads")
    if isinstance(interop, int) and interop > 0 and interop != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:
            pass
    if isinstance(settings.get("deterministic_algorithms"), bool):
        torch.use_deterministic_algorithms(settings["deterministic_algorithms"],
                                           warn_only=bool(settings.get("deterministic_warn_only")))
    cudnn = torch.backends.cudnn
    for key, attribute in (("cudnn_enabled", "enabled"), ("cudnn_deterministic", "deterministic"),
                           ("cudnn_benchmark", "benchmark")):
        if isinstance(settings.get(key), bool):
            setattr(cudnn, attribute, settings[key])


class _SeedOnImport:
    """Finds nothing itself: wraps the real loader of numpy/torch to seed after import."""

    def __init__(self, names: list[str], on_import):
        self.names = set(names)
        self.on_import = on_import

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        self.names.discard(fullname)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _SeedingLoader(spec.loader, lambda: self.on_import(fullname))
                return spec
            if spec is not None:
                return spec
        return None


class _SeedingLoader:
    def __init__(self, loader, after):
        self.loader = loader
        self.after = after

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.after()

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def determinism() -> dict[str, Any]:
    """Settings that change results: read from torch only when it is already imported."""
    settings: dict[str, Any] = {
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return settings
    cudnn = torch.backends.cudnn
    settings.update(
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_enabled=bool(cudnn.enabled),
        cudnn_deterministic=bool(cudnn.deterministic),
        cudnn_benchmark=bool(cudnn.benchmark),
    )
    return settings
