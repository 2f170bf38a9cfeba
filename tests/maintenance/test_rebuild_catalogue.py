"""Segments of format version 3 describe themselves: with ``framestore.db`` deleted (or
its rows), ``framestore recover`` rebuilds the catalogue from the segments alone, equal
to the original table by table (runs, episodes, steps, segments, the store id).

The recordings are real: ALE/Assault-v5 through ``RecordFrames`` (seeded, with reset
options, a step trigger that records some steps without their frame, info, rewards,
terminations), a vector-style recording of interleaved episodes through
``record_steps`` of real frames, a second run with the ``drop`` policy, and segments
small enough to rotate, so episodes span segments.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from _gcstops import gc_stopped_at
from _kills import run_and_kill
from conftest import WRITERS, run_cli, writer_overrides
from oldstores import copy_fixture

import tools.gc as gc_module
from framestore import FrameStore, RecordFrames
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.envs import make_env
from tools.gc import PHASES, collect
from tools.recover import recover
from tools.verify import verify

ENV_ID = "ALE/Assault-v5"
DB_FILES = ("framestore.db", "framestore.db-wal", "framestore.db-shm")
SMALL = {"segment_bytes": 1 << 20, "chunk_frames": 8, "codec": "raw"}


def catalogue(path: Path) -> dict[str, list[tuple]]:
    """Every table recover is to rebuild, as sorted rows (``segments.created`` aside: a
    segment's row is made when the catalogue learns of the file)."""
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        tables = {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("runs", "episodes", "steps")
        }
        tables["segments"] = conn.execute(
            "SELECT id, path, state, bytes, live_bytes, header_id FROM segments ORDER BY id"
        ).fetchall()
        tables["store_id"] = conn.execute(
            "SELECT value FROM meta WHERE key = 'store_id'"
        ).fetchall()
    return tables


def record_store(path: Path, frames: list[np.ndarray], writer: str) -> None:
    with FrameStore.open(path) as store:
        env = make_env("ALE/Assault-v5")
        wrapped = RecordFrames(
            env,
            store,
            step_trigger=lambda i: i % 7 != 3,  # some steps recorded without a frame
            overrides={**SMALL, **writer_overrides(writer)},
            config={"purpose": "rebuild test"},
        )
        try:
            for seed in (11, 12):
                wrapped.reset(seed=seed, options={"mode": 0})
                wrapped.action_space.seed(seed)
                for _ in range(30):
                    _obs, _r, term, trunc, _info = wrapped.step(wrapped.action_space.sample())
                    if term or trunc:
                        break
            wrapped.reset(seed=13)  # left open: closed as interrupted
            wrapped.step(0)
        finally:
            wrapped.close()
        overrides = {**SMALL, **writer_overrides(writer), "policy": "drop", "queue_frames": 8}
        with store.recorder("ALE/Assault-v5", overrides=overrides) as rec:
            eids = [rec.open_episode(seed=s, sub_env=i) for i, s in enumerate((21, 22))]
            for i in range(20):
                batch = np.stack([frames[i], frames[100 + i]])
                rec.record_steps(
                    eids, batch, actions=[i % 7, (i + 1) % 7], rewards=[0.5 * i, -1.0],
                    terminated=[i == 19, False], infos=[{"i": i}, None],
                )  # fmt: skip
            rec.close_episode(eids[0])
            rec.close_episode(eids[1], "interrupted")


def delete_catalogue(path: Path) -> None:
    for name in DB_FILES:
        (path / name).unlink(missing_ok=True)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_a_deleted_catalogue_is_rebuilt_table_by_table(tmp_path, assault_frames, writer):
    path = tmp_path / "s.store"
    record_store(path, assault_frames, writer)
    assert verify(path).ok
    want = catalogue(path)
    assert len(want["segments"]) >= 3 and len(want["runs"]) == 2
    with FrameStore.open(path, readonly=True) as store:
        frames = {e.id: store.read_frames(e.id) for e in store.episodes()}
        frameless = [s for e in store.episodes() for s in store.read_steps(e.id) if not s.frame]
    assert frameless  # the trigger (and maybe the drop policy) left steps without frames

    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0, result.output
    assert "rebuilt from the segments" in result.output and "nothing lost" in result.output
    assert catalogue(path) == want
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        for eid, got in frames.items():
            assert all(
                np.array_equal(a, b) for a, b in zip(store.read_frames(eid), got, strict=True)
            )
    assert "nothing to recover" in run_cli("recover", path).output


def test_deleted_rows_come_back_whole_and_the_report_says_so(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record_store(path, assault_frames, "thread")
    want = catalogue(path)
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("DELETE FROM steps WHERE episode_id IN (1, 4) OR step >= 10")
        conn.execute("DELETE FROM episodes WHERE id = 4")
        conn.execute("UPDATE episodes SET status = 'recording' WHERE id = 2")
    report = recover(path)
    assert not report.data_lost and not report.steps_without_metadata
    assert report.episodes_created == [4] and 2 in report.episodes_ended
    assert sum(report.steps_recovered.values()) == len(want["steps"]) - sum(
        1 for row in want["steps"] if row[0] not in (1, 4) and row[1] < 10
    )
    assert catalogue(path) == want


def test_a_catalogue_is_rebuilt_after_rm_and_gc(tmp_path, assault_frames):
    """gc copies the records that describe live episodes with their chunks (EPISODE,
    EPISODE_END, RUN_END, chunks of steps without frames), never a deleted episode's:
    the compacted segments still rebuild the catalogue; a second gc finds nothing to do."""
    path = tmp_path / "s.store"
    record_store(path, assault_frames, "thread")
    assert run_cli("rm", path, "--episode", 2).exit_code == 0
    tombstone = max(catalogue(path)["segments"])[0]  # rm's note segment: the newest
    result = run_cli("gc", path, "--threshold", 1, "--json")
    assert result.exit_code == 0 and '"segments_written": [' in result.output, result.output
    # every segment that held episode 2's records is gone: so is its tombstone
    assert tombstone in json.loads(result.output)["segments_deleted"]
    want = catalogue(path)
    want["episodes"] = [row for row in want["episodes"] if row[0] != 2]  # rm'd: forgotten
    again = run_cli("gc", path, "--json")  # the default threshold: nothing left to win
    assert '"segments_rewritten": []' in again.output, again.output

    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0, result.output
    assert catalogue(path) == want
    assert verify(path).ok


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_rmd_episodes_stay_gone_in_a_rebuilt_catalogue(tmp_path, assault_frames, writer):
    """``rm`` writes a tombstone (a DELETED record in a note segment) before its SQLite
    commit: with framestore.db deleted before any gc, the rebuilt catalogue holds the
    rm'd episodes deleted, exactly as the original did, and everything else bit-exact."""
    path = tmp_path / "s.store"
    record_store(path, assault_frames, writer)
    with FrameStore.open(path, readonly=True) as store:
        ids = [e.id for e in store.episodes()]
        frames = {e: store.read_frames(e) for e in ids}
        steps = {e: store.read_steps(e) for e in ids}
    doomed = [ids[1], ids[3]]
    result = run_cli("rm", path, *(a for e in doomed for a in ("--episode", e)))
    assert result.exit_code == 0, result.output
    assert verify(path).ok
    want = catalogue(path)
    assert sorted(r[0] for r in want["episodes"] if r[10] == "deleted") == doomed

    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.data_lost
    assert report.episodes_deleted == doomed
    assert catalogue(path) == want
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [e for e in ids if e not in doomed]
        for eid in ids:
            if eid in doomed:
                continue
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))
            assert store.read_steps(eid) == steps[eid]
    # gc reclaims them as it would have from the original catalogue
    assert run_cli("gc", path, "--threshold", 1).exit_code == 0
    delete_catalogue(path)
    assert recover(path).episodes_deleted == []  # nothing of them is left to name
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [e for e in ids if e not in doomed]


