"""Crash sequences that used to cost frames or trust (issue 15, items 2, 3, 5, 7, 10):
real SIGKILLs and signals of real subprocesses, then the next command a user would run.

- a recording killed before its episode row committed (segments rotated): ``gc`` must
  refuse until ``recover`` ran, and a new recording must not reuse the episode id that
  is already in the segments; ``recover`` must never merge two recordings' frames;
- ``framestore.db`` restored from a backup older than its segments, or emptied: ``gc``
  refuses, ``recover`` rebuilds and re-links;
- a segment briefly missing: ``recover`` keeps the pointers and says so;
- ``verify`` while a recording runs: no false "dangling pointer";
- a second SIGINT/SIGTERM right after the first: still exit 130; ``recover`` killed after
  its transaction: the next run still reports the loss.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error, record_episodes, run_cli

from framestore import FrameStore
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.state.bookkeeping import sync_segments
from tools.recover import recover
from tools.verify import verify

#: The checkout under test: children import it, whatever the working directory.
REPO = str(Path(__file__).resolve().parents[2])
ENV = dict(os.environ, PYTHONPATH=REPO)
KILLED_FRAMES = 40
RAW_SMALL = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}

# A recording whose rows never commit (the sink's commit interval is pushed past the
# kill), 40 raw 100 KB frames over four 1 MiB segments; it reports "ready" once the
# writer has written them, and is then killed with SIGKILL.
RECORD_THEN_WAIT = textwrap.dedent(
    """
    import functools, os, sys, time
    import numpy as np
    import framestore.write._storage as storage_module
    from framestore import FrameStore
    path, progress = sys.argv[1], sys.argv[2]
    storage_module.TelemetryDBSink = functools.partial(
        storage_module.TelemetryDBSink, commit_interval=600
    )
    store = FrameStore.open(path)
    rec = store.recorder(
        "ALE/Assault-v5",
        overrides={"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20,
                   "batch_size": 100000, "writer": "thread"},  # the sink patched here
    )
    rec.begin_episode(seed=7)
    rng = np.random.default_rng(7)
    for i in range(40):
        rec.record_step(rng.integers(0, 256, (210, 160, 3), dtype=np.uint8), action=i % 7)
    seg = os.path.join(path, "segments")
    while sum(os.path.getsize(os.path.join(seg, n)) for n in os.listdir(seg)) < 40 * 100800:
        time.sleep(0.005)
    with open(progress, "w") as fp:
        fp.write("ready\\n")
    time.sleep(600)
    """
)


def killed_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (210, 160, 3), dtype=np.uint8) for _ in range(KILLED_FRAMES)]


def run_until_ready_then_kill(script: str, args: list[str], progress: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args, str(progress)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (progress.exists() and progress.read_text().startswith("ready")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "child never got ready"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="module")
def killed_template(tmp_path_factory):
    """A store whose recording was SIGKILLed after rotating segments and before any row
    of its episode committed."""
    tmp = tmp_path_factory.mktemp("killed")
    path = tmp / "k.store"
    run_until_ready_then_kill(RECORD_THEN_WAIT, [str(path)], tmp / "progress")
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0
    assert len(list_segment_ids(path)) >= 4
    return path


@pytest.fixture
def killed(killed_template, tmp_path):
    path = tmp_path / "k.store"
    shutil.copytree(killed_template, path)
    return path


def segment_bytes(path: Path) -> dict[int, bytes]:
    return {sid: segment_path(path, sid).read_bytes() for sid in list_segment_ids(path)}


def stream_keys(path: Path) -> set[int]:
    keys = set()
    for sid in list_segment_ids(path):
        keys |= {h.stream_key for h in scan_segment(segment_path(path, sid), sid).chunks.values()}
    return keys


def assert_reads_back(path: Path, episode: int, frames: list[np.ndarray]) -> None:
    with FrameStore.open(path, readonly=True) as store:
        got = dict(store.iter_steps_frames(episode))
    assert sorted(got) == list(range(len(frames))), sorted(got)
    assert all(np.array_equal(got[i], f) for i, f in enumerate(frames))


# --------------------------------------------------------------------------- item 2
def test_gc_refuses_frames_without_rows_after_a_kill_then_recover_keeps_them(killed):
    before = segment_bytes(killed)
    result = run_cli("gc", killed)
    assert "recover" in assert_one_line_error(result, 2)
    assert segment_bytes(killed) == before  # nothing deleted, nothing written
    # a dry run reports instead of refusing (issue 18, defect 4) and says gc would not run
    dry = run_cli("gc", killed, "--dry-run")
    assert dry.exit_code == 0 and "gc would not run now" in dry.output and "recover" in dry.output
    assert segment_bytes(killed) == before

    assert run_cli("recover", killed).exit_code in (0, 3)
    assert verify(killed).ok
    assert run_cli("gc", killed).exit_code == 0
    assert_reads_back(killed, 1, killed_frames())


def test_gc_refuses_a_database_restored_from_an_older_backup(tmp_path, assault_frames):
    path = tmp_path / "b.store"
    record_episodes(path, assault_frames, episodes=1, steps=10, overrides=RAW_SMALL)
    backup = (path / "framestore.db").read_bytes()
    record_episodes(path, assault_frames[10:], episodes=1, steps=10, overrides=RAW_SMALL)
    (path / "framestore.db").write_bytes(backup)  # the user restores last night's database
    before = segment_bytes(path)
    assert "recover" in assert_one_line_error(run_cli("gc", path), 2)
    assert segment_bytes(path) == before
    assert run_cli("recover", path).exit_code == 0
    assert verify(path).ok and run_cli("gc", path).exit_code == 0
    assert_reads_back(path, 1, assault_frames[:10])
    assert_reads_back(path, 2, assault_frames[10:20])


def test_gc_refuses_an_empty_database(tmp_path, assault_frames):
    path = tmp_path / "e.store"
    record_episodes(path, assault_frames, episodes=2, steps=6, overrides=RAW_SMALL)
    (path / "framestore.db").write_bytes(b"")
    before = segment_bytes(path)
    assert "recover" in assert_one_line_error(run_cli("gc", path), 2)
    assert segment_bytes(path) == before
    assert run_cli("recover", path).exit_code == 0 and verify(path).ok
    assert_reads_back(path, 1, assault_frames[:6])
    assert_reads_back(path, 2, assault_frames[6:12])


def test_a_backup_older_than_a_gc_is_relinked_not_forgotten(tmp_path, assault_frames):
    path = tmp_path / "g.store"
    record_episodes(path, assault_frames, episodes=2, steps=10, overrides=RAW_SMALL)
    backup = (path / "framestore.db").read_bytes()
    assert run_cli("rm", path, "--episode", 1).exit_code == 0
    assert run_cli("gc", path, "--threshold", "1").exit_code == 0  # moves episode 2's frames
    (path / "framestore.db").write_bytes(backup)
    result = run_cli("recover", path)
    # episode 2's rows point into deleted segments: re-linked to the copies gc made;
    # episode 1's frames are gone for good, and that is said, not silently forgotten
    assert result.exit_code == 1 and "MISSING" in result.output, result.output
    assert_reads_back(path, 2, assault_frames[10:20])
    result = run_cli("recover", path, "--drop-missing")
    assert result.exit_code == 3 and "LOST: episode 1" in result.output, result.output
    assert verify(path).ok
    assert_reads_back(path, 2, assault_frames[10:20])


# --------------------------------------------------------------------------- item 3
def test_a_recording_after_a_kill_never_reuses_an_episode_id(killed, assault_frames):
    assert stream_keys(killed) == {1}
    with FrameStore.open(killed) as store, store.recorder("ALE/Assault-v5") as rec:
        eid = rec.begin_episode(seed=1)
        for f in assault_frames[:10]:
            rec.record_step(f)
        rec.end_episode()
    assert eid not in {1}  # the crashed recording's frames already use episode id 1
    assert run_cli("recover", killed).exit_code == 0
    assert verify(killed).ok
    with FrameStore.open(killed, readonly=True) as store:
        assert store.episode(eid).steps == 10
        assert store.episode(1).steps == KILLED_FRAMES
    assert_reads_back(killed, eid, assault_frames[:10])
    assert_reads_back(killed, 1, killed_frames())


@pytest.mark.parametrize("status", ["complete", "interrupted"])
def test_recover_never_merges_two_recordings_that_share_an_id(killed, assault_frames, status):
    """A store an older framestore left: the next recording took the crashed one's id
    (here: its segments registered, so the writer did not look at them)."""
    with FrameStore.open(killed) as store:
        sync_segments(store)
        with store.recorder("ALE/Assault-v5") as rec:
            eid = rec.begin_episode(seed=1)
            for f in assault_frames[:10]:
                rec.record_step(f)
            rec.end_episode(status=None if status == "complete" else "interrupted")
    assert eid == 1  # the collision this test is about
    report = recover(killed)
    assert not report.data_lost
    assert verify(killed).ok
    with FrameStore.open(killed, readonly=True) as store:
        ep = store.episode(1)
        assert ep.steps == 10 and ep.status == status  # not 40 rows, not merged
        (other,) = [e.id for e in store.episodes() if e.id != 1]
    assert report.episodes_split == {other: 1}
    assert_reads_back(killed, 1, assault_frames[:10])
    assert_reads_back(killed, other, killed_frames())  # the crashed run's frames, kept apart
    assert recover(killed).changed is False
    assert run_cli("gc", killed).exit_code == 0
    assert_reads_back(killed, other, killed_frames())


# --------------------------------------------------------------------------- item 5
def test_recover_keeps_pointers_into_a_briefly_missing_segment(tmp_path, assault_frames):
    path = tmp_path / "m.store"
    record_episodes(path, assault_frames, episodes=2, steps=10, overrides=RAW_SMALL)
    first = segment_path(path, list_segment_ids(path)[0])
    away = tmp_path / "away.fseg"
    shutil.move(first, away)  # an unmounted disk, a file being restored...
    result = run_cli("recover", path)
    assert result.exit_code == 1, result.output
    assert "MISSING: segment" in result.output and "LOST" not in result.output
    shutil.move(away, first)  # back
    assert verify(path).ok
    assert_reads_back(path, 1, assault_frames[:10])
    assert run_cli("gc", path).exit_code == 0
    # forgetting them takes an explicit flag
    shutil.move(first, away)
    result = run_cli("recover", path, "--drop-missing")
    assert result.exit_code == 3 and "LOST: episode 1" in result.output
    assert verify(path).ok


# --------------------------------------------------------------------------- item 7
def _long_recording(path: Path, **popen: Any) -> subprocess.Popen:
    """``framestore record`` of CartPole for far longer than a test lasts. 400 episodes
    (~9,500 steps) took 39 s at load 7: six verifies on a loaded machine could outlast
    them, and a SIGINT landing while the finished recording shut down (Python's handlers
    reset to the default) ended it with -2 instead of 130. 100,000 episodes take hours."""
    argv = [
        "record",
        str(path),
        "--env",
        "CartPole-v1",
        "--episodes",
        "100000",
        "--max-steps",
        "200",
    ]
    return subprocess.Popen([sys.executable, "-m", "tools", *argv], env=ENV, **popen)


def test_verify_while_recording_reports_no_dangling_pointer(tmp_path):
    path = tmp_path / "live.store"
    proc = _long_recording(path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (path / "framestore.db").exists() or not list_segment_ids(path):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        reports = []
        for i in range(6):
            r = verify(path, quick=i % 2 == 0)
            assert proc.poll() is None, "the recording ended before verify could race it"
            reports.append(r)
        for r in reports:
            assert r.writer_running is True
            assert r.ok, [str(p) for p in r.problems]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == 130
    assert verify(path).ok


# --------------------------------------------------------------------------- item 10
def test_more_signals_right_after_the_first_still_exit_130(tmp_path):
    """The first signal stops the recording; SIGINT and SIGTERM again every 5 ms until
    the process is gone (a user hammering Ctrl-C, a supervisor repeating SIGTERM) must
    not turn exit 130 into -2/-15: before, one landing 50-100 ms after the first did."""
    path = tmp_path / "s.store"
    proc = _long_recording(path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list_segment_ids(path):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    for i in range(400):
        time.sleep(0.005)
        if proc.poll() is not None:
            break
        try:
            proc.send_signal((signal.SIGTERM, signal.SIGINT)[i % 2])
        except ProcessLookupError:
            break
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err
    assert verify(path).ok  # flushed and closed: nothing left recording


KILL_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    import tools.recover as r
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # after the repair transaction committed
    r._remove_duplicates = die
    r.recover(sys.argv[1])
    """
)


