"""Disk full on a real, small file system: a size-limited tmpfs holding the whole store
(segments AND SQLite). Needs root (``mount``); skipped cleanly otherwise.

``framestore record`` runs as a real process (its stderr is what a user sees). Whichever
of the two fills the disk first, the command prints one line, exits 6, and everything it
committed reads back after ``recover`` (the pyfakefs tests in ``test_diskfull.py`` cover
the segment writer alone, byte for byte).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framestore import FrameStore
from framestore.envs import make_env

ENV_ID = "ALE/Assault-v5"
MAX_STEPS = 300
NOISE = ("A.L.E: Arcade Learning Environment", "[Powered by Stella]")  # printed by ale-py's C++


def _mount(path: Path, size: str) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    return r.returncode == 0


@contextlib.contextmanager
def small_fs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if not _mount(path, size):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def grow(path: Path, size: str) -> None:
    r = subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args], capture_output=True, text=True, timeout=timeout
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = error_lines(proc)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("framestore: error: "), lines
    return lines[0]


def reference(n_episodes: int, seed: int = 0):
    """The seeded run `framestore record --seed 0` performs, regenerated."""
    env = make_env(ENV_ID, max_episode_steps=MAX_STEPS)
    env.action_space.seed(seed)
    out = []
    try:
        for i in range(n_episodes):
            env.reset(seed=seed + i)
            frames, actions, done = [env.render()], [], False
            while not done:
                a = env.action_space.sample()
                _, _, term, trunc, _ = env.step(a)
                frames.append(env.render())
                actions.append(int(a))
                done = term or trunc
            out.append((frames, actions))
    finally:
        env.close()
    return out


def check_reads_back(store_path: Path) -> int:
    """Every row has its frame, equal to the regenerated one; returns the row count."""
    rows = 0
    with FrameStore.open(store_path, readonly=True) as store:
        eps = store.episodes()
        ref = reference(max((e.id for e in eps), default=0))
        for ep in eps:
            frames, actions = ref[ep.id - 1]
            for s in store.read_steps(ep.id):
                assert s.frame is not None
                if s.step > 0 and s.action is not None:
                    assert int(s.action) == actions[s.step - 1]
            for step, frame in store.iter_steps_frames(ep.id, skip_missing=False):
                assert np.array_equal(frame, frames[step]), (ep.id, step)
                rows += 1
    return rows


RECORD = ["--env", ENV_ID, "--episodes", "50", "--max-steps", str(MAX_STEPS), "--seed", "0"]


@pytest.mark.parametrize(
    "size, codec, fails_first",
    [
        # raw chunks of up to 64 Atari frames (6.4 MB): the segment fills 16 MiB first
        ("16m", "raw", "no space left on device"),
        # zstd frames are ~300 bytes: the SQLite WAL outgrows the segments and fails first
        ("1m", "zstd", "database or disk is full"),
    ],
    ids=["segments-fill-first", "sqlite-fills-first"],
)
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_record_until_disk_full(tmp_path, size, codec, fails_first, writer):
    with small_fs(tmp_path / "mnt", size) as mnt:
        store = mnt / "s.store"
        proc = cli("record", str(store), *RECORD, "--codec", codec, "--writer", writer)
        line = assert_one_line_error(proc, code=6)
        # Which file hits the limit first is a race between the writer and the sink
        # (seen both ways on the same machine); either way: one line, exit 6.
        assert fails_first in line or "no space left" in line or "disk is full" in line, line

        # recover on the still-full disk: it works, or fails with one line, never damages
        still_full = cli("recover", str(store))
        if still_full.returncode not in (0, 3):
            assert_one_line_error(still_full, code=6)

        grow(mnt, "64m")  # the user frees space
        rec = cli("recover", str(store), "--json")
        assert rec.returncode in (0, 3), rec.stderr
        report = json.loads(rec.stdout)
        assert report["frames_lost"] == {}, report
        assert cli("verify", str(store)).returncode == 0
        assert check_reads_back(store) > 64  # at least one committed batch survived

        # and the store records again
        again = cli("record", str(store), "--env", ENV_ID, "--max-steps", "20", "--seed", "9")
        assert again.returncode == 0, again.stderr
        assert cli("verify", str(store)).returncode == 0


def test_disk_already_full_when_the_store_is_created(tmp_path):
    with small_fs(tmp_path / "mnt", "2m") as mnt:
        filler = mnt / "filler"
        with open(filler, "wb") as fp:
            with contextlib.suppress(OSError):
                fp.write(b"\0" * (2048 - 48) * 1024)
        store = mnt / "s.store"
        proc = cli("record", str(store), *RECORD)
        line = assert_one_line_error(proc, code=6)
        assert "full" in line or "no space" in line, line

        filler.unlink()
        ok = cli("record", str(store), "--env", ENV_ID, "--max-steps", "30", "--seed", "0")
        assert ok.returncode == 0, ok.stderr
        assert cli("verify", str(store)).returncode == 0
        assert check_reads_back(store) == 31