def test_verify_finds_rows_that_differ_from_their_segments(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record_store(path, assault_frames, "thread")
    report = verify(path)
    assert report.ok and report.steps_metadata_checked == len(catalogue(path)["steps"])
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("UPDATE steps SET reward = reward + 1 WHERE episode_id = 1 AND step = 4")
        conn.execute("UPDATE steps SET info = '{}' WHERE episode_id = 4 AND step IN (2, 3)")
    found = {(p.kind, p.episode, p.steps) for p in verify(path).problems}
    assert found == {("metadata mismatch", 1, (4,)), ("metadata mismatch", 4, (2, 3))}
    assert verify(path, quick=True).ok  # --quick reads no steps blocks
    result = run_cli("verify", path)
    assert result.exit_code == 1 and "metadata mismatch" in result.output


def merged_catalogue(path: Path) -> dict[str, list[tuple]]:
    """``catalogue`` plus what a merge records: the journal, the merged-in store tags,
    the streams and their pointers."""
    tables = catalogue(path)
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        for t in ("merges", "streams", "step_frames"):
            tables[t] = sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        tables["tags"] = conn.execute(
            "SELECT value FROM meta WHERE key = 'merge.store_tags'"
        ).fetchall()
    return tables


@pytest.fixture
def merged_store(tmp_path, assault_frames):
    """Store A with store B merged in (B's episodes reuse A's ids: their stream keys
    collide); B's episode 1 was deleted before the merge (not merged, some of its chunks
    come along in B's segments) and a merged episode deleted in A after it."""
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_store(a, assault_frames, "thread")
    record_store(b, assault_frames[50:], "thread")
    assert run_cli("rm", b, "--episode", 1).exit_code == 0
    result = run_cli("merge", a, b, "--json")
    assert result.exit_code == 0, result.output
    ids = json.loads(result.output)["sources"][0]["episode_ids"]
    assert run_cli("rm", a, "--episode", ids["3"]).exit_code == 0
    assert verify(a).ok
    return a


def test_a_merged_store_is_rebuilt_with_its_merge_journal(merged_store):
    """merge writes its provenance (a MERGED record in a note segment): with
    framestore.db deleted, recover rebuilds the journal, the merged segments' header
    ids, the merged-in store tags and the merged episodes, table by table."""
    path = merged_store
    want = merged_catalogue(path)
    assert len(want["merges"]) == 1 and want["tags"]
    with FrameStore.open(path, readonly=True) as store:
        live = [e.id for e in store.episodes()]
        frames = {e: store.read_frames(e) for e in live}
        steps = {e: store.read_steps(e) for e in live}

    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and report.merges_restored == [1]
    assert not report.data_lost and not report.steps_without_metadata
    assert merged_catalogue(path) == want
    assert verify(path).ok
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == live
        for eid in live:
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))
            assert store.read_steps(eid) == steps[eid]
    assert "nothing to recover" in run_cli("recover", path).output


