"""The recording pipeline end to end: FrameStore facade, Recorder, RecordFrames and
`framestore record`, on real environments and real files."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import gymnasium as gym
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import WRITERS, wait_for

from framestore import FrameStore, InvalidInput, RecordFrames
from framestore.envs import make_env
from framestore.errors import InvalidFrame, NotAStore, StoreLocked
from tools.cli import cli


def replay_frames(env_id: str, seed: int, actions: list) -> list[np.ndarray]:
    """Re-run the environment from a stored seed and actions; frames after reset and
    after each action, exactly as RecordFrames records them."""
    env = make_env(env_id)
    try:
        env.reset(seed=seed)
        frames = [env.render()]
        for a in actions:
            env.step(a)
            frames.append(env.render())
        return frames
    finally:
        env.close()


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_record_cli_two_assault_episodes_reproduce_exactly(tmp_path, writer):
    store_path = tmp_path / "s.store"
    result = CliRunner().invoke(
        cli,
        [
            "record",
            str(store_path),
            "--env",
            "ALE/Assault-v5",
            "--episodes",
            "2",
            "--max-steps",
            "500",
            "--seed",
            "3",
            "--writer",
            writer,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [e["seed"] for e in summary["episodes"]] == [3, 4]
    # the writer's numbers as it left them, whichever process ran it (a storage process
    # once reported 0 B once it was closed)
    segments = sum(p.stat().st_size for p in (store_path / "segments").iterdir())
    assert 0 < summary["bytes_out"] <= segments
    assert summary["compression_ratio"] > 10
    with FrameStore.open(store_path, readonly=True) as store:
        eps = store.episodes()
        assert len(eps) == 2
        for ep, seed in zip(eps, (3, 4), strict=True):
            assert ep.seed == seed
            steps = store.read_steps(ep.id)
            # Truncation at 500 actions unless the game ended first: T actions, T+1 rows.
            assert ep.steps == len(steps) == 501 or steps[-1].terminated
            assert steps[0].action is None and steps[0].step == 0
            assert [s.step for s in steps] == list(range(len(steps)))
            if ep.steps == 501:
                assert steps[-1].truncated and ep.status == "complete"
            actions = [s.action for s in steps[1:]]
            expected = replay_frames("ALE/Assault-v5", seed, actions)
            stored = store.read_frames(ep.id)
            assert len(stored) == len(expected)
            for k, (a, b) in enumerate(zip(stored, expected, strict=True)):
                assert np.array_equal(a, b), f"episode {ep.id} step {k} differs"


def test_carracing_frames_reproduce_from_stored_seed_and_actions(store):
    env = RecordFrames(make_env("CarRacing-v3", max_episode_steps=60), store)
    env.reset(seed=11)
    env.action_space.seed(11)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        done = term or trunc
    env.close()
    (ep,) = store.episodes()
    steps = store.read_steps(ep.id)
    assert len(steps) == 61 and steps[-1].truncated
    actions = [s.action for s in steps[1:]]
    assert all(
        isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (3,) for a in actions
    )
    expected = replay_frames("CarRacing-v3", 11, actions)
    stored = store.read_frames(ep.id)
    assert all(np.array_equal(a, b) for a, b in zip(stored, expected, strict=True))
    assert stored[0].shape == (400, 600, 3)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "ALE/Breakout-v5"])
def test_record_other_families(tmp_path, env_id):
    result = CliRunner().invoke(
        cli,
        [
            "record",
            str(tmp_path / "s.store"),
            "--env",
            env_id,
            "--episodes",
            "2",
            "--max-steps",
            "30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["episodes"]) == 2
    assert all(e["frames"] == e["steps"] >= 2 for e in summary["episodes"])


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_database_holds_no_frame_bytes(writer, store, assault_frames):
    with store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode(seed=0)
        rec.record_step(assault_frames[0], info={"lives": 4})
        rec.flush()
        store.catalog.connection.checkpoint()
        size0 = os.path.getsize(store.db_path)
        n = 2000
        for i in range(1, n):
            rec.record_step(
                assault_frames[i % len(assault_frames)],
                action=i % 7,
                reward=1.0,
                info={"lives": np.int64(4), "episode_frame_number": i * 4, "frame_number": i * 4},
            )
        rec.end_episode()
    store.catalog.connection.checkpoint()
    growth = (os.path.getsize(store.db_path) - size0) / (n - 1)
    assert growth < 300, f"database grew {growth:.0f} bytes per step"
    # No column of any row holds anything frame-sized.
    with closing(sqlite3.connect(store.db_path)) as conn:
        biggest = conn.execute(
            "SELECT MAX(LENGTH(action)), MAX(LENGTH(info)), MAX(LENGTH(frame_shape)) FROM steps"
        ).fetchone()
    assert max(biggest) < 200


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_read_steps_types_and_flags(writer, store, assault_frames):
    space = gym.spaces.Discrete(7)
    with store.recorder("ALE/Assault-v5", action_space=space) as rec:
        eid = rec.begin_episode(seed=5)
        rec.record_step(assault_frames[0])
        rec.record_step(assault_frames[1], action=np.int64(3), reward=2.5, info={"lives": 4})
        rec.record_step(assault_frames[2], action=6, reward=-1.0, terminated=True)
        rec.end_episode()
    ep = store.episode(eid)
    assert (ep.steps, ep.frames, ep.status, ep.total_reward, ep.terminated) == (
        3,
        3,
        "complete",
        1.5,
        True,
    )
    steps = store.read_steps(eid)
    assert [s.action for s in steps] == [None, 3, 6]
    assert [s.reward for s in steps] == [0.0, 2.5, -1.0]
    assert steps[1].info == {"lives": 4}
    assert steps[2].terminated and not steps[2].truncated
    assert steps[0].frame_shape == (210, 160, 3)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_bad_input_is_refused_before_anything_is_queued(writer, store, assault_frames):
    with store.recorder("ALE/Assault-v5", action_space=gym.spaces.Discrete(7)) as rec:
        rec.begin_episode(seed=0)
        rec.record_step(assault_frames[0])
        before = rec.metrics().frames.frames_in
        with pytest.raises(InvalidFrame):
            rec.record_step(assault_frames[1].astype(np.float32), action=1)
        with pytest.raises(InvalidInput):
            rec.record_step(assault_frames[1], action=1, reward=float("nan"))
        with pytest.raises(InvalidInput):
            rec.record_step(assault_frames[1], action=99)
        with pytest.raises(InvalidInput):
            rec.record_step(assault_frames[1], action=1, info={"x": object()})
        assert rec.metrics().frames.frames_in == before
        rec.record_step(assault_frames[1], action=1)
        eid = rec.end_episode()
    assert store.episode(eid).steps == 2
    assert np.array_equal(store.read_frame(eid, 1), assault_frames[1])


def test_record_frames_requires_rgb_array():
    env = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        RecordFrames(env, store=None)
    env.close()


def test_record_frames_episode_trigger_and_truncation(store):
    env = RecordFrames(
        make_env("CartPole-v1", max_episode_steps=10), store, episode_trigger=lambda i: i % 2 == 0
    )
    for seed in range(3):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    env.close()
    eps = store.episodes()
    assert [e.seed for e in eps] == [0, 2]
    assert all(e.status == "complete" and e.steps <= 11 for e in eps)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_second_writer_is_refused_and_reader_works_meanwhile(
    writer, store, store_path, assault_frames
):
    with store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode(seed=0)
        for f in assault_frames[:50]:
            rec.record_step(f)
        rec.flush()
        with FrameStore.open(store_path) as other, pytest.raises(StoreLocked):
            other.recorder("ALE/Assault-v5")
        with FrameStore.open(store_path, readonly=True) as reader:
            (ep,) = reader.episodes()
            assert ep.status == "recording" and ep.steps == 50
            got = reader.read_frames(ep.id)
            assert all(np.array_equal(a, b) for a, b in zip(got, assault_frames[:50], strict=True))


def test_not_a_store_errors(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("hello")
    with pytest.raises(NotAStore):
        FrameStore.open(f)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "x").write_text("other data")
    with pytest.raises(NotAStore):
        FrameStore.open(d)
    with pytest.raises(NotAStore):
        FrameStore.open(tmp_path / "missing", readonly=True)
    runner = CliRunner()
    result = runner.invoke(cli, ["ls", str(f)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "error" in result.output
    result = runner.invoke(cli, ["record", str(tmp_path / "n.store"), "--env", "NoSuchEnv-v0"])
    assert result.exit_code == 2 and "unknown environment" in result.output
    assert not (tmp_path / "n.store").exists()


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    from framestore import FrameStore
    from framestore.envs import make_env
    from framestore.gym.wrappers import RecordFrames
    store = FrameStore.open(sys.argv[1], durability="durable")
    env = RecordFrames(make_env("ALE/Assault-v5"), store, overrides={"batch_size": 16})
    env.reset(seed=1)
    env.action_space.seed(1)
    i = 0
    while True:
        _, _, t, tr, _ = env.step(env.action_space.sample())
        i += 1
        if i == 150:
            env.recorder.flush()
            print("flushed", flush=True)
        if t or tr:
            env.reset()
""")


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_killed_recorder_leaves_only_readable_pointers(writer, tmp_path):
    store_path = tmp_path / "k.store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(store_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with FrameStore.open(store_path, readonly=True) as store:
        # A storage process (writer="process") outlives its producer to commit what it
        # was sent, then exits and frees the writer lock.
        wait_for(lambda: store.writer_running() is False, timeout=30)
        eps = store.episodes()
        # The process died mid-episode; if it died right after a reset, that episode's
        # row may not be committed yet and the last committed one is complete.
        assert all(e.status in ("recording", "complete") for e in eps)
        assert sum(e.steps for e in eps) >= 151
        for ep in eps:
            steps = store.read_steps(ep.id)
            frames = store.read_frames(ep.id)  # every committed row points at a readable frame
            assert len(frames) == len(steps) == ep.steps
        first = eps[0]
        steps = store.read_steps(first.id)
        expected = replay_frames("ALE/Assault-v5", 1, [s.action for s in steps[1:]])
        assert all(
            np.array_equal(a, b) for a, b in zip(store.read_frames(first.id), expected, strict=True)
        )


