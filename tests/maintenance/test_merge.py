"""``framestore merge``: stores made by real worker processes combine into one that holds
exactly what they held; bad inputs are refused with one line and nothing changed; a
merge SIGKILLed at any moment leaves a store ``recover`` + ``verify`` accept, and running
the merge again finishes the job without duplicates.

Sizes: ``FRAMESTORE_MERGE_KILL_TRIALS`` (default 10) random kills, plus an exit at each
phase, two at a time.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from _kills import run_and_kill
from conftest import SMALL_SEGMENTS, assert_one_line_error, record_episodes, run_cli

from framestore import FrameStore
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.errors import SchemaTooNew
from framestore.state.merging import PHASES
from tools.merge import merge
from tools.recover import recover
from tools.verify import verify

ROOT = Path(__file__).resolve().parents[2]
KILL_TRIALS = int(os.environ.get("FRAMESTORE_MERGE_KILL_TRIALS", "10"))


# --------------------------------------------------------------------------- helpers
def episode_content(store: FrameStore, eid: int) -> tuple:
    """Everything an episode holds, frames as digests."""
    ep = store.episode(eid)
    rows = tuple(
        (
            r.step,
            json.dumps(r.action, default=int),
            r.reward,
            r.terminated,
            r.truncated,
            json.dumps(r.info, sort_keys=True),
            None
            if r.frame is None
            else hashlib.sha1(store.read_at(r.frame, eid, r.step).tobytes()).hexdigest(),
        )
        for r in store.read_steps(eid)
    )
    return (ep.env_id, ep.index, ep.seed, ep.sub_env, ep.status, ep.total_reward, rows)


def store_content(path: Path) -> list[tuple]:
    """A store's episodes, in a canonical order (ids differ after a merge)."""
    with FrameStore.open(path, readonly=True) as store:
        return sorted(episode_content(store, e.id) for e in store.episodes())


def files_of(path: Path) -> dict[str, str]:
    """Segment files and their digests (the database is compared by content)."""
    if not path.exists():
        return {}
    return {
        p.name: hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted((path / "segments").glob("*"))
    }


def snapshot(path: Path):
    """Segment files and the catalogue's rows (or, for a store this framestore cannot
    open, its database bytes)."""
    if not (path / "framestore.db").exists():
        return (path.exists(), files_of(path))
    try:
        with FrameStore.open(path, readonly=True) as store:
            rows = (
                store.runs(),
                store.episodes(include_deleted=True),
                store.catalog.merges.records(),
            )
    except SchemaTooNew:
        rows = (path / "framestore.db").read_bytes()
    return (files_of(path), repr(rows))


def _worker(path: str, seed: int, codec: str | None, preset: str | None) -> None:
    from tools.record import record

    record(path, "ALE/Assault-v5", envs=2, episodes=2, max_steps=10, seed=seed, codec=codec,
           preset=preset)  # fmt: skip


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """4 stores, each written by its own worker process (forked, recording a vector env
    of 2 Assault copies), with different codecs and presets."""
    base = tmp_path_factory.mktemp("workers")
    variants = [("zstd", None), ("png", None), ("raw", None), (None, "throughput")]
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_worker, args=(str(base / f"w{i}.store"), 10 * i, codec, preset))
        for i, (codec, preset) in enumerate(variants)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    return [base / f"w{i}.store" for i in range(len(variants))]


# --------------------------------------------------------------------------- merging
def test_four_worker_stores_merge_into_one_that_equals_them(workers, tmp_path):
    dest = tmp_path / "all.store"
    report = merge(dest, workers)
    assert [s.status for s in report.sources] == ["merged"] * 4
    with FrameStore.open(dest, readonly=True) as out:
        for src_path, result in zip(workers, report.sources, strict=True):
            with FrameStore.open(src_path, readonly=True) as src:
                eps = src.episodes()
                assert sorted(result.episode_ids) == [e.id for e in eps]
                for ep in eps:
                    new = result.episode_ids[ep.id]
                    assert episode_content(out, new) == episode_content(src, ep.id)
                    moved = out.episode(new)
                    assert moved.continues_episode == (
                        None if ep.continues_episode is None
                        else result.episode_ids[ep.continues_episode]
                    )  # fmt: skip
        assert len(out.episodes()) == sum(len(r.episode_ids) for r in report.sources)
        assert sorted({r.config["settings"]["codec"] for r in out.runs()}) == ["png", "raw", "zstd"]
    assert verify(dest).ok
    result = run_cli("verify", dest, "--replay")
    assert result.exit_code == 0 and "0 differ, 0 not replayable" in result.stdout, result.output
    assert recover(dest).changed is False
    before = snapshot(dest)
    again = merge(dest, workers)  # a re-run: every source is already merged
    assert [s.status for s in again.sources] == ["already merged"] * 4
    assert snapshot(dest) == before


