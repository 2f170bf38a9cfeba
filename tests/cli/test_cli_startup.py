"""CLI start-up: ``framestore --help``/``--version`` import none of the library's heavy
dependencies (issue 18, "CLI start-up": every verb paid about half a second of CPU
for numpy, gymnasium and sqlite-utils with pandas). Behaviour, not timing: what is in
``sys.modules`` of a fresh interpreter after the command ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "gymnasium", "sqlite_utils", "pandas")

PROBE = """
import json, sys
from tools.cli import main
try:
    main(sys.argv[1:])  # click ends --help and --version with SystemExit(0)
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def imported_after(*args: str) -> tuple[list[str], str]:
    """Run ``framestore ARGS`` in a fresh interpreter; the heavy modules it imported."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1]), result.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["ls", "--help"], ["gc", "--help"]])
def test_help_and_version_import_no_heavy_dependency(args):
    heavy, out = imported_after(*args)
    assert heavy == [], f"framestore {' '.join(args)} imported {heavy}"
    assert out  # it did print its help / version


@pytest.mark.parametrize("verb", [["ls"], ["ls", "--json"], ["info"], ["info", "--json"]])
def test_listing_a_store_imports_no_heavy_dependency(tmp_path, assault_frames, verb):
    """``ls`` and ``info`` read the catalogue and the segment files' headers: no frame is
    decoded, so neither numpy (nor the codecs) nor sqlite-utils (a read-only catalogue is
    a plain sqlite3 connection) nor gymnasium nor pandas is imported."""
    from conftest import record_episodes

    path = tmp_path / "s.store"
    record_episodes(path, assault_frames, episodes=1, steps=3)
    heavy, out = imported_after(*verb, str(path))
    assert heavy == [], f"framestore {' '.join(verb)} imported {heavy}"
    assert "ALE/Assault-v5" in out or "episodes" in out


def test_a_read_only_store_still_reads_frames_and_steps(tmp_path, assault_frames):
    """What ``ls`` leaves out loads on first use: frames decode (numpy, codecs) and
    actions decode (telemetry's spaces) from a read-only catalogue, inside one read
    snapshot as ``verify`` takes it."""
    import numpy as np
    from conftest import record_episodes

    from framestore import FrameStore

    path = tmp_path / "s.store"
    record_episodes(path, assault_frames, episodes=1, steps=3)
    with FrameStore.open(path, readonly=True) as st:
        (ep,) = st.episodes()
        with (
            st.catalog.connection.read_snapshot(),
            st.catalog.connection.read_snapshot(),
        ):  # nested: a savepoint
            steps = st.read_steps(ep.id)
            frames = list(st.iter_frames(ep.id))
        assert st.catalog.connection.schema()["pending_migrations"] == []
    assert len(frames) == len(steps) == ep.steps
    assert np.array_equal(frames[0], assault_frames[0])


def test_every_verb_is_registered():
    """Verbs are registered by plain imports: a renamed module fails loudly at import,
    never drops its verbs silently (as an importlib loop that skipped it did)."""
    from tools.cli import cli

    assert set(cli.commands) >= {
        "record", "ls", "info", "export", "rm", "gc", "verify", "recover", "merge",
        "publish", "bench", "presets", "tune", "gui",
    }  # fmt: skip


def test_a_lazy_choice_still_refuses_a_bad_value():
    from conftest import run_cli

    result = run_cli("record", "x.store", "--env", "ALE/Pong-v5", "--codec", "nope")
    assert result.exit_code == 2 and "'nope' is not one of" in result.output
    result = run_cli("bench", "--overload", "--level", "99")
    assert result.exit_code == 2 and "--level" in result.output
