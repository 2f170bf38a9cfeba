"""The checkout and its packaging as a new user meets them: the README's outputs are
ignored by git, every package is installed, the extras hold what the verbs need, and the
test run's quiet output stays quiet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_readme_outputs_are_ignored_by_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (ROOT / "README.md").read_text()
    assert "demo.store" in readme and "-o demo.mp4" in readme  # what the first command makes
    for path in ("demo.store/", "demo.store/framestore.db", "demo.mp4"):
        proc = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, capture_output=True
        )
        assert proc.returncode == 0, f"{path} is not in .gitignore"


def test_every_package_is_installed():
    from setuptools import find_packages

    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    installed = set(find_packages(str(ROOT), include=find["include"]))
    top = ("framestore", "telemetry", "tools", "gui", "migrations")
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.glob("*/**/__init__.py")
        if p.parent.relative_to(ROOT).parts[0] in top
    }
    assert on_disk <= installed and "framestore.catalog" in installed


def test_extras_hold_what_the_verbs_import():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(r.startswith("h5py") for r in extras["bench"])  # bench's HDF5 baseline
    # the test extra installs bench, through all (which holds every extra), and torch
    assert "framestore[all,torch]" in extras["test"] and "bench" in extras["all"][0]
    assert any(r.startswith("PySide6") for r in extras["gui"])


def test_quiet_test_output_has_no_third_party_warnings(tmp_path):
    """Box2D's SWIG bindings warn at import; pyproject filters those by module, so ``-q``
    prints only the result."""
    pytest.importorskip("Box2D")
    test = tmp_path / "test_box2d_import.py"
    test.write_text(
        "def test_import():\n"
        "    from framestore.envs import make_env\n"
        "    make_env('CarRacing-v3').close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c"]
        + [str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), str(test)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0, proc.stdout
    assert "warning" not in proc.stdout.lower(), proc.stdout
    assert len(lines) == 2 and lines[-1].startswith("1 passed"), lines


def test_all_means_every_extra():
    """``pip install '.[all]'`` installs what every verb imports (publish needs pyarrow
    from the s3 extra; before, ``all`` held only atari, box2d, video and gui). All but
    ``torch``: an unpinned torch from PyPI is the multi-GB CUDA build, so framestore.torch
    asks for it by name (``pip install torch==2.13.0`` first for the CPU build)."""
    import re

    extras = PYPROJECT["project"]["optional-dependencies"]
    (spec,) = extras["all"]
    named = set(re.fullmatch(r"framestore\[(.*)\]", spec)[1].split(","))
    assert named == set(extras) - {"all", "test", "torch"}
    hints = set()
    for path in (ROOT / "framestore").rglob("*.py"):
        hints |= set(re.findall(r'extra="(\w+)"', path.read_text()))
    for path in (ROOT / "tools").rglob("*.py"):
        hints |= set(re.findall(r'extra="(\w+)"', path.read_text()))
    assert hints and hints <= named | {"torch"}  # every hint names an extra all holds
