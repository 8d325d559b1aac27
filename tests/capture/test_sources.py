"""capture_sources: the project's own loaded files, and nothing installed."""

import hashlib
import importlib
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from recorder.capture.sources import capture_sources


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def module(name: str, file: Path | str | None) -> ModuleType:
    mod = ModuleType(name)
    if file is not None:
        mod.__file__ = str(file)
    return mod


@pytest.fixture
def project(tmp_path):
    base = tmp_path / "proj"
    write(base / "train.py", "import helpers\n")
    write(base / "helpers" / "__init__.py", "")
    write(base / "helpers" / "data.py", "LOADER = 1\n")
    write(base / "site-packages" / "fakepkg.py", "installed = True\n")
    write(base / "lib" / "python3.11" / "dist-packages" / "debpkg.py", "installed = True\n")
    write(base / "venv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(base / "venv" / "lib" / "tool.py", "in_venv = True\n")
    write(base / ".recorder" / "spool.py", "store = True\n")
    return base


def test_imported_local_module_is_captured(project, monkeypatch):
    name = f"localmod_{uuid.uuid4().hex}"
    write(project / "pkg" / f"{name}.py", "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(project / "pkg"))
    mod = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, mod)

    sources, files = capture_sources(project / "train.py", project)  # default: sys.modules

    by_path = dict(sources)
    rel = f"pkg/{name}.py"
    assert rel in by_path and "train.py" in by_path
    assert files[by_path[rel]] == b"VALUE = 42\n"
    assert by_path[rel] == hashlib.sha256(b"VALUE = 42\n").hexdigest()
    assert all(not p.startswith(("/", "..")) for p, _ in sources)


def test_installed_virtualenv_and_excluded_files_are_left_out(project):
    mods = [
        module("helpers", project / "helpers" / "__init__.py"),
        module("helpers.data", project / "helpers" / "data.py"),
        module("fakepkg", project / "site-packages" / "fakepkg.py"),
        module("debpkg", project / "lib" / "python3.11" / "dist-packages" / "debpkg.py"),
        module("tool", project / "venv" / "lib" / "tool.py"),
        module("spool", project / ".recorder" / "spool.py"),
        module("os", sys.modules["os"].__file__),
        module("sys", None),
        module("outside", project.parent / "elsewhere.py"),
    ]
    write(project.parent / "elsewhere.py", "x = 1\n")
    sources, files = capture_sources(project / "train.py", project, mods,
                                     exclude=[project / ".recorder"])

    assert [p for p, _ in sources] == ["helpers/__init__.py", "helpers/data.py", "train.py"]
    assert set(files) == {s for _, s in sources}
    assert files[dict(sources)["helpers/data.py"]] == b"LOADER = 1\n"


def test_identical_files_are_stored_once(project):
    write(project / "a" / "__init__.py", "")
    mods = [module("a", project / "a" / "__init__.py"),
            module("helpers", project / "helpers" / "__init__.py")]
    sources, files = capture_sources(None, project, mods)

    assert [p for p, _ in sources] == ["a/__init__.py", "helpers/__init__.py"]
    assert len(files) == 1


def test_pyc_maps_to_its_source_and_vanished_files_are_skipped(project):
    pyc = project / "helpers" / "__pycache__" / "data.cpython-311.pyc"
    mods = [module("helpers.data", pyc), module("ghost", project / "ghost.py"),
            module("ext", project / "fast.cpython-311-x86_64-linux-gnu.so")]
    sources, _ = capture_sources(None, project, mods)
    assert [p for p, _ in sources] == ["helpers/data.py"]


def test_project_reached_through_a_symlink(project, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(project)
    mods = [module("helpers.data", link / "helpers" / "data.py")]
    sources, _ = capture_sources(None, project, mods)
    assert [p for p, _ in sources] == ["helpers/data.py"]
    sources, _ = capture_sources(None, link, [module("h", project / "helpers" / "data.py")])
    assert [p for p, _ in sources] == ["helpers/data.py"]
