"""Merging into a store that is not what it seems, and merged stores elsewhere (issue 23,
items 1, 4 and 9 and the ``env_spec`` item; issue 18 item 3):

- a DEST whose ``segments/`` is a symlink (to the real segments moved outside, or
  dangling) is refused before anything is written, like ``record`` and ``gc`` refuse it;
- a source whose ``runs.env_spec`` is not a JSON object is refused (it fails
  ``verify --quick``) before anything is copied;
- a merged store published to a directory verifies (its segments' recorded header ids
  are published with them);
- ``verify`` while a merge runs sees the store before or after it, or says a merge is in
  progress: never "file header names segment N".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from conftest import (
    SMALL_SEGMENTS,
    assert_one_line_error,
    become_another_store,
    record_episodes,
    run_cli,
)

from framestore import FrameStore
from tools.merge import merge
from tools.verify import verify

REPO = str(Path(__file__).resolve().parents[2])
STEPS = 8


@pytest.fixture(scope="module")
def templates(tmp_path_factory, assault_frames):
    """Two stores of two 8-step Assault episodes each, over several 1 MiB segments."""
    root = tmp_path_factory.mktemp("tpl")
    paths = []
    for i in range(2):
        path = root / f"s{i}.store"
        frames = assault_frames[i * 2 * STEPS :] + assault_frames
        record_episodes(path, frames, episodes=2, steps=STEPS, overrides=SMALL_SEGMENTS)
        paths.append(path)
    return paths


@pytest.fixture
def stores(templates, tmp_path):
    """Fresh copies: DEST ``d.store`` and source ``s.store``, and an ``outside`` dir."""
    dest, src = tmp_path / "d.store", tmp_path / "s.store"
    shutil.copytree(templates[0], dest)
    shutil.copytree(templates[1], src)
    outside = tmp_path / "outside"
    outside.mkdir()
    return dest, src, outside


def digest_tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (links not followed) with its SHA-256."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def database_bytes(store: Path) -> bytes:
    """The database file with its WAL: what a refused command must not change."""
    return b"".join(
        (store / n).read_bytes() if (store / n).exists() else b"-"
        for n in ("framestore.db", "framestore.db-wal")
    )


# --------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("link", ["to the moved segments", "dangling"])
def test_merge_refuses_a_dest_whose_segment_directory_is_a_link(stores, link):
    dest, src, outside = stores
    target = outside / "segs"
    shutil.move(dest / "segments", target)
    if link == "dangling":
        shutil.rmtree(target)
    os.symlink(target, dest / "segments")
    before_outside, before_db = digest_tree(outside), database_bytes(dest)
    before_src = digest_tree(src)

    line = assert_one_line_error(run_cli("merge", dest, src), code=5)
    assert "segment directory is a symbolic link" in line, line

    assert digest_tree(outside) == before_outside  # nothing replaced behind the link
    assert database_bytes(dest) == before_db  # no journal row, no rows
    assert digest_tree(src) == before_src
    assert os.path.islink(dest / "segments")
    # through the library too, and with --move (the source stays whole)
    with pytest.raises(Exception, match="symbolic link"):
        merge(dest, [src], move=True)
    assert digest_tree(src) == before_src and database_bytes(dest) == before_db


def test_a_source_whose_env_spec_is_not_json_is_refused_before_anything_is_copied(stores):
    dest, src, _ = stores
    with closing(sqlite3.connect(src / "framestore.db")) as conn, conn:
        conn.execute("UPDATE runs SET env_spec = '{not json'")
    with FrameStore.open(dest, readonly=True) as st:
        episodes_before = len(st.episodes())
    segments_before = sorted(os.listdir(dest / "segments"))

    line = assert_one_line_error(run_cli("merge", dest, src), code=2)
    assert "verify --quick" in line and "env_spec" in line, line
    assert sorted(os.listdir(dest / "segments")) == segments_before
    with FrameStore.open(dest, readonly=True) as st:
        assert len(st.episodes()) == episodes_before
    # and verify names the column
    report = verify(src, quick=True)
    assert any("runs, column env_spec" in str(p) for p in report.problems), report.problems


# --------------------------------------------------------------------------- item 4
def test_a_merged_store_published_to_a_directory_verifies(stores, tmp_path):
    dest, src, _ = stores
    third = tmp_path / "t.store"
    shutil.copytree(src, third)
    become_another_store(third, "another-store")
    assert run_cli("merge", dest, src, third).exit_code == 0
    assert run_cli("verify", dest).exit_code == 0
    with FrameStore.open(dest, readonly=True) as st:
        merged = st.catalog.segments.merged()
    assert merged, "the merge should hold segments whose header names another id"

    pub = tmp_path / "pub"
    assert run_cli("publish", dest, pub).exit_code == 0
    result = run_cli("verify", pub)
    assert result.exit_code == 0, result.output
    with FrameStore.open(pub, readonly=True) as st:
        assert st.catalog.segments.merged() == {
            s: h for s, h in merged.items() if (pub / "segments" / f"seg-{s:06d}.fseg").exists()
        }


# --------------------------------------------------------------------------- item 9
_MERGE_CHILD = """
import sys
from tools.merge import merge
merge(sys.argv[1], sys.argv[2:])
"""


def test_verify_during_a_merge_sees_before_after_or_in_progress(stores, tmp_path):
    """Verify runs over and over while merges into DEST run in a child; no run may
    report a problem (the journal, placed files and commits are all legal states)."""
    dest, src, _ = stores
    sources = []
    for i in range(4):
        copy = tmp_path / f"src{i}.store"
        shutil.copytree(src, copy)
        become_another_store(copy, f"copy-{i}")
        sources.append(copy)
    env = {**os.environ, "PYTHONPATH": REPO}
    child = subprocess.Popen(
        [sys.executable, "-c", _MERGE_CHILD, str(dest), *map(str, sources)], env=env
    )
    runs, seen_progress = 0, False
    try:
        while child.poll() is None or runs < 3:
            report = verify(dest, quick=True)
            runs += 1
            assert report.ok, [str(p) for p in report.problems]
            seen_progress |= any("merge" in s for s in report.in_progress)
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0
    assert verify(dest).ok
    with FrameStore.open(dest, readonly=True) as st:
        assert len(st.episodes()) == 2 + 4 * 2


@pytest.mark.parametrize("phase", ["journaled", "placed", "committed"])
def test_verify_at_each_phase_of_a_merge(stores, phase):
    """Verify from inside the merge, right after each phase (the merge holds DEST's
    lock): the placed files are a merge in progress, not corruption."""
    dest, src, _ = stores
    seen = []

    def hook(at: str) -> None:
        if at == phase:
            report = verify(dest)
            seen.append(report)

    merge(dest, [src], _hook=hook)
    (report,) = seen
    assert report.ok, [str(p) for p in report.problems]
    if phase == "placed":
        assert any("merge" in s for s in report.in_progress), report.in_progress