def test_merged_store_merges_again_and_survives_gc(workers, tmp_path):
    """A merge of merged stores keeps the chunks' stream keys; gc compacts merged
    segments (header ids that differ from file names) into ordinary ones."""
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    merge(a, workers[:2])
    merge(b, workers[2:])
    dest = tmp_path / "ab.store"
    merge(dest, [a, b])
    want = sorted(store_content(w) for w in workers)
    assert sorted([store_content(dest)]) != [] and store_content(dest) == sorted(
        x for w in want for x in w
    )
    with FrameStore.open(dest) as st:
        st.delete_episodes([st.episodes()[0].id])
    assert run_cli("gc", dest, "--threshold", 1).exit_code == 0
    assert verify(dest).ok
    with FrameStore.open(dest, readonly=True) as st:
        assert st.catalog.segments.merged() == {}  # all rewritten by gc


def test_move_links_segments_and_removes_the_sources(workers, tmp_path):
    srcs = []
    for w in workers[:2]:
        shutil.copytree(w, tmp_path / w.name)
        srcs.append(tmp_path / w.name)
    want = sorted(x for s in srcs for x in store_content(s))
    result = run_cli("merge", tmp_path / "m.store", *srcs, "--move", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(s["segments_linked"] == s["segments"] > 0 for s in report["sources"])
    assert not any(s.exists() for s in srcs)
    assert store_content(tmp_path / "m.store") == want and verify(tmp_path / "m.store").ok
    again = run_cli("merge", tmp_path / "m.store", *srcs, "--json")
    assert [s["status"] for s in json.loads(again.stdout)["sources"]] == ["already merged"] * 2


# --------------------------------------------------------------------------- refusals
LEFT_RECORDING = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from framestore import FrameStore
    store = FrameStore.open(sys.argv[1])
    rec = store.recorder("ALE/Assault-v5")
    rec.begin_episode(seed=1)
    rec.record_step(np.zeros((210, 160, 3), np.uint8))
    rec.flush()
    os._exit(0)  # a crash: the episode stays 'recording'
    """
)


def _newer_schema(path: Path) -> None:
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('framestore', 'm999_from_the_future', '2099-01-01')"
        )


def _corrupt(path: Path) -> None:
    seg = segment_path(path, list_segment_ids(path)[0])
    data = bytearray(seg.read_bytes())
    data[200] ^= 0xFF
    seg.write_bytes(bytes(data))


def test_bad_inputs_are_refused_with_one_line_and_nothing_changes(workers, tmp_path):
    good = tmp_path / "good.store"
    shutil.copytree(workers[0], good)
    dest = tmp_path / "dest.store"
    assert merge(dest, [workers[1]]).sources[0].status == "merged"
    bad = {}
    for name in ("recording", "newer", "corrupt", "changed"):  # copies: one store id
        bad[name] = tmp_path / f"{name}.store"
        shutil.copytree(workers[2 if name == "changed" else 3], bad[name])
    subprocess.run([sys.executable, "-c", LEFT_RECORDING, bad["recording"]], check=True, cwd=ROOT)
    _newer_schema(bad["newer"])
    _corrupt(bad["corrupt"])
    assert merge(dest, [bad["changed"]]).sources[0].status == "merged"
    # recorded more since it was merged: its new episode merges (tests/maintenance/test_merge_copies.py)
    record_episodes(bad["changed"], [np.zeros((210, 160, 3), np.uint8)] * 3, episodes=1, steps=3)
    not_a_store = tmp_path / "notes"
    not_a_store.mkdir()
    (not_a_store / "notes.md").write_text("mine")
    cases = [
        ([dest, good, dest], 2, "DEST itself"),
        ([dest, good, good], 2, "given twice"),
        ([dest, good, tmp_path / "missing"], 2, "no such store"),
        ([dest, good, bad["recording"]], 2, "left 'recording'"),
        ([dest, good, bad["newer"]], 2, "m999_from_the_future"),
        ([dest, good, bad["corrupt"]], 2, "verify --quick"),
        ([not_a_store, good], 2, "not a framestore store"),
        ([tmp_path / "new.store", good, bad["corrupt"]], 2, "verify --quick"),
    ]
    paths = [dest, good, tmp_path / "new.store", not_a_store, *bad.values()]
    before = {p: snapshot(p) for p in paths}
    for args, code, words in cases:
        line = assert_one_line_error(run_cli("merge", *args), code)
        assert words in line, (args, line)
        assert {p: snapshot(p) for p in paths} == before, args
    with FrameStore.open(good) as st, st.recorder("ALE/Assault-v5"):  # SRC locked
        assert_one_line_error(run_cli("merge", dest, good), 4)
    with FrameStore.open(dest) as st, st.recorder("ALE/Assault-v5"):  # DEST locked
        assert_one_line_error(run_cli("merge", dest, good), 4)
    assert {p: snapshot(p) for p in paths if p not in (dest, good)} == {
        p: v for p, v in before.items() if p not in (dest, good)
    }
    assert run_cli("merge", dest, good).exit_code == 0  # the good source merges afterwards


# --------------------------------------------------------------------------- crashes
MERGE_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from tools.merge import merge

    dest, mode, move, *sources, progress = sys.argv[1:]
    out = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def hook(phase):
        os.write(out, f"phase {phase}\\n".encode())
        if mode == phase:
            os._exit(17)  # a crash: no finally blocks, no close, no unlock
        time.sleep(0.01)

    def slow(done, total):
        time.sleep(0.004)  # spread the copies so random kills land inside them

    os.write(out, b"ready\\n")
    merge(dest, sources, move=move == "move", progress=slow, _hook=hook)
    os.write(out, b"done\\n")
    """
)


