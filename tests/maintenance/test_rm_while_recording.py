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

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _kills import run_and_kill, storage_pid
from conftest import WRITERS, alive, assert_one_line_error, wait_for, writer_overrides
from test_rebuild_catalogue import catalogue, delete_catalogue
from test_rm_tombstone import note_segments

from framestore import EpisodeNotFound, FrameStore, InvalidInput
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.errors import DiskFull, FrameStoreError, QueueFull, WriterFailed
from tools.gc import collect, gc_blocker
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


def _segments_with(path: Path, kind: str, key: int) -> list[int]:
    """Segments holding a ``kind`` record (``episode_end``, ``chunk``) of stream ``key``."""
    out = []
    for sid in list_segment_ids(path):
        scan = scan_segment(segment_path(path, sid), sid)
        for r in scan.records:
            found = r.header.stream_key if r.header else (r.meta or {}).get("stream_key")
            if scan.kind_of(r) == kind and found == key:
                out.append(sid)
                break
    return out


@pytest.mark.parametrize("placement", WRITERS)
def test_a_deleted_episode_stays_deleted_when_a_note_sits_before_its_last_records(
    tmp_path, assault_frames, placement
):
    """An rm while recording writes its note segment at the writer's next id while the
    data segment is open: the segment after an episode's last frames can be that note,
    and its steps without frames and its ``EPISODE_END`` lie in the data segment after.
    Its tombstone must list that segment too: gc keeps the tombstone while it is left,
    and catalogues rebuilt after each gc keep the episode deleted (it used to list only
    'the next segment', the note: the second rebuild brought it back, review)."""
    path = tmp_path / "s.store"
    overrides = {**SMALL, **writer_overrides(placement)}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        first = record(rec, assault_frames[:4], seed=0)
        doomed = rec.begin_episode(seed=1)
        for f in assault_frames[4:8]:
            rec.record_step(f, action=0)
        rec.flush()
        store.delete_episodes([first])  # its note: written while this segment is open
        for i in range(12):  # steps without frames, big infos: into the next segments
            pad = np.random.default_rng(i).bytes(30_000).hex()
            rec.record_step(None, action=0, info={"pad": pad, "i": i})
        rec.end_episode()
        kept = record(rec, assault_frames[8:16], seed=2)
        rec.flush()
        (note,) = note_segments(path)
        assert _segments_with(path, "chunk", doomed)[0] < note
        assert _segments_with(path, "episode_end", doomed)[0] > note  # the layout at issue
        store.delete_episodes([doomed])
    for rebuild in range(2):
        collect(path)
        delete_catalogue(path)
        report = recover(path)
        assert not report.data_lost
        assert verify(path).ok, verify(path).problems
        with FrameStore.open(path, readonly=True) as store:
            assert {e.id for e in store.episodes()} == {kept}, rebuild
        assert same(frames_of(path, kept), assault_frames[8:16])


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


def _unfinished_rm(path: Path, first: int, note: int) -> None:
    """A tombstone of ``first`` on disk (segment ``note``) without its catalogue commit,
    the recorder closed: the episode still listed, the note without a row (the
    recorder's close does not register it), so verify flags it and gc refuses; recover
    finishes the deletion, and a catalogue rebuilt after it agrees."""
    assert note_segments(path) == [note]
    with FrameStore.open(path, readonly=True) as store:
        assert first in {e.id for e in store.episodes()}
        assert note not in store.catalog.segments.rows()
    report = verify(path)
    assert any(p.segment == note and "no row" in p.message for p in report.problems)
    with FrameStore.open(path) as store:
        assert "tombstone" in (gc_blocker(store) or "")
    with pytest.raises(InvalidInput, match="recover"):
        collect(path)
    assert recover(path).episodes_deleted == [first]
    assert verify(path).ok, verify(path).problems
    with FrameStore.open(path, readonly=True) as store:
        assert first not in {e.id for e in store.episodes()}
    rebuilt_equal(path)