def record_other(path: Path, frames: int = 4) -> Path:
    """A store never merged anywhere: one episode (1 MiB segments of ~10 raw frames)."""
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=SMALL) as rec:
        rec.begin_episode(seed=1)
        for i in range(frames):
            rec.record_step(np.full((210, 160, 3), i, np.uint8))
        rec.end_episode()
    return path


def test_a_merged_segment_replaced_by_hand_is_reported_by_verify(merged_store, tmp_path):
    """A merged segment's file swapped for another store's segment that names the same
    source id in its header: its tag is no merged-in store's."""
    path = merged_store
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        sid, header = conn.execute(
            "SELECT id, header_id FROM segments WHERE header_id IS NOT NULL ORDER BY id"
        ).fetchone()
    other = record_other(tmp_path / "c.store", frames=10 * header + 10)
    shutil.copyfile(segment_path(other, header), segment_path(path, sid))
    found = [p for p in verify(path).problems if "never merged into this one" in p.message]
    assert [p.segment for p in found] == [sid], verify(path).problems


def test_a_segment_copied_in_by_hand_is_reported_by_verify(merged_store, tmp_path):
    """A segment of a store never merged in, copied into the segment directory by hand:
    verify names it in one line, before and after recover (which leaves its frames
    alone), with the catalogue rebuilt too; the merged segments' tags are accepted."""
    path = merged_store
    other = record_other(tmp_path / "c.store")
    want = merged_catalogue(path)
    free = max(list_segment_ids(path)) + 1
    shutil.copyfile(segment_path(other, 1), segment_path(path, free))

    def problems() -> list[str]:
        found = verify(path).problems
        assert [p.segment for p in found] == [free], found
        return [str(p) for p in found]

    assert "written by another store" in problems()[0]
    assert recover(path).episodes_created == []  # its frames are not adopted
    assert "written by another store" in problems()[0]
    delete_catalogue(path)
    assert recover(path).merges_restored == [1]
    assert "written by another store" in problems()[0]
    got = merged_catalogue(path)  # the same store, its segments table listing the copy
    assert [row[0] for row in got.pop("segments")] == [row[0] for row in want.pop("segments")] + [
        free
    ]
    assert got == want
    result = run_cli("verify", path)
    assert result.exit_code == 1
    assert sum(f"segment {free}" in line for line in result.output.splitlines()) == 1