@pytest.fixture(scope="module")
def crash_sources(tmp_path_factory, assault_frames):
    """3 small stores over several 1 MiB segments each (raw 4-frame chunks)."""
    base = tmp_path_factory.mktemp("merge-crash")
    paths = []
    for i in range(3):
        path = base / f"s{i}.store"
        frames = assault_frames[i * 30 : i * 30 + 30]
        record_episodes(path, frames, episodes=3, steps=10, overrides=SMALL_SEGMENTS)
        paths.append(path)
    return paths, sorted(x for p in paths for x in store_content(p))


def _kill_trial(
    sources, tmp: Path, index: int, mode: str, move: bool, delay: float, after: str = "ready"
):
    work = tmp / f"t{index}"
    work.mkdir()
    srcs = [Path(shutil.copytree(s, work / s.name)) for s in sources]
    dest = work / "dest.store"
    progress = work / "progress"
    script_args = [str(dest), mode, "move" if move else "copy", *map(str, srcs)]
    if mode == "random":
        finished = run_and_kill(MERGE_CHILD, script_args, progress, delay, after=after)
    else:
        proc = subprocess.run(
            [sys.executable, "-c", MERGE_CHILD, *script_args, str(progress)],
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 17, proc.stderr.decode()
        finished = None
    return work, dest, srcs, progress.read_text(), finished


def check_after_merge_crash(dest: Path, srcs: list[Path], move: bool, want: list) -> None:
    if (dest / "framestore.db").exists():
        recover(dest)
        report = verify(dest)
        assert report.ok, [str(p) for p in report.problems]
    merge(dest, srcs, move=move)  # the re-run finishes the job
    assert verify(dest).ok
    assert store_content(dest) == want  # everything, once
    assert all(not s.exists() for s in srcs) if move else all(s.exists() for s in srcs)


def test_sigkill_during_merge_at_random_moments_and_at_each_phase(crash_sources, tmp_path):
    """Copy and --move merges, killed at random moments and exited at each phase."""
    sources, want = crash_sources
    rng = random.Random(7)
    # Each random kill comes a random moment after a random point of the merge (its start
    # or the end of a phase), so kills spread over the phases however slow the machine is
    # now; a fixed delay after the start lands in the first phase every time when loaded.
    starts = ["ready", *(f"phase {p}" for p in PHASES[:-1])]
    trials = [
        ("random", i % 2 == 1, rng.uniform(0.0, 0.1), starts[i % len(starts)])
        for i in range(KILL_TRIALS)
    ]
    trials += [(phase, True, 0.0, "ready") for phase in PHASES]
    seen = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            (mode, move, pool.submit(_kill_trial, sources, tmp_path, i, mode, move, delay, after))
            for i, (mode, move, delay, after) in enumerate(trials)
        ]
        for mode, move, fut in futures:
            work, dest, srcs, text, _finished = fut.result()
            reached = "done" if "done" in text else max(
                [p for p in PHASES if f"phase {p}" in text], key=PHASES.index, default="-"
            )  # fmt: skip
            if mode == "random":
                seen.append(reached)
            else:
                assert reached == mode
                with FrameStore.open(dest, readonly=True) as st:
                    unfinished = bool(st.catalog.merges.incomplete())
                assert unfinished == (mode in ("journaled", "placed"))
                if unfinished:
                    assert run_cli("verify", dest).exit_code == 1  # "interrupted merge"
            check_after_merge_crash(dest, srcs, move, want)
            shutil.rmtree(work)
    assert len(set(seen)) >= 3, seen  # kills landed at different points of the merge