def test_an_interrupted_recover_still_reports_the_loss_once(tmp_path, assault_frames):
    path = tmp_path / "l.store"
    record_episodes(path, assault_frames, episodes=2, steps=10, overrides=RAW_SMALL)
    with FrameStore.open(path, readonly=True) as store:
        steps = store.read_steps(2)
    seg, off, _slot = steps[5].frame
    # how many frames share that chunk depends on the writer's timing (a chunk closes
    # early when the queue runs dry): every one of them is lost, and counted once
    lost = sum(1 for s in steps if s.frame is not None and s.frame[:2] == (seg, off))
    assert 1 <= lost <= RAW_SMALL["chunk_frames"]
    with open(segment_path(path, seg), "r+b") as fp:  # one flipped pixel in a chunk
        fp.seek(off + 3000)
        byte = fp.read(1)
        fp.seek(off + 3000)
        fp.write(bytes([byte[0] ^ 0x40]))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, str(path)], env=ENV, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL
    result = run_cli("recover", path)
    assert result.exit_code == 3
    assert f"LOST: episode 2: {lost} frame(s)" in result.output, result.output
    again = run_cli("recover", path)
    assert again.exit_code == 0 and "nothing to recover" in again.output, again.output


def test_a_second_signal_caught_with_the_first_raises_nothing_later():
    """SIGINT and SIGTERM reaching Python at once (the usual case on a loaded machine, where
    the test above once failed): the first interrupts, the second is dropped. Before the
    fix the handler switched both to SIG_IGN, and CPython then raised ``OSError: Signal 15
    ignored due to race condition`` at a later line (a traceback instead of exit 130). The
    two signals are held with a signal mask and released together, so this is exact, not a
    race the test hopes to hit."""
    script = textwrap.dedent(
        """
        import os, signal
        from tools.record import sigterm_as_interrupt
        both = {signal.SIGINT, signal.SIGTERM}
        interrupted = 0
        for _ in range(300):  # CPython loses the race in some rounds, not all: many
            try:
                with sigterm_as_interrupt():
                    signal.pthread_sigmask(signal.SIG_BLOCK, both)
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGTERM)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)
                    for _ in range(1000):
                        pass
            except KeyboardInterrupt:
                interrupted += 1
            for _ in range(1000):  # the flush and close after an interrupt run to the end
                pass
            os.kill(os.getpid(), signal.SIGTERM)  # a late one: ignored
            os.kill(os.getpid(), signal.SIGINT)
        print(interrupted)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "300", "")