def test_a_store_merged_before_tags_were_recorded_keeps_verifying(merged_store, tmp_path):
    """A store that merged with 0.3.0 recorded no merged-in tags; its next merge records
    those of the segments it had merged too, so verify keeps accepting them."""
    path = merged_store
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        (old,) = conn.execute("SELECT value FROM meta WHERE key = 'merge.store_tags'").fetchone()
        conn.execute("DELETE FROM meta WHERE key = 'merge.store_tags'")
    assert verify(path).ok  # nothing recorded: merged segments' tags are not checked
    other = record_other(tmp_path / "c.store")
    assert run_cli("merge", path, other).exit_code == 0
    tags = merged_catalogue(path)["tags"]
    assert set(json.loads(old)) < set(json.loads(tags[0][0]))
    assert verify(path).ok


def _snapshot(path: Path) -> tuple[list[int], dict, dict]:
    with FrameStore.open(path, readonly=True) as store:
        live = [e.id for e in store.episodes()]
        return live, {e: store.read_frames(e) for e in live}, {e: store.read_steps(e) for e in live}


def _same_store(path: Path, live: list[int], frames: dict, steps: dict, moved=False) -> None:
    """The same episodes, frames bit-exact, steps equal (``moved``: but for where their
    frames are: a copy, after a gc)."""

    def where(s):
        return dataclasses.replace(s, frame=None) if moved else s

    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == live
        for eid in live:
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))
            assert [where(s) for s in store.read_steps(eid)] == [where(s) for s in steps[eid]]


def test_a_merged_store_is_rebuilt_after_gc_folded_its_merged_segments(merged_store):
    """gc --threshold 1 folds the merged segments into this store's own: it writes the
    merged episodes' chunks under their ids here, with EPISODE records of this store, so
    a catalogue deleted afterwards is rebuilt with every merged episode (issue 19)."""
    path = merged_store
    result = run_cli("gc", path, "--threshold", "1")
    assert result.exit_code == 0, result.output
    with FrameStore.open(path, readonly=True) as store:
        assert not store.catalog.segments.merged()  # every merged segment was folded
    assert verify(path).ok
    want = merged_catalogue(path)
    gone = [row for row in want["episodes"] if "deleted" in row]
    assert len(gone) == 1  # the merged episode rm'd in A: gc removed its records
    want["episodes"] = [row for row in want["episodes"] if row not in gone]
    live, frames, steps = _snapshot(path)
    assert len(live) == 8  # A's 5 and B's 4 merged, one of them rm'd

    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0, result.output
    assert "nothing lost" in result.output and "not rebuilt" not in result.output
    assert merged_catalogue(path) == want
    assert verify(path).ok
    _same_store(path, live, frames, steps)
    assert "nothing to recover" in run_cli("recover", path).output


@pytest.mark.parametrize("phase", ["mid-copy", *PHASES])
def test_gc_of_merged_segments_killed_at_any_moment_still_rebuilds_them(merged_store, phase):
    """gc folding merged segments stopped halfway (mid-copy, or after each phase), then
    framestore.db deleted: recover rebuilds every live episode, merged ones included,
    whichever copies (merged as placed, or this store's) are on disk; a gc then finishes."""
    path = merged_store
    live, frames, steps = _snapshot(path)
    want = merged_catalogue(path)
    keep = ("runs", "merges", "streams", "tags", "store_id")

    gc_stopped_at(path, phase)
    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.data_lost, report
    _same_store(path, live, frames, steps, moved=True)
    got = merged_catalogue(path)
    assert {t: got[t] for t in keep} == {t: want[t] for t in keep}
    # stream_key (the last column) is the source's or NULL: whichever copy was rebuilt
    episodes = [row[:-1] for row in want["episodes"] if "deleted" not in row]
    assert [row[:-1] for row in got["episodes"] if "deleted" not in row] == episodes
    assert verify(path).ok
    assert run_cli("gc", path, "--threshold", "1").exit_code == 0
    assert verify(path).ok
    _same_store(path, live, frames, steps, moved=True)
    delete_catalogue(path)  # and once more, from the finished gc's segments
    assert not recover(path).data_lost
    _same_store(path, live, frames, steps, moved=True)
    got = merged_catalogue(path)
    assert {t: got[t] for t in keep} == {t: want[t] for t in keep}


