"""Read-only verbs (ls, info, gc --dry-run, verify) on a store being recorded and on one
whose writer was killed: they report what they see and say what state the store is in,
never refuse (issue 18, defect 4: ``info`` and ``gc --dry-run`` said "run recover
first" while the writer was alive, and ``info`` refused after a kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, wait_for

from framestore import FrameStore

ROOT = Path(__file__).resolve().parents[2]


def _recording(path: Path) -> bool:
    try:
        with FrameStore.open(path, readonly=True) as st:
            eps = st.episodes()
    except FileNotFoundError:  # NotAStore: not created yet, or its tables not yet
        return False
    return any(e.status == "recording" for e in eps) and any(e.steps for e in eps)


def _writer_running(path: Path) -> bool | None:
    with FrameStore.open(path, readonly=True) as st:
        return st.writer_running()


@pytest.fixture
def live(tmp_path):
    """A ``framestore record`` process writing into a store at this moment."""
    path = tmp_path / "live.store"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools",
            "record",
            str(path),
            "--env",
            "ALE/Assault-v5",
            "--episodes",
            "1000",
            "--max-steps",
            "100000",
        ],  # fmt: skip
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: proc.poll() is None and _recording(path), timeout=120, interval=0.1)
        yield path, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def _check_read_only_verbs(path: Path, state: str) -> None:
    data = json.loads(run_cli("info", path, "--json").stdout)
    assert data["state"]["state"] == state, data["state"]
    result = run_cli("info", path)
    assert result.exit_code == 0, result.output
    assert f"state        {state}" in result.output
    result = run_cli("gc", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "gc would not run now:" in result.output
    dry = json.loads(run_cli("gc", path, "--dry-run", "--json").stdout)
    assert dry["blocked"] and dry["db_bytes_after"] is None
    for args in (["ls"], ["ls", "--json"], ["verify", "--quick"]):
        result = run_cli(*args, path)
        assert result.exit_code in (0, 1), result.output  # 1: verify found a stale episode


def test_read_only_verbs_on_a_live_store_then_on_a_killed_one(live):
    path, proc = live
    _check_read_only_verbs(path, "recording")
    result = run_cli("verify", "--quick", path)
    assert result.exit_code == 0 and "a writer is recording" in result.output  # no problem
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # a storage process (writer="process") commits what it holds, then exits
    wait_for(lambda: not _writer_running(path), timeout=60, interval=0.05)
    _check_read_only_verbs(path, "needs recover")
    assert "recover" in json.loads(run_cli("info", path, "--json").stdout)["state"]["detail"]
    assert run_cli("verify", "--quick", path).exit_code == 1  # "stale recording"
    assert run_cli("recover", path).exit_code in (0, 3)
    data = json.loads(run_cli("info", path, "--json").stdout)
    assert data["state"]["state"] == "idle" and data["segments"]["reclaimable_bytes"] >= 0
    assert not json.loads(run_cli("gc", path, "--dry-run", "--json").stdout)["blocked"]
    assert os.path.isdir(path)
