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

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from conftest import WRITERS, run_cli, writer_overrides

from framestore import FrameStore, RecordFrames
from framestore.envs import make_env
from tools.recover import recover
from tools.verify import verify

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
    result = run_cli("gc", path, "--threshold", 1, "--json")
    assert result.exit_code == 0 and '"segments_written": [' in result.output, result.output
    want = catalogue(path)
    want["episodes"] = [row for row in want["episodes"] if row[0] != 2]  # rm'd: forgotten
    again = run_cli("gc", path, "--json")  # the default threshold: nothing left to win
    assert '"segments_rewritten": []' in again.output, again.output

    delete_catalogue(path)
    result = run_cli("recover", path)
    assert result.exit_code == 0, result.output
    assert catalogue(path) == want
    assert verify(path).ok


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
