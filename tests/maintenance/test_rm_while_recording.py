"""Deleting finished episodes while a recorder of this process records into the store
(the GUI's Delete during a Play recording; a library user holding a ``Recorder``).

The recorder holds the one writer lock, so its writer writes ``rm``'s tombstone (a note
segment of ``DELETED`` records) in either placement, the storage process included; the
SQLite commit follows. The recording goes on unharmed, verify is clean, a catalogue
rebuilt from the segments (framestore.db deleted) keeps the episodes deleted, and the
crash guarantees are a plain rm's: killed between the tombstone and the commit (the
producer, or the writer that wrote it), ``recover`` finishes the deletion.

Frames are real Assault frames (raw codec, 1 MiB segments: the writer rotates segments
after the note segment took an id); crash children are fresh ``sys.executable -c``
processes that exit with ``os._exit`` right after the tombstone is on disk, or are
SIGKILLed at random moments around it.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _kills import run_and_kill, storage_pid
from conftest import WRITERS, alive, assert_one_line_error, wait_for, writer_overrides
from test_rebuild_catalogue import catalogue, delete_catalogue
from test_rm_tombstone import note_segments

from framestore import EpisodeNotFound, FrameStore, InvalidInput
from framestore.errors import DiskFull
from tools.gc import collect
from tools.recover import recover
from tools.verify import verify

ENV_ID = "ALE/Assault-v5"
SMALL = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
STEPS = 12


def record(rec, frames: list[np.ndarray], seed: int) -> int:
    eid = rec.begin_episode(seed=seed)
    for i, f in enumerate(frames):
        rec.record_step(f, action=i % 7, reward=1.0)
    rec.end_episode()
    return eid


def frames_of(path: Path, eid: int) -> list[np.ndarray]:
    with FrameStore.open(path, readonly=True) as store:
        return store.read_frames(eid)


def same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    return len(got) == len(want) and all(
        np.array_equal(a, b) for a, b in zip(got, want, strict=True)
    )


def rebuilt_equal(path: Path) -> None:
    """framestore.db deleted, recover rebuilds the catalogue equal table by table."""
    tables = catalogue(path)
    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.data_lost
    assert catalogue(path) == tables


@pytest.mark.parametrize("placement", WRITERS)
def test_finished_episodes_are_deleted_while_recording_goes_on(tmp_path, assault_frames, placement):
    path = tmp_path / "s.store"
    chunks = [assault_frames[i * STEPS : (i + 1) * STEPS] for i in range(6)]
    overrides = {**SMALL, **writer_overrides(placement)}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        done = [record(rec, chunks[i], seed=i) for i in range(3)]
        live = rec.begin_episode(seed=3)
        for i, f in enumerate(chunks[3]):
            rec.record_step(f, action=i % 7)
        # the episode being recorded: refused, nothing written
        with pytest.raises(InvalidInput, match=f"episode {live} is being recorded"):
            store.delete_episodes([done[0], live])
        with pytest.raises(EpisodeNotFound):
            store.delete_episodes([done[0], 999])
        with pytest.raises(InvalidInput, match="being recorded"):
            store.delete_episodes([live], dry_run=True)
        assert [e.id for e in store.delete_episodes([done[0]], dry_run=True)] == [done[0]]
        assert note_segments(path) == []
        # another process's rm (the CLI) still refuses in one line: it is not the writer
        cli = subprocess.run(
            [sys.executable, "-m", "tools", "rm", str(path), "--episode", str(done[0])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "stop recording first" in assert_one_line_error(cli)
        # through the store: its recorder's writer writes the tombstone
        gone = store.delete_episodes([done[0]])
        assert [e.id for e in gone] == [done[0]] and gone[0].status == "complete"
        assert len(note_segments(path)) == 1
        for i, f in enumerate(chunks[4]):  # the recording goes on, segments rotate
            rec.record_step(f, action=i % 7)
        rec.end_episode()
        # an episode just ended (its end not committed yet), through the recorder
        ended = record(rec, chunks[5], seed=5)
        assert [e.id for e in rec.delete_episodes([ended, done[2]])] == [ended, done[2]]
        assert len(note_segments(path)) == 2
        assert {e.id for e in store.episodes()} == {done[1], live}
        with pytest.raises(EpisodeNotFound):  # deleted already
            rec.delete_episodes([done[0]])
    assert verify(path).ok, verify(path).problems
    assert same(frames_of(path, done[1]), chunks[1])
    assert same(frames_of(path, live), chunks[3] + chunks[4])
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == {done[1], live}
        assert store.episode(live).status == "complete" and store.episode(live).steps == 24
    rebuilt_equal(path)
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == {done[1], live}
    # gc reclaims them (a tombstone stays while a segment it lists does: one may hold
    # a record naming its episodes); the rest reads back bit-exact, and so after a
    # rebuild (which holds the deleted episodes whose records gc left, as `deleted`)
    collect(path, threshold=1.0)
    for rebuilt in (False, True):
        if rebuilt:
            delete_catalogue(path)
            assert not recover(path).data_lost
        assert verify(path).ok
        with FrameStore.open(path, readonly=True) as store:
            assert {e.id for e in store.episodes()} == {done[1], live}
        assert same(frames_of(path, done[1]), chunks[1])
        assert same(frames_of(path, live), chunks[3] + chunks[4])


@pytest.mark.parametrize("placement", WRITERS)
def test_a_tombstone_that_cannot_be_written_fails_the_rm_not_the_recording(
    tmp_path, assault_frames, placement, monkeypatch
):
    """The writer writes the note segment beside the recording: when that fails (here a
    full disk, raised where the note is written; ``fork`` carries it into the storage
    process), the rm raises it and changes nothing, and the recording goes on."""
    import framestore.write._chunks as chunks

    path = tmp_path / "s.store"

    def full(root, *_args, **_kwargs):
        raise DiskFull(str(root), "test")

    monkeypatch.setattr(chunks, "write_note_segment", full)
    overrides = {**SMALL, **writer_overrides(placement)}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        first = record(rec, assault_frames[:STEPS], seed=0)
        live = rec.begin_episode(seed=1)
        with pytest.raises(DiskFull):
            store.delete_episodes([first])
        for i, f in enumerate(assault_frames[STEPS : 2 * STEPS]):
            rec.record_step(f, action=i % 7)
        rec.end_episode()
        assert {e.id for e in store.episodes()} == {first, live}
    assert note_segments(path) == [] and verify(path).ok
    assert same(frames_of(path, first), assault_frames[:STEPS])
    assert same(frames_of(path, live), assault_frames[STEPS : 2 * STEPS])


# --------------------------------------------------------------------------- crashes
RM_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import framestore.write._chunks as chunks
    from framestore import FrameStore
    from framestore.write._storage import ThreadStorage
    from framestore.write.process._client import ProcessStorage

    store_path, placement, mode, ids, frames_path, progress = sys.argv[1:]
    out = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    write = chunks.write_note_segment
    producer = os.getpid()

    def noted(*args, **kwargs):  # the writer side (with fork: the storage process's too)
        size = write(*args, **kwargs)
        os.write(out, b"noted\\n")
        if mode == "writer":
            os._exit(17)  # the writer's process dies with the tombstone on disk
        return size

    chunks.write_note_segment = noted
    for cls in (ThreadStorage, ProcessStorage):
        def written(self, *args, _real=cls.write_note, **kwargs):
            where = _real(self, *args, **kwargs)
            if mode == "producer" and os.getpid() == producer:  # not a forked writer
                os._exit(17)  # the producer dies before its SQLite commit
            return where
        cls.write_note = written

    frames = np.load(frames_path)
    overrides = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
    if placement == "process":
        overrides |= {"writer": "process", "writer_start": "fork"}
    with FrameStore.open(store_path) as store, store.recorder(
        "ALE/Assault-v5", overrides=overrides
    ) as rec:
        os.write(out, f"pid {rec.writer_pid}\\n".encode())
        rec.begin_episode(seed=99)
        for i, f in enumerate(frames[:8]):
            rec.record_step(f, action=i % 7)
        rec.flush()
        os.write(out, b"ready\\n")
        try:
            store.delete_episodes([int(i) for i in ids.split(",")])
        except Exception as e:  # the storage process died: WriterFailed
            os.write(out, f"failed {type(e).__name__}\\n".encode())
            os._exit(18)
        for i, f in enumerate(frames[8:]):
            rec.record_step(f, action=i % 7)
        rec.end_episode()
    os.write(out, b"done\\n")
    """
)


