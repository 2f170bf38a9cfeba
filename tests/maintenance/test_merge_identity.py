"""``framestore merge``: what a review of the first build found, each with the case that
showed it. A backup of a store merged with ``--move`` is never deleted by a plain merge;
a copy of a source (same store id) is merged once, also within one command; a new id in
DEST never names a merged episode's chunks; a crashed merge of a store that was itself
merged is undone and finished by a re-run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SMALL_SEGMENTS, record_episodes
from test_merge import store_content

from framestore import FrameStore
from tools.merge import merge
from tools.verify import verify


def _store(path: Path, frames, episodes: int = 2, offset: int = 0) -> Path:
    record_episodes(path, frames[offset:], episodes=episodes, steps=5, overrides=SMALL_SEGMENTS)
    return path


def test_a_plain_merge_never_deletes_a_backup_of_a_store_merged_with_move(tmp_path, assault_frames):
    src = _store(tmp_path / "b.store", assault_frames)
    backup = tmp_path / "b_backup.store"
    shutil.copytree(src, backup)
    want = store_content(backup)
    dest = tmp_path / "d.store"
    merge(dest, [src], move=True)
    assert not src.exists()
    report = merge(dest, [backup])  # no --move: the backup stays
    assert [s.status for s in report.sources] == ["already merged"]
    assert backup.exists() and store_content(backup) == want
    report = merge(dest, [backup], move=True)  # a copy, not the moved store: kept too
    assert [s.status for s in report.sources] == ["already merged"]
    assert backup.exists()
    assert store_content(dest) == want


def test_a_copy_of_a_source_in_the_same_command_is_merged_once(tmp_path, assault_frames):
    a = _store(tmp_path / "a.store", assault_frames)
    a2 = tmp_path / "a2.store"
    shutil.copytree(a, a2)
    dest = tmp_path / "d.store"
    report = merge(dest, [a, a2])
    assert [s.status for s in report.sources] == ["merged", "already merged"]
    assert store_content(dest) == store_content(a)
    assert verify(dest).ok


def test_new_ids_in_dest_are_above_merged_stream_keys(tmp_path, assault_frames):
    """A source whose first episodes were deleted keeps its later episodes' stream keys
    (3, 4) under new ids (1, 2) in DEST: the next episode recorded into DEST must not get
    id 3, or recover could not tell its frames from the merged ones."""
    src = _store(tmp_path / "s.store", assault_frames, episodes=4)
    with FrameStore.open(src) as st:
        st.delete_episodes([1, 2])
    dest = tmp_path / "d.store"
    merge(dest, [src])
    with FrameStore.open(dest) as st:
        merged = sorted(e.id for e in st.episodes())
        assert merged == [1, 2]
        with st.recorder("ALE/Assault-v5", overrides=SMALL_SEGMENTS) as rec:
            new = rec.begin_episode(seed=9)
            rec.record_step(assault_frames[0])
        assert new > 4
    assert verify(dest).ok


def test_a_crashed_merge_of_a_merged_store_is_undone_and_finished(tmp_path, assault_frames):
    """The undo recognises a placed file by the id in its header: a segment the source
    had merged itself names its first id there, not the source's id for it."""
    m = tmp_path / "m.store"
    merge(
        m,
        [
            _store(tmp_path / "a.store", assault_frames),
            _store(tmp_path / "b.store", assault_frames, offset=10),
        ],
    )
    dest = _store(tmp_path / "d.store", assault_frames, offset=20)

    class Crash(Exception):
        pass

    def crash_when_placed(phase: str) -> None:
        if phase == "placed":
            raise Crash

    with pytest.raises(Crash):
        merge(dest, [m], _hook=crash_when_placed)  # stops after the files were placed
    report = merge(dest, [m])
    assert report.interrupted_undone  # the placed files were recognised and removed
    assert [s.status for s in report.sources] == ["merged"]
    result = verify(dest)
    assert result.ok, [str(p) for p in result.problems]
    assert len(store_content(dest)) == len(store_content(m)) + 2


@pytest.mark.parametrize("phase", ["journaled", "placed"])
def test_no_recording_or_gc_while_a_merge_is_unfinished(tmp_path, assault_frames, phase):
    """A merge that stopped before its commit reserves segment ids in its journal: a
    recording or gc started then could take one (and a later undo delete its frames), so
    both refuse with one line until recover (or the merge) ends it."""
    from framestore import InvalidInput
    from tools.gc import collect
    from tools.recover import recover

    src = _store(tmp_path / "s.store", assault_frames)
    dest = _store(tmp_path / "d.store", assault_frames, offset=10)

    class Crash(Exception):
        pass

    def stop(at: str) -> None:
        if at == phase:
            raise Crash

    with pytest.raises(Crash):
        merge(dest, [src], _hook=stop)
    with FrameStore.open(dest) as st:
        with pytest.raises(InvalidInput, match="merge .* stopped before its commit"):
            st.recorder("ALE/Assault-v5", overrides=SMALL_SEGMENTS)
        with pytest.raises(InvalidInput, match="merge .* stopped before its commit"):
            collect(st)
    recover(dest)
    with FrameStore.open(dest) as st:
        with st.recorder("ALE/Assault-v5", overrides=SMALL_SEGMENTS) as rec:
            rec.begin_episode(seed=1)
            rec.record_step(assault_frames[0])
        collect(st)
    assert verify(dest).ok
    assert [s.status for s in merge(dest, [src]).sources] == ["merged"]
    assert verify(dest).ok
