"""Disk full on a real, small file system: size-limited tmpfs mounts. Needs root
(``mount``); skipped cleanly otherwise.

``framestore record`` runs as a real process (its stderr is what a user sees). Each case
puts one part of the store (the segments directory, or the database) on a small mount and
the other on a roomy one, so the part its id names fills first on any machine, loaded or
not: the command prints one error line naming that failure, exits 6, and everything it
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
from conftest import assert_one_line_error

from framestore import FrameStore
from framestore.envs import make_env

ENV_ID = "ALE/Assault-v5"
MAX_STEPS = 300


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


def reference(n_episodes: int, seed: int = 0):
    """The seeded run `framestore record --seed 0` performs, regenerated (episode i: the
    environment and the random policy's action space seeded with ``seed + i``)."""
    env = make_env(ENV_ID, max_episode_steps=MAX_STEPS)
    out = []
    try:
        for i in range(n_episodes):
            env.reset(seed=seed + i)
            env.action_space.seed(seed + i)
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


@contextlib.contextmanager
def store_filling(tmp_path: Path, which: str):
    """A store whose ``which`` part ("segments" or "sqlite") is on a small file system
    and the other part on a roomy one, so that part fills first, whatever the timing.
    Yields (store path, the small mount)."""
    if which == "segments":
        store = tmp_path / "s.store"
        with small_fs(store / "segments", "16m") as small:
            yield store, small
    else:
        with small_fs(tmp_path / "mnt", "1m") as small:
            store = small / "s.store"
            with small_fs(store / "segments", "64m"):
                yield store, small


@pytest.mark.parametrize(
    "which, codec, fails_first",
    [
        # raw chunks of up to 64 Atari frames (6.4 MB) on a 16 MiB segments directory
        ("segments", "raw", "no space left on device"),
        # the database and its WAL on 1 MiB, frames (zstd, ~300 bytes each) on 64 MiB
        ("sqlite", "zstd", "database or disk is full"),
    ],
    ids=["segments-fill-first", "sqlite-fills-first"],
)
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_record_until_disk_full(tmp_path, which, codec, fails_first, writer):
    with store_filling(tmp_path, which) as (store, mnt):
        proc = cli("record", str(store), *RECORD, "--codec", codec, "--writer", writer)
        # one error line, exit 6; a loaded machine may add a warning line ("saving 64
        # steps to the database took 300 ms"), which is not an error
        line = assert_one_line_error(proc, code=6)
        assert fails_first in line, line
        # what was saved, and the next step (it said only "database or disk is full")
        assert "saved before the error: run 1:" in proc.stdout, proc.stdout
        assert f"framestore recover {store}" in proc.stdout

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