def test_step_trigger_keeps_metadata_for_every_step(store):
    env = RecordFrames(
        make_env("CartPole-v1", max_episode_steps=12), store, step_trigger=lambda t: t % 3 == 0
    )
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        done = term or trunc
    env.close()
    (ep,) = store.episodes()
    steps = store.read_steps(ep.id)
    assert len(steps) == ep.steps and ep.frames < ep.steps
    with_frames = [s.step for s in steps if s.frame is not None]
    # In the first episode the global step equals the step index.
    assert with_frames == [s.step for s in steps if s.step % 3 == 0]
    assert len(store.read_frames(ep.id)) == len(with_frames)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_sigterm_marks_episode_interrupted_and_exits_130(writer, tmp_path):
    store_path = tmp_path / "t.store"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools",
            "record",
            str(store_path),
            "--env",
            "ALE/Assault-v5",
            "--episodes",
            "200",  # far more than the wait below: the signal must land in a recording
            "--seed",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (store_path / "framestore.db").exists():
            try:
                with FrameStore.open(store_path, readonly=True) as st:
                    if any(e.steps > 100 for e in st.episodes()):
                        break
            except Exception:
                pass
        time.sleep(0.2)
    assert proc.poll() is None, "the recording ended before the signal"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    with FrameStore.open(store_path, readonly=True) as st:
        eps = st.episodes()
        # The signal usually lands mid-episode ("interrupted"); it may land between an
        # episode's end and the next reset. Either way nothing is left "recording".
        assert eps[-1].status in ("interrupted", "complete")
        assert all(e.status != "recording" for e in eps)
        for ep in eps:
            assert len(st.read_frames(ep.id)) == ep.steps