@pytest.mark.parametrize("fixture", ["store-v0.1.0", "store-v0.2.0"])
@pytest.mark.parametrize("phase", ["mid-copy", *PHASES])
def test_gc_of_merged_format_1_2_segments_killed_at_any_moment_still_rebuilds_them(
    tmp_path, assault_frames, fixture, phase
):
    """The same for a merged format 1-2 store: until gc's copies are in, the merged
    segments as placed give the frames back (their metadata was in the catalogue
    alone: reported lost); from then on, gc's copies give every episode back whole,
    and the merged segments' frames are known as copies of theirs. recover said "NOT
    REBUILT: 25 frame(s) that no step row points at" after renamed and repointed: it
    looked a merged chunk's source key (3) up among the ids here (3 is the merged
    episode that was the source's 1)."""
    path = tmp_path / "a.store"  # two episodes: the merged ones are 3-5, keys 1-3 there
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=SMALL) as rec:
        for ep in range(2):
            rec.begin_episode(seed=ep)
            for i in range(12):
                rec.record_step(assault_frames[ep * 12 + i], i % 3, i / 2, info={"k": i})
            rec.end_episode()
    assert run_cli("merge", path, copy_fixture(fixture, tmp_path)).exit_code == 0
    live, frames, steps = _snapshot(path)
    merged = live[2:]
    assert merged == [3, 4, 5]

    gc_stopped_at(path, phase)
    delete_catalogue(path)
    report = recover(path)
    assert report.catalogue_rebuilt and not report.frames_not_rebuilt, report
    assert verify(path).ok
    if phase in ("mid-copy", "copied"):  # the merged segments as placed
        assert sorted(report.steps_without_metadata) == merged, report
        with FrameStore.open(path, readonly=True) as store:
            assert [e.id for e in store.episodes()] == live
            for eid in live:
                got = store.read_frames(eid)
                assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))
        return
    assert not report.data_lost, report
    _same_store(path, live, frames, steps, moved=True)
    assert run_cli("gc", path, "--threshold", "1").exit_code == 0
    assert verify(path).ok
    delete_catalogue(path)
    assert not recover(path).data_lost
    _same_store(path, live, frames, steps, moved=True)


def test_a_gc_below_threshold_folds_every_segment_of_a_merge_together(merged_store, monkeypatch):
    """An episode's chunks carry one stream key: gc rewrites every segment of a merge
    once it rewrites one of them (a merged episode spans several), then a rebuild still
    finds every merged episode."""
    path = merged_store
    with FrameStore.open(path) as store:
        merged = set(store.catalog.segments.merged())
        with monkeypatch.context() as m:  # what the threshold alone picks: some of them
            m.setattr(gc_module, "_rest_of_merges", lambda *args: [])
            alone = {v.segment for v in gc_module._plan(store, 0.1)} & merged
        assert alone and alone != merged
        assert merged <= {v.segment for v in gc_module._plan(store, 0.1)}
    live, frames, steps = _snapshot(path)
    report = collect(path, threshold=0.1)
    assert merged <= set(report.segments_deleted)
    assert verify(path).ok
    _same_store(path, live, frames, steps, moved=True)
    delete_catalogue(path)
    assert not recover(path).data_lost
    _same_store(path, live, frames, steps, moved=True)


def merged_chain(tmp_path: Path, assault_frames) -> Path:
    """Store A (5 episodes) after C (1 episode of 12 frames) was merged into B (5) and B
    into A; returns A's path."""
    a, b, c = tmp_path / "a.store", tmp_path / "b.store", tmp_path / "c.store"
    record_store(a, assault_frames, "thread")
    record_store(b, assault_frames[50:], "thread")
    record_other(c, frames=12)
    assert run_cli("merge", b, c).exit_code == 0
    assert run_cli("merge", a, b).exit_code == 0
    return a


def test_episodes_the_source_had_merged_itself_are_rebuilt_after_gc(tmp_path, assault_frames):
    """A merged into B, B merged into A: B's segments from C hold C's records (its ids,
    its store id); gc writes them as A's too."""
    a = merged_chain(tmp_path, assault_frames)
    assert run_cli("gc", a, "--threshold", "1").exit_code == 0
    want = merged_catalogue(a)
    live, frames, steps = _snapshot(a)
    assert len(live) == 11  # A's 5, B's 5 and C's 1
    delete_catalogue(a)
    result = run_cli("recover", a)
    assert result.exit_code == 0 and "nothing lost" in result.output, result.output
    assert merged_catalogue(a) == want
    assert verify(a).ok
    _same_store(a, live, frames, steps)


