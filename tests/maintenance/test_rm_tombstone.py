"""``rm`` is crash-safe and survives a lost catalogue: its tombstone (a ``DELETED``
record in a note segment, written and fsynced before its SQLite commit) is the commit
point. A process killed at any moment of an ``rm`` leaves a store where, after
``recover``, the episodes are either all deleted (tombstone on disk) or all live (no
tombstone), verify is clean, and a catalogue rebuilt from the segments (framestore.db
deleted) equals it table by table.

The store is real: Assault frames recorded through a recorder, raw codec, 1 MiB
segments; the children are fresh ``sys.executable -c`` processes, killed with SIGKILL
(``run_and_kill``) or exiting with ``os._exit`` right after the tombstone is on disk.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _kills import run_and_kill
from conftest import run_cli
from oldstores import copy_fixture
from test_rebuild_catalogue import catalogue, delete_catalogue

from framestore import FrameStore, InvalidInput
from framestore.catalog import COMPACTION_OUTPUTS
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from tools.gc import collect
from tools.recover import recover
from tools.verify import verify

ENV_ID = "ALE/Assault-v5"
OVERRIDES = {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20}
STEPS = 12
EPISODES = 4
KILL_TRIALS = 12

RM_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import framestore.state.bookkeeping as bookkeeping
    from framestore import FrameStore

    store_path, mode, ids, progress = sys.argv[1:]
    out = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    write = bookkeeping.write_note_segment

    def noted(*args, **kwargs):  # spread the rm so random kills land on each side
        time.sleep(0.01)
        size = write(*args, **kwargs)
        os.write(out, b"noted\\n")
        if mode == "noted":
            os._exit(17)  # a crash: no finally blocks, no close, no unlock
        time.sleep(0.01)
        return size

    bookkeeping.write_note_segment = noted
    os.write(out, b"ready\\n")
    with FrameStore.open(store_path) as store:
        store.delete_episodes([int(i) for i in ids.split(",")])
    os.write(out, b"done\\n")
    """
)


@pytest.fixture(scope="module")
def rm_base(tmp_path_factory, assault_frames):
    """A store of 4 episodes over several sealed segments, and their frames."""
    path = tmp_path_factory.mktemp("rm-base") / "base.store"
    want = {}
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=OVERRIDES) as rec:
        for e in range(EPISODES):
            eid = rec.begin_episode(seed=e)
            frames = assault_frames[e * STEPS : (e + 1) * STEPS]
            for i, f in enumerate(frames):
                rec.record_step(f, action=i % 7, reward=1.0)
            rec.end_episode()
            want[eid] = frames
    return path, want


def note_segments(path: Path) -> list[int]:
    """Segments holding no chunk, only ``deleted`` records: rm's tombstones."""
    out = []
    for sid in list_segment_ids(path):
        scan = scan_segment(segment_path(path, sid), sid)
        kinds = {scan.kind_of(r) for r in scan.records} - {"seal"}
        if kinds == {"deleted"}:
            out.append(sid)
    return out


def check_after_rm_crash(path: Path, want: dict, doomed: list[int]) -> bool:
    """recover, then: all of ``doomed`` deleted (a tombstone on disk) or none, the
    others bit-exact, verify clean, and the catalogue rebuilt from the segments equal.
    Returns whether the rm took effect."""
    recover(path)
    result = run_cli("verify", path)
    assert result.exit_code == 0 and result.output.startswith("ok:"), result.output
    with FrameStore.open(path, readonly=True) as store:
        live = {e.id for e in store.episodes()}
        for eid in live:
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, want[eid], strict=True))
    deleted = set(want) - live
    assert deleted in (set(), set(doomed)), deleted
    assert bool(note_segments(path)) == bool(deleted)
    tables = catalogue(path)
    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.data_lost
    assert catalogue(path) == tables
    return bool(deleted)


