"""Merging diverged ``cp -r`` copies of one store (issue 18, defect 2): the copies share
the store id of their origin, so "already merged" is decided episode by episode. The
episodes the copies share land once, each copy's own recordings land too, in one
command or in two; nothing is dropped silently and nothing is duplicated."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import record_episodes, run_cli

from framestore import FrameStore
from tools.merge import merge
from tools.verify import verify


def content(path: Path) -> list[tuple]:
    """A store's episodes in a canonical order (ids differ after a merge): start time,
    seed, steps and a digest of the frames."""
    with FrameStore.open(path, readonly=True) as st:
        out = []
        for e in st.episodes():
            digest = hashlib.sha1()
            for frame in st.iter_frames(e.id):
                digest.update(frame.tobytes())
            out.append((e.started, e.seed, e.steps, e.total_reward, digest.hexdigest()))
    return sorted(out)


@pytest.fixture
def copies(tmp_path, assault_frames):
    """base (2 episodes); w1 and w2 copied from it, each then recorded one episode of its
    own (different frames, the same new episode id 3 in both)."""
    base = tmp_path / "base.store"
    record_episodes(base, assault_frames, episodes=2, steps=5)
    w1, w2 = tmp_path / "w1.store", tmp_path / "w2.store"
    shutil.copytree(base, w1)
    shutil.copytree(base, w2)
    record_episodes(w1, assault_frames[10:], episodes=1, steps=5)
    record_episodes(w2, assault_frames[20:], episodes=1, steps=5)
    want = sorted(set(content(w1)) | set(content(w2)))
    assert len(want) == 4  # 2 shared + 1 + 1
    return tmp_path, w1, w2, want


def test_two_diverged_copies_merge_in_one_command(copies):
    tmp, w1, w2, want = copies
    result = run_cli("merge", tmp / "all.store", w1, w2, "--json")
    assert result.exit_code == 0, result.output
    sources = json.loads(result.stdout)["sources"]
    assert [s["status"] for s in sources] == ["merged", "merged"]
    assert [s["episodes"] for s in sources] == [3, 1]  # w2: only its own episode
    assert content(tmp / "all.store") == want
    assert verify(tmp / "all.store").ok
    again = merge(tmp / "all.store", [w1, w2])  # a re-run adds nothing
    assert [s.status for s in again.sources] == ["already merged"] * 2
    assert content(tmp / "all.store") == want


def test_the_same_in_two_commands_and_more_recorded_since(copies, assault_frames):
    tmp, w1, w2, want = copies
    dest = tmp / "two.store"
    assert merge(dest, [w1]).sources[0].status == "merged"
    assert merge(dest, [w2]).sources[0].episodes == 1
    assert content(dest) == want
    same = tmp / "same.store"  # an identical copy of a merged source: nothing new
    shutil.copytree(w1, same)
    assert merge(dest, [same]).sources[0].status == "already merged"
    record_episodes(w1, assault_frames[30:], episodes=1, steps=5)  # w1 recorded more
    more = merge(dest, [w1]).sources[0]
    assert (more.status, more.episodes, more.runs) == ("merged", 1, 1)
    assert content(dest) == sorted(set(want) | set(content(w1)))
    assert verify(dest).ok