GC_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from tools.gc import collect

    store_path, progress = sys.argv[1:]
    out = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def hook(phase):
        os.write(out, f"phase {phase}\\n".encode())
        time.sleep(0.01)

    def slow(done, total):
        time.sleep(0.003)  # spread the copy so kills land inside it

    os.write(out, b"ready\\n")
    collect(store_path, threshold=1.0, progress=slow, _hook=hook)
    os.write(out, b"done\\n")
    """
)


def test_sigkill_during_gc_of_merged_segments_then_a_rebuild_finds_every_episode(
    merged_store, tmp_path
):
    """SIGKILLs at random moments of a gc folding merged segments (after its start or a
    phase), then framestore.db deleted: recover rebuilds every live episode."""
    live, frames, steps = _snapshot(merged_store)
    rng = random.Random(19)
    starts = ["ready", "ready", *(f"phase {p}" for p in PHASES[:-1])]
    seen = []
    for i in range(6):
        path = tmp_path / f"gc-{i}.store"
        shutil.copytree(merged_store, path)
        progress = tmp_path / f"gc-{i}.progress"
        run_and_kill(GC_CHILD, [str(path)], progress, rng.uniform(0.0, 0.05), after=starts[i % 5])
        text = progress.read_text()
        seen.append(
            "done" if "done" in text else max([p for p in PHASES if p in text], default="-")
        )
        delete_catalogue(path)
        report = recover(path)
        assert report.catalogue_rebuilt and not report.data_lost, report.as_dict()
        assert verify(path).ok
        _same_store(path, live, frames, steps, moved=True)
        collect(path, threshold=1.0)
        assert verify(path).ok
        _same_store(path, live, frames, steps, moved=True)
    assert len(set(seen)) >= 2, seen  # kills landed at different points


def record_two_streams(path: Path, base: int) -> None:
    """One episode whose second stream (``cam``) appears at step 5 (its EPISODE record is
    written again, longer)."""
    with FrameStore.open(path) as store, store.recorder(ENV_ID, overrides=SMALL) as rec:
        rec.begin_episode(seed=1)
        for i in range(12):
            f = np.full((210, 160, 3), base + i, np.uint8)
            if i < 5:
                rec.record_step(f)
            else:
                rec.record_step(frames={"render": f, "cam": np.full((20, 30), i, np.uint8)})
        rec.end_episode()


def test_merged_episodes_of_two_streams_are_rebuilt_after_gc(tmp_path):
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_two_streams(a, 0)
    record_two_streams(b, 100)
    assert run_cli("merge", a, b).exit_code == 0
    assert run_cli("gc", a, "--threshold", "1").exit_code == 0
    want = merged_catalogue(a)
    assert len(want["streams"]) == 2 and len(want["step_frames"]) == 14
    live, frames, steps = _snapshot(a)
    delete_catalogue(a)
    assert not recover(a).data_lost
    assert merged_catalogue(a) == want
    _same_store(a, live, frames, steps)
    with FrameStore.open(a, readonly=True) as store:
        for eid in live:
            cams = list(store.iter_frames(eid, stream="cam"))
            assert [int(c[0, 0]) for c in cams] == list(range(5, 12))


@pytest.mark.parametrize("fixture", ["store-v0.1.0", "store-v0.2.0"])
def test_merged_format_1_2_episodes_are_rebuilt_after_gc(tmp_path, assault_frames, fixture):
    """A store of format 1-2 segments merged in: its segments carry no EPISODE records
    and no steps blocks, and its episodes' stream keys are ids this store uses too. gc
    writes them as this store's from their catalogue rows (steps blocks, EPISODE,
    EPISODE_END, RUN_END records), so a rebuild gives every merged episode back whole.
    Before, gc copied their chunks under their source keys and a rebuild gave their
    frames to this store's episodes of those ids, reporting no loss (issue 19)."""
    path = tmp_path / "a.store"
    record_store(path, assault_frames, "thread")
    old = copy_fixture(fixture, tmp_path)
    result = run_cli("merge", path, old)
    assert result.exit_code == 0, result.output
    live, frames, steps = _snapshot(path)
    assert len(live) == 8  # this store's 5 and the fixture's 3
    merged = live[5:]

    # Before gc the merged segments are as placed: the MERGED note maps their stream
    # keys to the ids here, the frames come back; their metadata was in the catalogue
    # alone, and recover says so (it reported nothing lost, and lost them, before).
    placed = tmp_path / "placed.store"
    shutil.copytree(path, placed)
    delete_catalogue(placed)
    result = run_cli("recover", placed)
    assert result.exit_code == 3 and "nothing lost" not in result.output, result.output
    lost = [line for line in result.output.splitlines() if line.startswith("LOST")]
    assert [int(line.split()[2].rstrip(":")) for line in lost] == merged, result.output
    assert verify(placed).ok
    with FrameStore.open(placed, readonly=True) as store:
        assert [e.id for e in store.episodes()] == live
        for eid in live:
            got = store.read_frames(eid)
            assert all(np.array_equal(a, b) for a, b in zip(got, frames[eid], strict=True))

    assert run_cli("gc", path, "--threshold", "1").exit_code == 0
    assert verify(path).ok
    want = merged_catalogue(path)
    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0 and "nothing lost" in result.output, result.output
    assert merged_catalogue(path) == want
    assert verify(path).ok
    _same_store(path, live, frames, steps, moved=True)