def rm_ended_after_its_tombstone(path: Path, doomed: list[int], progress: Path) -> None:
    """An rm of ``doomed`` in a child that ends itself (exit 17) right after its
    tombstone is on disk, before the SQLite commit."""
    proc = subprocess.run(
        [sys.executable, "-c", RM_CHILD, str(path), "noted", ",".join(map(str, doomed)),
         str(progress)],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 17, proc.stderr.decode()


def test_an_rm_killed_after_its_tombstone_is_finished_by_recover(rm_base, tmp_path):
    base, want = rm_base
    path = tmp_path / "rm.store"
    shutil.copytree(base, path)
    doomed = sorted(want)[1:3]
    rm_ended_after_its_tombstone(path, doomed, tmp_path / "rm.progress")
    # The tombstone is on disk, the SQLite commit never happened: verify says so (the
    # note segment has no row; the episodes are still live), gc refuses until recover.
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == set(want)
    problems = verify(path).problems
    assert [p.kind for p in problems] == ["unexpected segment"], problems
    result = run_cli("gc", path)
    assert result.exit_code != 0 and "recover" in result.output
    report = recover(path)
    assert report.episodes_deleted == doomed and not report.data_lost
    assert check_after_rm_crash(path, want, doomed)


def test_an_rm_after_a_gc_killed_before_its_copies_takes_no_id_gc_reserved(rm_base, tmp_path):
    """gc reserves its output ids (``compaction.outputs``) before their files exist; a gc
    killed then leaves them reserved, and the next gc or recover deletes those ids as
    leftovers. An rm in between must not place its tombstone at such an id, or an rm
    killed after its tombstone would be undone by that clean-up (found in review)."""
    base, want = rm_base
    path = tmp_path / "rm.store"
    shutil.copytree(base, path)
    with FrameStore.open(path) as store:
        reserved = max(list_segment_ids(path)) + 1
        store.catalog.meta.set(COMPACTION_OUTPUTS, [reserved, reserved + 1])
    doomed = sorted(want)[1:3]
    rm_ended_after_its_tombstone(path, doomed, tmp_path / "rm.progress")
    assert note_segments(path) == [reserved + 2]
    report = recover(path)
    assert report.episodes_deleted == doomed and not report.data_lost
    assert check_after_rm_crash(path, want, doomed)


def _rm_trial(base: Path, tmp: Path, index: int, doomed: list[int], after: str, delay: float):
    path = tmp / f"rm-{index}.store"
    shutil.copytree(base, path)
    progress = tmp / f"rm-{index}.progress"
    ids = ",".join(map(str, doomed))
    finished = run_and_kill(RM_CHILD, [str(path), "random", ids], progress, delay, after=after)
    return path, finished


def test_sigkill_during_rm_at_random_moments(rm_base, tmp_path):
    base, want = rm_base
    rng = random.Random(19)
    doomed = sorted(want)[::2]
    # Each kill comes a random moment after the child is ready (mostly before the
    # tombstone, however loaded the machine) or after its tombstone is on disk (between
    # it and the SQLite commit, or after the commit).
    trials = [(("ready", "noted")[i % 2], rng.uniform(0.0, 0.03)) for i in range(KILL_TRIALS)]
    outcomes = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_rm_trial, base, tmp_path, i, doomed, after, delay)
            for i, (after, delay) in enumerate(trials)
        ]
        for (after, _delay), fut in zip(trials, futures, strict=True):
            path, finished = fut.result()
            took = check_after_rm_crash(path, want, doomed)
            # a kill after the tombstone, or a child that finished: the rm happened
            assert took or (after == "ready" and finished is None)
            outcomes.append(took)
            shutil.rmtree(path)
    assert True in outcomes


def test_gc_keeps_a_tombstone_while_a_segment_it_lists_holds_records(rm_base, tmp_path):
    """At the default threshold gc may leave a segment holding a deleted episode's
    chunks; the tombstone stays as long as such a segment does."""
    base, want = rm_base
    path = tmp_path / "rm.store"
    shutil.copytree(base, path)
    first = sorted(want)[0]
    with FrameStore.open(path) as store:
        store.delete_episodes([first])
    tomb = note_segments(path)
    assert len(tomb) == 1
    collect(path, threshold=0.0)  # rewrites nothing: the segments stay
    assert note_segments(path) == tomb
    delete_catalogue(path)
    assert recover(path).episodes_deleted == [first]
    collect(path, threshold=1.0)
    assert note_segments(path) == []
    assert verify(path).ok


def test_rm_while_a_recorder_holds_the_store_refuses_and_changes_nothing(rm_base, tmp_path):
    """rm writes into the segments, so it needs the one writer's lock: with a recorder
    open that is not this store's own (another ``FrameStore``, the CLI) it refuses in one
    line and writes nothing. (The recorder's own store deletes through it:
    test_rm_while_recording.py.)"""
    base, want = rm_base
    path = tmp_path / "rm.store"
    shutil.copytree(base, path)
    first = sorted(want)[0]
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=OVERRIDES):
        with FrameStore.open(path) as other, pytest.raises(InvalidInput, match="stop recording"):
            other.delete_episodes([first])
        result = run_cli("rm", path, "--episode", first)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert "stop recording first" in result.output
    assert note_segments(path) == []  # no tombstone (the recorder wrote its RUN_END)
    with FrameStore.open(path, readonly=True) as store:
        assert {e.id for e in store.episodes()} == set(want)


