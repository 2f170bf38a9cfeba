"""Hostile or damaged database values and out-of-range input (issue 15, items 4, 7 and 8).

A value of the wrong type in ``framestore.db`` (text where a pointer belongs, a shape
that does not parse, config that is not a JSON object) gets one readable line naming
the table, row and column from every command, never a traceback; ``verify`` reports it;
``export`` trusts the decoded frame's own shape, never the database's. Ids and seeds that
do not fit SQLite's 64-bit integers, self-referential ``info`` and impossible export
options are refused before anything is written.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, record_episodes, run_cli

from framestore import FrameStore
from framestore.errors import CorruptData, InvalidInput
from tools.verify import verify

STEPS = 6
ZSTD = {"codec": "zstd", "chunk_frames": 4}


@pytest.fixture(scope="module")
def template(tmp_path_factory, assault_frames):
    path = tmp_path_factory.mktemp("tpl") / "t.store"
    record_episodes(path, assault_frames, episodes=2, steps=STEPS, overrides=ZSTD)
    return path


@pytest.fixture
def store_copy(template, tmp_path):
    path = tmp_path / "c.store"
    shutil.copytree(template, path)
    return path


def sql(path: Path, statement: str, *params) -> None:
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute(statement, params)


# --------------------------------------------------------------------------- item 8
HOSTILE_VALUES = {
    "config not JSON": "UPDATE runs SET config = '{not json'",
    "config not an object": "UPDATE runs SET config = '[1, 2]'",
    "slot as a blob": "UPDATE steps SET frame_slot = x'00' WHERE episode_id = 1 AND step = 2",
    "offset as a real": "UPDATE steps SET frame_offset = 24.5 WHERE episode_id = 1 AND step = 2",
    "segment -1": "UPDATE steps SET frame_segment = -1 WHERE episode_id = 1 AND step = 2",
    "segment as text": "UPDATE steps SET frame_segment = 'one' WHERE episode_id = 1 AND step = 2",
    "shape abc": "UPDATE steps SET frame_shape = 'abc' WHERE episode_id = 1 AND step = 2",
    "reward as text": "UPDATE steps SET reward = 'lots' WHERE episode_id = 1 AND step = 2",
    "info not JSON": "UPDATE steps SET info = '{x' WHERE episode_id = 1 AND step = 2",
    "status unknown": "UPDATE episodes SET status = 'weird' WHERE id = 1",
}


@pytest.mark.parametrize("case", list(HOSTILE_VALUES))
def test_hostile_database_values_give_one_line_never_a_traceback(store_copy, tmp_path, case):
    path = store_copy
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(HOSTILE_VALUES[case])
    report = verify(path)
    assert not report.ok and any(p.kind == "bad value" for p in report.problems), report
    for verb, args in [
        ("ls", []),
        ("info", []),
        ("export", ["--episode", "1", "-o", tmp_path / "x.npz"]),
        ("verify", []),
        ("recover", []),
        ("gc", []),
    ]:
        result = run_cli(verb, path, *args)  # asserts: no traceback
        if result.exit_code not in (0, 1, 3):
            line = assert_one_line_error(result, result.exit_code)
            assert result.exit_code in (2, 5), line
    with FrameStore.open(path, readonly=True) as store:  # the library raises, never TypeError
        try:
            for ep in store.episodes():
                store.read_steps(ep.id)
                list(store.iter_frames(ep.id))
        except (CorruptData, InvalidInput):
            pass


def test_a_bad_value_names_table_row_and_column(store_copy):
    sql(store_copy, "UPDATE steps SET frame_shape = 'abc' WHERE episode_id = 1 AND step = 2")
    with FrameStore.open(store_copy, readonly=True) as store:
        with pytest.raises(CorruptData, match=r"table steps, episode 1 step 2, column frame_shape"):
            store.read_steps(1)
    result = run_cli("ls", store_copy)
    assert result.exit_code == 0  # ls does not need the shape
    result = run_cli("export", store_copy, "--episode", 1, "-o", store_copy.parent / "x.gif")
    assert "column frame_shape" in assert_one_line_error(result, 5)


BIG = [2**63, 2**70, -(2**63) - 1]


@pytest.mark.parametrize("big", BIG)
def test_ids_beyond_64_bits_are_refused_in_one_line(store_copy, tmp_path, big):
    with FrameStore.open(store_copy) as store:
        for call in (
            lambda: store.read_steps(big),
            lambda: store.read_frame(big, 0),
            lambda: store.read_frame(1, big),  # a step: out of every range, not an overflow
            lambda: store.delete_episodes([big]),
            lambda: store.run(big),
        ):
            with pytest.raises((InvalidInput, KeyError)):
                call()
        # a stop beyond every step means all of them, one below every step none
        assert len(store.read_steps(1, 0, big)) == (STEPS if big > 0 else 0)
    for verb, args in [
        ("export", ["--episode", big, "-o", tmp_path / "x.npz"]),
        ("export", ["--run", big, "-o", tmp_path / "d/"]),
        ("rm", ["--episode", big]),
    ]:
        assert_one_line_error(run_cli(verb, store_copy, *args), 2)
    assert verify(store_copy).ok


def test_gui_replay_of_an_id_beyond_64_bits(store_copy, tmp_path):
    """Refused before Qt starts (its signals carry 32-bit ints: before, an OverflowError
    and "cannot open episode -1")."""
    out = tmp_path / "s.png"
    for big, why in [(2**63, "out of range"), (2**40, "no episode")]:
        result = run_cli("gui", store_copy, "--replay", big, "--screenshot", out)
        line = assert_one_line_error(result, 2)
        assert f"{big}" in line and why in line, line
    assert not out.exists()


def test_a_seed_beyond_64_bits_is_refused_before_anything_is_queued(store_copy, assault_frames):
    with FrameStore.open(store_copy) as store, store.recorder("ALE/Assault-v5") as rec:
        for seed in (2**63, 2**70, -(2**64)):
            with pytest.raises(InvalidInput, match="seed"):
                rec.begin_episode(seed=seed)
        assert rec.current_episode is None
        eid = rec.begin_episode(seed=2**63 - 1)  # the largest that fits is fine
        rec.record_step(assault_frames[0])
        rec.end_episode()
    with FrameStore.open(store_copy, readonly=True) as store:
        assert store.episode(eid).seed == 2**63 - 1
    assert verify(store_copy).ok


def test_record_with_a_seed_beyond_64_bits_writes_nothing(tmp_path):
    path = tmp_path / "new.store"
    for seed in (2**63, -1):
        result = run_cli("record", path, "--env", "CartPole-v1", "--seed", seed, "--max-steps", 3)
        assert "--seed" in assert_one_line_error(result, 2)
    result = run_cli("record", path, "--env", "CartPole-v1", "--seed", 2**63 - 2, "--episodes", 3)
    assert_one_line_error(result, 2)  # episode 3 would use seed 2**63
    assert not path.exists()


def test_self_referential_and_deeply_nested_info_is_refused(store_copy, assault_frames):
    loop: dict = {"a": 1}
    loop["self"] = loop
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    cycle: list = []
    cycle.append(cycle)
    with FrameStore.open(store_copy) as store, store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode()
        for info in (loop, deep, {"list": cycle}):
            with pytest.raises(InvalidInput, match="nested"):
                rec.record_step(assault_frames[0], info=info)
        with pytest.raises(InvalidInput, match="nested"):
            rec.record_step(assault_frames[0], action=cycle)
        rec.record_step(assault_frames[0], info={"ok": [1, {"two": 2}]})
        rec.end_episode()
    assert verify(store_copy).ok


@pytest.mark.parametrize(
    "args",
    [
        ["--fps", "1e-9", "-o", "{tmp}/x.gif"],
        ["--fps", "inf", "-o", "{tmp}/x.gif"],
        ["--scale", "100", "-o", "{tmp}/x.gif"],
        ["--scale", "100000", "-o", "{tmp}/x.mp4"],
        ["--scale", "60", "-o", "{tmp}/x.gif"],  # 9600x12600: within the sides, too big
        ["-o", "/"],
        ["-o", ""],
        ["-o", "./"],
        ["-o", "."],
    ],
    ids=lambda a: " ".join(a),
)
def test_impossible_export_options_are_refused(store_copy, tmp_path, args, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    filled = [a.format(tmp=tmp_path) for a in args]
    result = run_cli("export", store_copy, "--episode", 1, *filled)
    assert_one_line_error(result, 2)
    assert list(work.iterdir()) == []  # nothing written where the command ran
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("x.")]


def test_export_into_a_store_is_refused(store_copy, tmp_path):
    seg_dir = store_copy / "segments"
    for out in (
        f"{seg_dir}/seg-000099.fseg/",
        f"{seg_dir}/x.npz",
        f"{store_copy}/frames/",
        f"{store_copy}/",
    ):
        result = run_cli("export", store_copy, "--episode", 1, "-o", out)
        assert "inside the store" in assert_one_line_error(result, 2)
    result = run_cli("export", store_copy, "--run", 1, "-o", f"{seg_dir}/run/")
    assert "inside the store" in assert_one_line_error(result, 2)
    assert sorted(p.name for p in seg_dir.iterdir()) == sorted(
        p.name for p in (store_copy / "segments").iterdir()
    )
    assert not (seg_dir / "seg-000099.fseg").exists() and verify(store_copy).ok
    assert run_cli("record", store_copy, "--env", "CartPole-v1", "--max-steps", 3).exit_code == 0


# --------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("fmt", ["npz", "gif", "mp4"])
@pytest.mark.parametrize("shape", ["210x161x3", "160x210x3", "100000x100000x3"])
def test_export_trusts_the_decoded_shape_never_the_database(store_copy, tmp_path, fmt, shape):
    sql(store_copy, "UPDATE steps SET frame_shape = ? WHERE episode_id = 1", shape)
    out = tmp_path / f"x.{fmt}"
    result = run_cli("export", store_copy, "--episode", 1, "-o", out)
    assert_one_line_error(result, 5)
    assert not out.exists() and not list(tmp_path.glob("x.*"))


def test_one_row_with_a_wrong_shape_is_corruption_not_output(store_copy, tmp_path):
    sql(store_copy, "UPDATE steps SET frame_shape = '210x160x4' WHERE episode_id = 1 AND step = 3")
    out = f"{tmp_path}/frames/"
    result = run_cli("export", store_copy, "--episode", 1, "-o", out)
    assert "step 3" in assert_one_line_error(result, 5)
    assert not (tmp_path / "frames").exists()
    result = run_cli("export", store_copy, "--episode", 1, "-o", out, "--skip-corrupt")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        f"step_{s:06d}.png" for s in range(STEPS) if s != 3
    ]


# --------------------------------------------------------------------------- item 7
def test_verify_checks_the_database_itself(store_copy):
    """What verify used to pass while ls/export/recover failed: values it did not check."""
    sql(store_copy, "UPDATE runs SET config = '{broken'")
    report = verify(store_copy)
    assert [p.kind for p in report.problems] == ["bad value"]
    assert "table runs, column config" in report.problems[0].message
    result = run_cli("verify", store_copy)
    assert result.exit_code == 1 and "bad value" in result.output


@pytest.mark.parametrize("trial", range(24))
def test_when_verify_passes_a_damaged_database_every_reader_works(template, tmp_path, trial):
    """Seeded bit flips in framestore.db's pages: a database verify calls clean must give
    ls, export and recover no trouble (before: 5 of 50 such flips broke them)."""
    path = tmp_path / "d.store"
    shutil.copytree(template, path)
    db = path / "framestore.db"
    data = bytearray(db.read_bytes())
    rng = random.Random(4000 + trial)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(100, len(data))] ^= 1 << rng.randrange(8)
    db.write_bytes(bytes(data))
    result = run_cli("verify", path)
    if result.exit_code != 0:
        return  # reported: nothing more is promised
    for verb, args in [
        ("ls", []),
        ("info", []),
        ("export", ["--episode", "1", "-o", tmp_path / "1.npz"]),
        ("export", ["--episode", "2", "-o", tmp_path / "2.npz"]),
    ]:
        res = run_cli(verb, path, *args)
        assert res.exit_code == 0, (verb, res.output)
    assert run_cli("recover", path).exit_code == 0
    with np.load(tmp_path / "1.npz") as npz:
        assert npz["frames"].shape == (STEPS, 210, 160, 3)


def test_a_pointer_beyond_any_file_offset_is_corruption_not_an_io_error(store_copy, tmp_path):
    """A forged offset past what lseek accepts (2**62): ls and info used to stop with
    'framestore: error: Invalid argument' (exit 6), naming nothing."""
    path = store_copy
    sql(path, "UPDATE steps SET frame_offset = ? WHERE episode_id = 1 AND step = 2", 2**62)
    for verb in ("ls", "info"):
        result = run_cli(verb, path)
        assert result.exit_code == 0, result.output
    line = assert_one_line_error(
        run_cli("export", path, "--episode", 1, "-o", tmp_path / "x.npz"), 5
    )
    assert f"at offset {2**62}" in line
    report = verify(path)
    assert [(p.episode, p.kind) for p in report.problems] == [(1, "dangling pointer")], report


def test_step_track_decodes_repeated_actions_once_and_never_shares_an_array(tmp_path):
    # Loading a long episode's track (the torch datasets do) decodes each distinct
    # discrete action text once; array actions stay one object per row.
    import gymnasium as gym
    import numpy as np

    from framestore import FrameStore

    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    spaces = {"discrete": gym.spaces.Discrete(3), "box": gym.spaces.Box(-1, 1, (2,))}
    actions = {"discrete": [None, 2, 2, 1, 2], "box": [None, *[np.ones(2, np.float32)] * 4]}
    with FrameStore.open(tmp_path / "s.store") as store:
        ids = {}
        for name, space in spaces.items():
            with store.recorder("CartPole-v1", action_space=space) as rec:
                ids[name] = rec.begin_episode(seed=0)
                for a in actions[name]:
                    rec.record_step(frame, action=a)
                rec.end_episode()
        discrete = store.step_track(ids["discrete"]).actions
        box = store.step_track(ids["box"]).actions
    assert [None if a is None else int(a) for a in discrete] == actions["discrete"]
    assert box[0] is None and all(np.array_equal(a, np.ones(2)) for a in box[1:])
    box[1][0] = 5  # one row's array changed leaves the others alone
    assert all(a[0] == 1 for a in box[2:])