def test_recover_names_the_frames_it_could_not_rebuild(merged_store):
    """A merge's note segment lost with framestore.db: nothing says the merged segments
    (another store's tag) are this store's, so recover leaves their frames unread. It
    must say so, counted, in one line, and exit with data loss. It said "nothing lost",
    having deleted them as an interrupted gc's copies (their keys and steps collide with
    this store's episodes')."""
    path = merged_store
    with closing(sqlite3.connect(path / "framestore.db")) as conn:
        placed = [r[0] for r in conn.execute("SELECT id FROM segments WHERE header_id IS NOT NULL")]
    notes = [
        sid for sid in list_segment_ids(path)
        if any(r.type == 7 for r in scan_segment(segment_path(path, sid), sid).records)
    ]  # fmt: skip
    assert len(notes) == 1 and placed
    frames = sum(scan_segment(segment_path(path, s), s).frames for s in placed)
    segment_path(path, notes[0]).unlink()
    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("NOT REBUILT")]
    assert lines == [
        f"NOT REBUILT: {frames} frame(s) in segments another store wrote that no merge "
        "note lists (left unread)"
    ], result.output
    assert "nothing lost" not in result.output and "frames not rebuilt" in result.output
    # never deleted as "duplicates": their stream keys and steps are this store's too,
    # their frames are not (recover removed them, before)
    assert all(segment_path(path, s).exists() for s in placed)
    again = run_cli("recover", path)  # still there, still said
    assert again.exit_code == 3 and lines[0] in again.output


def test_recover_names_frames_of_stores_the_source_had_merged(tmp_path, assault_frames):
    """C merged into B, B into A, A's catalogue deleted before any gc: C's episode is in
    segments as placed, its records naming C's ids, which only B's own note mapped (merge
    copies no note). recover cannot tell which id here it is: it names its 12 frames.
    Before, it reported nothing lost (their stream key and steps are one of B's
    episodes' too)."""
    a = merged_chain(tmp_path, assault_frames)
    delete_catalogue(a)
    result = run_cli("recover", a)
    assert result.exit_code == 3, result.output
    assert "NOT REBUILT: 12 frame(s) that no step row points at" in result.output
    assert "nothing lost" not in result.output


def test_a_small_store_that_merged_a_larger_one_is_rebuilt_as_itself(tmp_path, assault_frames):
    """The store id of a rebuilt catalogue: the merged segments (another store's tag and
    store id) outnumber this store's own, so a majority of EPISODE records names the
    source; the merge's note (written by this store alone) decides. Before, the rebuild
    took the source's id, read no note as its own and dropped every merged episode."""
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_other(a, frames=4)
    record_store(b, assault_frames, "thread")
    assert run_cli("merge", a, b).exit_code == 0
    want = merged_catalogue(a)
    live, frames, steps = _snapshot(a)
    delete_catalogue(a)
    result = run_cli("recover", a)
    assert result.exit_code == 0 and "nothing lost" in result.output, result.output
    assert merged_catalogue(a) == want
    _same_store(a, live, frames, steps)