@pytest.fixture(scope="module")
def rm_base(tmp_path_factory, assault_frames):
    """A store of 4 finished episodes, their frames, and the frames the children
    record (saved for them)."""
    tmp = tmp_path_factory.mktemp("rm-rec")
    path = tmp / "base.store"
    want = {}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=SMALL) as rec:
        for e in range(4):
            frames = assault_frames[e * STEPS : (e + 1) * STEPS]
            want[record(rec, frames, seed=e)] = frames
    child_frames = np.stack(assault_frames[100:124])
    np.save(tmp / "child.npy", child_frames)
    return path, want, tmp / "child.npy", list(child_frames)


def check_after_crash(path: Path, want: dict, doomed: list[int], child: list) -> bool:
    """recover, then: ``doomed`` all deleted (a tombstone on disk) or none, the other
    episodes bit-exact (the child's recording: the steps that committed), verify clean,
    a rebuilt catalogue equal. Returns whether the rm took effect."""
    recover(path)
    assert verify(path).ok, verify(path).problems
    with FrameStore.open(path, readonly=True) as store:
        live = {e.id for e in store.episodes()}
        for eid in live:
            got = store.read_frames(eid)
            assert same(got, want[eid]) if eid in want else same(got, child[: len(got)])
    deleted = set(want) - live
    assert deleted in (set(), set(doomed)), deleted
    assert bool(note_segments(path)) == bool(deleted)
    rebuilt_equal(path)
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == live
    return bool(deleted)


