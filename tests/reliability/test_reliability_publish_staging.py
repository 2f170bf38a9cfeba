"""A killed local ``publish`` leaves its staging directory ``.NAME.publish-XXXX`` beside
DEST; the next publish to NAME removes it, never the staging directory of a publish that
is still running (issue 23, smaller item). Real SIGKILLs of the publishing process
group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import record_episodes, run_cli

REPO = str(Path(__file__).resolve().parents[2])

# Publishes argv[1] to argv[2]; at the first progress call it says so and waits forever.
_PAUSED_PUBLISH = """
import sys, time
from framestore import FrameStore
from framestore.maintenance.publish import publish

def progress(done, total):
    print("staging", flush=True)
    time.sleep(3600)

with FrameStore.open(sys.argv[1], readonly=True) as st:
    publish(st, sys.argv[2], progress=progress)
"""


@pytest.fixture
def source(tmp_path, assault_frames):
    path = tmp_path / "src.store"
    record_episodes(path, assault_frames, episodes=2, steps=6)
    return path


def paused_publish(source: Path, dest: Path) -> subprocess.Popen:
    """A publish in its own process group, stopped while it copies segments."""
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_PUBLISH, str(source), str(dest)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        start_new_session=True,
    )
    assert child.stdout.readline().strip() == "staging"
    return child


def kill_group(child: subprocess.Popen) -> None:
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()


def staging(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(f".{dest.name}.publish-*"))


def test_the_next_publish_removes_what_a_killed_publish_left(source, tmp_path):
    dest = tmp_path / "pub"
    child = paused_publish(source, dest)
    kill_group(child)
    (left,) = staging(dest)
    assert any(left.rglob("*.fseg"))  # it was copying segments when it died
    assert not dest.exists()

    result = run_cli("publish", source, dest)
    assert result.exit_code == 0, result.output
    assert staging(dest) == []
    assert run_cli("verify", dest).exit_code == 0


def test_a_running_publish_keeps_its_staging_directory(source, tmp_path):
    dest = tmp_path / "pub"
    child = paused_publish(source, dest)
    try:
        (live,) = staging(dest)
        other = run_cli("publish", source, tmp_path / "elsewhere")  # another DEST
        assert other.exit_code == 0, other.output
        assert staging(dest) == [live] and live.is_dir()
        again = run_cli("publish", source, dest)  # the same DEST while it stages
        assert again.exit_code == 0, again.output
        assert live.is_dir() and any(live.rglob("*.fseg"))  # untouched
    finally:
        kill_group(child)
    assert run_cli("verify", dest).exit_code == 0


def test_recover_removes_what_a_killed_publish_left_beside_the_store(source, tmp_path):
    dead = paused_publish(source, tmp_path / "pub")  # DEST beside the store
    kill_group(dead)
    live = paused_publish(source, tmp_path / "other")
    try:
        (left,) = staging(tmp_path / "pub")
        (running,) = staging(tmp_path / "other")
        stranger = tmp_path / ".notes.publish-abcd1234"  # the name, not what publish stages
        (stranger / "drafts").mkdir(parents=True)
        result = run_cli("recover", source)
        assert result.exit_code == 0, result.output
        lines = [ln for ln in result.output.splitlines() if "staging" in ln]
        assert lines == [
            f"removed 1 staging directory(ies) killed publishes left beside the store: {left.name}"
        ], result.output
        assert not left.exists()
        assert running.is_dir() and any(running.rglob("*.fseg"))  # its owner is alive
        assert stranger.is_dir()
        again = run_cli("recover", source, "--json")
        assert json.loads(again.output)["staging_removed"] == []
    finally:
        kill_group(live)
    assert run_cli("recover", source).exit_code == 0
    assert staging(tmp_path / "other") == []  # dead now: removed