def test_a_store_of_framestore_0_1_0_merges_and_replays(tmp_path):
    """Version-1 segments and a schema without m002's columns: read as they are,
    migrated when merged, copied byte for byte."""
    src = tmp_path / "old.store"
    shutil.copytree(Path(__file__).parent.parent / "fixtures" / "store-v0.1.0", src)
    want = store_content(src)
    dest = tmp_path / "d.store"
    assert merge(dest, [src]).sources[0].status == "merged"
    assert store_content(dest) == want and verify(dest).ok
    with FrameStore.open(dest, readonly=True) as st:
        assert set(st.catalog.segments.merged().values()) == {1, 2}
    result = run_cli("verify", dest, "--replay")
    assert result.exit_code == 0 and "3 match" in result.stdout, result.output


def test_recover_and_gc_on_a_merged_store_whose_stream_keys_collide(tmp_path, assault_frames):
    """After a merge, episode 2's chunks carry stream key 1 (its id in its source) while
    the store's own episode 1 is another, shorter recording: recover must neither adopt
    episode 2's frames into episode 1 nor copy them as a foreign recording."""
    a, b, dest = tmp_path / "a.store", tmp_path / "b.store", tmp_path / "dest.store"
    record_episodes(a, assault_frames, episodes=1, steps=6)
    record_episodes(b, assault_frames[100:], episodes=1, steps=14)
    merge(dest, [a, b])
    before = store_content(dest)
    assert sorted(len(ep[6]) for ep in before) == [6, 14]  # two episodes, both stream key 1
    with FrameStore.open(dest, readonly=True) as store:
        assert [(e.id, e.steps, e.stream_key) for e in store.episodes()] == [(1, 6, 1), (2, 14, 1)]
    report = recover(dest)
    assert not report.changed and not report.data_lost, report.as_dict()
    assert store_content(dest) == before
    assert verify(dest).ok
    with FrameStore.open(dest) as store:
        store.delete_episodes([1])
    assert run_cli("gc", dest, "--threshold", 1).exit_code == 0
    assert not recover(dest).changed
    assert store_content(dest) == [ep for ep in before if len(ep[6]) == 14]


def test_a_url_is_refused_by_name_not_folded_into_a_missing_path(tmp_path):
    """``s3://bucket/x`` as SRC or DEST was folded by ``Path()`` into ``s3:/bucket/x``
    and reported as "no such store"; it is refused as a URL, its password left out."""
    for args in (
        (tmp_path / "dest.store", "s3://reader:s3cret@bucket/runs"),
        ("s3://reader:s3cret@bucket/runs", tmp_path / "src.store"),
    ):
        line = assert_one_line_error(run_cli("merge", *args), 2)
        assert "s3://bucket/runs: merge combines stores on this machine, not URLs" in line
        assert "s3cret" not in line
    assert not (tmp_path / "dest.store").exists()
