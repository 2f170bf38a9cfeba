"""Children killed mid-work: start a child script, wait for the lines it reports to its
progress file, SIGKILL it (or its storage process). Shared by the crash tests
(tests/reliability/test_reliability_crash.py) and merge's (tests/maintenance/test_merge.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import alive, shm_blocks, wait_for

READY_TIMEOUT = 60.0


def wait_for_line(path: Path, prefix: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(line.startswith(prefix) for line in path.read_text().splitlines()):
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            lines = path.read_text().splitlines() if path.exists() else []
            if any(line.startswith(prefix) for line in lines):  # written just before exit
                return
            raise AssertionError(f"child exited with {proc.returncode} before {prefix!r}")
        time.sleep(0.005)
    raise AssertionError(f"child did not report {prefix!r} within {timeout}s")


def storage_pid(progress: Path) -> int | None:
    """The pid of the child's storage process (``writer="process"``), from its ``pid``
    line."""
    for line in progress.read_text().splitlines():
        if line.startswith("pid "):
            word = line.split()[1]
            return None if word == "None" else int(word)
    return None


def run_and_kill(
    script: str,
    args: list[str],
    progress: Path,
    delay: float,
    *,
    after: str = "ready",
    kill_storage: bool = False,
) -> int | None:
    """Start the child, wait for its ``ready`` line (and then for a line starting with
    ``after``), SIGKILL it ``delay`` s later (with
    ``kill_storage``: its storage process, after which the child must notice and exit on
    its own, never hang). Returns the child's exit code if it finished on its own first
    (with ``kill_storage``: its exit code), else None."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args, str(progress)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(progress, "ready", proc, READY_TIMEOUT)
        if after != "ready":
            wait_for_line(progress, after, proc, READY_TIMEOUT)
        end = time.monotonic() + delay
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.002)
        finished = proc.poll()
        if finished is None and kill_storage:
            with contextlib.suppress(ProcessLookupError):  # it exited with the producer
                os.kill(storage_pid(progress), signal.SIGKILL)
            finished = proc.wait(timeout=60)  # noticed at the next call: exit code 3
        elif finished is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    if finished is not None:
        assert finished in ((0, 3) if kill_storage else (0,)), err
    pid = storage_pid(progress)
    if pid is not None:  # a storage process outlives its producer only to commit and exit
        wait_for(lambda: not alive(pid), timeout=60, interval=0.01)  # it did exit
        assert not shm_blocks(proc.pid)
    return finished