def test_max_steps_help_says_what_it_counts():
    text = " ".join(CliRunner().invoke(cli, ["record", "--help"]).output.split())
    assert "after N actions; it then holds N+1 steps (step 0 is the frame after the reset)" in text


def _read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout} s"
    return stream.readline()


def test_without_a_tty_each_episode_is_a_line_and_sigterm_prints_what_was_saved(tmp_path):
    store_path = tmp_path / "p.store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools", "record", str(store_path), "--env", "MountainCar-v0"]
        + ["--episodes", "1000", "--max-steps", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _read_line(proc.stdout, 60)  # long before the run ends
        assert first == "  episode 1: seed 0, 21 steps, reward -20, complete\n"
        second = _read_line(proc.stdout, 60)
        assert second.startswith("  episode 2: seed 1, 21 steps")
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    out = first + second + out
    assert proc.returncode == 130, err
    summary = [ln for ln in out.splitlines() if ln.startswith("interrupted: saved run 1: ")]
    assert len(summary) == 1, out
    assert err.strip().splitlines()[-1] == "framestore: interrupted"
    with FrameStore.open(store_path, readonly=True) as st:
        eps = st.episodes()
        assert f"{len(eps)} episode(s)" in summary[0]
        assert f"{sum(e.steps for e in eps)} steps" in summary[0]
        listed = [ln for ln in out.splitlines() if ln.startswith("  episode ")]
        assert len(listed) == len(eps)  # every saved episode is on a line, the last too