@pytest.mark.parametrize("placement", WRITERS)
def test_an_rm_whose_tombstone_the_writer_does_not_reach_in_time_is_cancelled(
    tmp_path, assault_frames, placement, monkeypatch
):
    """``delete_episodes(timeout=...)``: the writer is busy with what was recorded
    before the tombstone (held here until the rm gave up). The rm raises ``QueueFull``
    saying nothing was deleted, and nothing is: the tombstone is cancelled, never
    written. (It used to stay queued, be written later and be registered by the
    recorder's close: the next recover deleted the episode.)"""
    from framestore.write._chunks import ChunkWriter

    gate = tmp_path / "hold"
    append = ChunkWriter._append

    def held(self, *args, **kwargs):  # ``fork`` carries it into the storage process
        while gate.exists():
            time.sleep(0.01)
        return append(self, *args, **kwargs)

    monkeypatch.setattr(ChunkWriter, "_append", held)
    path = tmp_path / "s.store"
    overrides = {**SMALL, **writer_overrides(placement)}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        first = record(rec, assault_frames[:STEPS], seed=0)
        rec.flush()
        gate.touch()
        live = rec.begin_episode(seed=1)
        for i, f in enumerate(assault_frames[STEPS : STEPS + 8]):  # 2 chunks handed off
            rec.record_step(f, action=i % 7)
        try:
            with pytest.raises(QueueFull, match="nothing was deleted") as raised:
                rec.delete_episodes([first], timeout=0.5)
        finally:
            gate.unlink()  # the writer goes on (and the recorder can close)
        assert "cannot keep up" not in str(raised.value)
        for i, f in enumerate(assault_frames[STEPS + 8 : 2 * STEPS]):
            rec.record_step(f, action=i % 7)
        rec.end_episode()
        rec.flush()
        assert {e.id for e in store.episodes()} == {first, live}
    assert note_segments(path) == []
    assert verify(path).ok, verify(path).problems
    assert recover(path).episodes_deleted == []
    rebuilt_equal(path)
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == {first, live}
    assert same(frames_of(path, first), assault_frames[:STEPS])
    assert same(frames_of(path, live), assault_frames[STEPS : 2 * STEPS])


@pytest.mark.parametrize("placement", WRITERS)
def test_an_rm_whose_commit_fails_is_finished_by_recover(
    tmp_path, assault_frames, placement, monkeypatch
):
    """The tombstone is on disk, the SQLite commit fails (a busy or full database): the
    rm raises saying the deletion took effect and recover finishes it; the recording
    goes on, and its close leaves the note without a row (it used to register it:
    verify was clean, gc ran, and the episode stayed listed until some later recover
    deleted it)."""
    import framestore.write.recorder as recorder

    def locked(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(recorder, "commit_deletion", locked)
    path = tmp_path / "s.store"
    overrides = {**SMALL, **writer_overrides(placement)}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=overrides) as rec:
        first = record(rec, assault_frames[:STEPS], seed=0)
        with pytest.raises(FrameStoreError, match="recover. finishes the deletion"):
            store.delete_episodes([first])
        (note,) = note_segments(path)
        live = record(rec, assault_frames[STEPS : 2 * STEPS], seed=1)
    _unfinished_rm(path, first, note)
    assert same(frames_of(path, live), assault_frames[STEPS : 2 * STEPS])


def test_an_rm_whose_storage_process_died_after_the_tombstone_is_finished_by_recover(
    tmp_path, assault_frames, monkeypatch
):
    """The storage process dies right after writing the tombstone; the program closes
    its recorder as usual (raising the death). The rm's error says the tombstone may be
    on disk and what finishes it; the close leaves it without a row."""
    import framestore.write._chunks as chunks

    write = chunks.write_note_segment

    def noted(*args, **kwargs):  # in the storage process (``fork``)
        write(*args, **kwargs)
        os._exit(17)

    monkeypatch.setattr(chunks, "write_note_segment", noted)
    path = tmp_path / "s.store"
    with FrameStore.open(path) as store:
        rec = store.recorder(ENV_ID, overrides={**SMALL, **writer_overrides("process")})
        first = record(rec, assault_frames[:STEPS], seed=0)
        rec.flush()
        with pytest.raises(WriterFailed, match="recover. finishes it"):
            store.delete_episodes([first])
        with pytest.raises(WriterFailed):
            rec.close()
    (note,) = note_segments(path)
    _unfinished_rm(path, first, note)


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