def _wait_storage_gone(progress: Path) -> None:
    pid = storage_pid(progress)
    if pid is not None:  # it commits what it was sent, then exits (and unlocks)
        wait_for(lambda: not alive(pid), timeout=60, interval=0.01)


@pytest.mark.parametrize("placement", WRITERS)
@pytest.mark.parametrize("mode", ["producer", "writer"])
def test_killed_between_tombstone_and_commit_recover_finishes_it(
    rm_base, tmp_path, placement, mode
):
    """``producer``: the process that commits dies once the writer said the tombstone
    is on disk; ``writer``: the writer's process dies right after writing it (the
    storage process alone, with ``process``: the producer's rm then fails)."""
    base, want, child_npy, child = rm_base
    path = tmp_path / "rm.store"
    shutil.copytree(base, path)
    doomed = sorted(want)[1:3]
    progress = tmp_path / "progress"
    proc = subprocess.run(
        [sys.executable, "-c", RM_CHILD, str(path), placement, mode,
         ",".join(map(str, doomed)), str(child_npy), str(progress)],
        capture_output=True,
        timeout=180,
    )  # fmt: skip
    _wait_storage_gone(progress)
    expected = 18 if (mode, placement) == ("writer", "process") else 17
    assert proc.returncode == expected, proc.stderr.decode()
    if expected == 18:
        assert "failed WriterFailed" in progress.read_text()
    # the tombstone is on disk, the catalogue never heard of it
    assert len(note_segments(path)) == 1
    with FrameStore.open(path, readonly=True) as store:
        assert set(want) <= {e.id for e in store.episodes()}
    report = recover(path)
    assert report.episodes_deleted == doomed and not report.data_lost
    assert check_after_crash(path, want, doomed, child)


@pytest.mark.parametrize("placement", WRITERS)
def test_sigkill_around_a_recorder_rm(rm_base, tmp_path, placement):
    """SIGKILL a random moment after the child is ready to rm (mostly before the
    tombstone) or after its tombstone is on disk: all or none deleted, never half."""
    base, want, child_npy, child = rm_base
    rng = random.Random(23)
    doomed = sorted(want)[::2]
    ids = ",".join(map(str, doomed))
    for i, after in enumerate(("ready", "noted", "ready", "noted")):
        path = tmp_path / f"rm-{i}.store"
        shutil.copytree(base, path)
        progress = tmp_path / f"rm-{i}.progress"
        args = [str(path), placement, "random", ids, str(child_npy)]
        finished = run_and_kill(RM_CHILD, args, progress, rng.uniform(0.0, 0.03), after=after)
        took = check_after_crash(path, want, doomed, child)
        assert took or (after == "ready" and finished is None)
        shutil.rmtree(path)