def test_a_tombstone_covers_records_written_long_after_the_last_frame(tmp_path, assault_frames):
    """Three episodes recorded side by side (``record_steps``): A has frames for its
    first 4 steps only, then 44 steps without frames while B's frames fill several
    segments; C has frames for 12 steps. A's frameless chunk and EPISODE_END land in the
    last segment, far after its last frame. rm A, rm C (two tombstones), gc below
    the threshold that rewrites the segments of their frames: A's tombstone must still
    be there while a segment holds A's records, or a rebuilt catalogue brings A back
    (44 steps, no frames). It did, before rm listed the segments by their ``EPISODE``
    records (issue 19)."""
    path = tmp_path / "tail.store"
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=OVERRIDES) as rec:
        a, b, c = (rec.open_episode(seed=s) for s in (1, 2, 3))
        for i in range(48):
            frame_a = assault_frames[i] if i < 4 else None
            if i < 12:
                rec.record_steps(
                    [a, b, c], [frame_a, assault_frames[100 + i], assault_frames[50 + i]],
                    actions=[i % 7, 1, 2],
                )  # fmt: skip
            else:
                rec.record_steps([a, b], [frame_a, assault_frames[100 + i]], actions=[i % 7, 1])
            if i == 11:
                rec.close_episode(c)
        rec.close_episode(b)
        rec.close_episode(a)
    with FrameStore.open(path) as store:
        b_frames = store.read_frames(b)
        b_steps = store.read_steps(b)
        store.delete_episodes([a])
        store.delete_episodes([c])
    assert len(note_segments(path)) == 2
    collect(path, threshold=0.8)  # the segments of A's and C's frames, not B's alone
    assert verify(path).ok

    def described(eid: int) -> list[int]:
        return [
            sid for sid in list_segment_ids(path)
            if any(r.meta.get("stream_key") == eid
                   for r in scan_segment(segment_path(path, sid), sid).meta_records)
        ]  # fmt: skip

    assert described(a)  # A's last records outlived the segments of its frames
    assert note_segments(path)  # so its tombstone is kept
    want = catalogue(path)
    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.data_lost, report.as_dict()
    assert a in report.episodes_deleted
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [b]
        got = store.read_frames(b)
        assert all(np.array_equal(x, y) for x, y in zip(got, b_frames, strict=True))
        moved = [dataclasses.replace(s, frame=None) for s in store.read_steps(b)]
        assert moved == [dataclasses.replace(s, frame=None) for s in b_steps]
    got = catalogue(path)
    assert got["steps"] == want["steps"] and got["segments"] == want["segments"]
    assert {r[0]: r[10] for r in got["episodes"]}[a] == "deleted"
    # once a gc rewrites the last of them, the tombstone goes with A's records
    collect(path, threshold=1.0)
    assert not described(a) and verify(path).ok
    delete_catalogue(path)
    recover(path)
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [b]


@pytest.mark.parametrize("fixture", ["store-v0.1.0", "store-v0.2.0"])
def test_rmd_episodes_of_a_format_1_2_store_stay_gone_in_a_rebuilt_catalogue(tmp_path, fixture):
    """rm on a store of format 1-2 segments (the fixtures of 0.1.0 and 0.2.0): its
    tombstone is the only segment naming the store (no EPISODE records), and its frames
    say nothing but their stream key. With framestore.db deleted, recover takes the
    store id from the tombstone and leaves the rm'd episode's frames alone: it does not
    come back as a recovered episode (it did, before)."""
    path = copy_fixture(fixture, tmp_path)
    with FrameStore.open(path, readonly=True) as store:
        frames = {e.id: store.read_frames(e.id) for e in store.episodes()}
    assert sorted(frames) == [1, 2, 3]
    assert run_cli("rm", path, "--episode", 2).exit_code == 0
    with FrameStore.open(path, readonly=True) as store:
        store_id = store.catalog.meta.store_id()
    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 3, result.output  # their step metadata was in the catalogue
    assert "episode 2" not in result.output, result.output
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        assert store.catalog.meta.store_id() == store_id
        assert [e.id for e in store.episodes()] == [1, 3]
        for eid in (1, 3):
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))
    # gc then reclaims its frames (no row points at them), the tombstone with them
    assert run_cli("gc", path, "--threshold", "1").exit_code == 0
    assert note_segments(path) == [] and verify(path).ok
    delete_catalogue(path)
    recover(path)
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [1, 3]
