"""The GUI's pure-Python models: no Qt is imported here."""

from __future__ import annotations

import errno
import sys
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from framestore import DiskFull, RecorderMetrics
from gui.models import (
    EpisodeListModel,
    EpisodeRow,
    HudModel,
    KeyMapper,
    KeyState,
    PlaybackClock,
)


def test_models_do_not_import_qt():
    import subprocess

    code = "import sys, gui.models; print(any(m.startswith('PySide6') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# =============================================================================== clock
def indexes(clock: PlaybackClock) -> list[int]:
    seen: list[int] = []
    clock.index_changed.connect(seen.append)
    return seen


def test_clock_ticks_by_elapsed_time_and_carries_fractions():
    c = PlaybackClock(fps=10, length=100)
    c.play()
    assert c.tick(0.05) == 0  # half a frame
    assert c.tick(0.05) == 1  # the halves add up
    assert c.index == 1
    assert c.tick(0.35) == 3
    assert c.index == 4


def test_clock_speed_scales_and_clamps():
    c = PlaybackClock(fps=30, length=1000)
    c.set_speed(2)
    c.play()
    c.tick(1.0)
    assert c.index == 60
    c.set_speed(100)
    assert c.speed == 8.0
    c.set_speed(0.01)
    assert c.speed == 0.25
    c.tick(4.0)
    assert c.index == 90
    with pytest.raises(ValueError):
        c.set_speed(float("nan"))
    c.set_speed(1)
    c.faster()
    assert c.speed == 2
    c.slower()
    c.slower()
    assert c.speed == 0.5


def test_clock_stops_at_end_without_loop_and_restarts_on_play():
    c = PlaybackClock(fps=10, length=5)
    c.play()
    c.tick(10)
    assert c.index == 4 and not c.playing
    c.play()  # at the end: start over
    assert c.index == 0 and c.playing


def test_clock_loops_forward_and_reverse():
    c = PlaybackClock(fps=10, length=5, loop=True)
    c.play()
    c.tick(0.7)  # 7 frames: 0 -> 7 % 5 = 2
    assert c.index == 2 and c.playing
    c.set_reverse(True)
    c.tick(0.3)  # 2 -> -1 -> 4
    assert c.index == 4 and c.playing


def test_clock_reverse_stops_at_zero():
    c = PlaybackClock(fps=10, length=10, reverse=True)
    c.seek(3)
    c.play()
    c.tick(1.0)
    assert c.index == 0 and not c.playing
    c.play()  # reverse at the start: restart from the end
    assert c.index == 9


def test_clock_step_seek_and_signals():
    c = PlaybackClock(fps=10, length=10)
    seen = indexes(c)
    c.seek(5)
    c.step_forward()
    c.step_back()
    c.step_back()
    c.seek(100)
    c.seek(-3)
    assert seen == [5, 6, 5, 4, 9, 0]
    c.step_back()  # no loop: stays at 0, no signal
    assert seen[-1] == 0 and len(seen) == 6
    c.set_loop(True)
    c.step_back()
    assert c.index == 9
    c.play()
    c.step_forward()  # stepping pauses
    assert not c.playing and c.index == 0


def test_clock_follow_live_tracks_growing_length():
    c = PlaybackClock(fps=10, length=0, live=True)
    seen = indexes(c)
    c.set_length(5, live=True)
    assert c.index == 4
    c.set_length(8)
    assert c.index == 7
    c.seek(2)  # looking back: growth does not move us
    c.set_length(12)
    assert c.index == 2
    c.seek(c.last)
    c.set_length(20)
    assert c.index == 19
    c.set_follow_live(False)
    c.set_length(25)
    assert c.index == 19
    assert seen == [4, 7, 2, 11, 19]


def test_clock_live_playback_waits_at_end_then_finishes():
    c = PlaybackClock(fps=10, length=5, live=True, follow_live=False)
    c.play()
    c.tick(2.0)
    assert c.index == 4 and c.playing  # waiting for the recorder
    c.set_length(8)
    c.tick(0.2)
    assert c.index == 6
    c.set_length(8, live=False)
    c.tick(5)
    assert c.index == 7 and not c.playing


def test_clock_length_shrink_clamps_and_empty_is_inert():
    c = PlaybackClock(fps=10, length=10)
    c.seek(9)
    c.set_length(3)
    assert c.index == 2
    e = PlaybackClock(fps=10)
    e.play()
    assert not e.playing and e.tick(1.0) == 0
    with pytest.raises(ValueError):
        PlaybackClock(fps=0)


# =============================================================================== episode list
def row(i, **kw) -> EpisodeRow:
    d = dict(
        id=i,
        run=1,
        env="ALE/Assault-v5",
        index=i - 1,
        seed=i,
        steps=10 * i,
        total_reward=float(i),
        status="complete",
        size=1000 * i,
    )
    d.update(kw)
    return EpisodeRow(**d)


def recorded_events(m: EpisodeListModel) -> list[tuple]:
    ev: list[tuple] = []
    m.rows_inserted.connect(lambda a, b: ev.append(("ins", a, b)))
    m.rows_removed.connect(lambda a, b: ev.append(("rm", a, b)))
    m.rows_changed.connect(lambda a, b: ev.append(("chg", a, b)))
    return ev


def test_list_apply_emits_minimal_diffs():
    m = EpisodeListModel()
    ev = recorded_events(m)
    m.apply([row(3), row(1), row(2)])
    assert [r.id for r in m.rows] == [1, 2, 3]
    assert ev == [("ins", 0, 0), ("ins", 1, 1), ("ins", 2, 2)]
    ev.clear()
    m.apply([row(1), row(2), row(3)])
    assert ev == []  # nothing changed: nothing emitted
    m.apply([row(1), row(3, steps=99, status="recording"), row(4)])
    assert ev == [("rm", 1, 1), ("chg", 1, 1), ("ins", 2, 2)]
    assert [r.id for r in m.rows] == [1, 3, 4]
    assert m.rows[1].steps == 99
    assert m.row_index(4) == 2 and m.row_index(2) is None


def test_list_sort_and_filter():
    m = EpisodeListModel()
    m.apply(
        [
            row(1, env="ALE/Pong-v5", total_reward=-21.0),
            row(2, status="recording", seed=None, size=None),
            row(3, env="CartPole-v1", total_reward=200.0, run=2),
        ]
    )
    reward = [k for k, _ in m.columns].index("total_reward")
    seed = [k for k, _ in m.columns].index("seed")
    assert [r.id for r in m.view(column=reward)] == [1, 2, 3]
    assert [r.id for r in m.view(column=reward, descending=True)] == [3, 2, 1]
    assert [r.id for r in m.view(column=seed)] == [2, 1, 3]  # None sorts first
    assert [r.id for r in m.view(text="pong")] == [1]
    assert [r.id for r in m.view(text="status:rec")] == [2]
    assert [r.id for r in m.view(text="run:2")] == [3]
    assert [r.id for r in m.view(text="ale complete")] == [1]
    assert m.view(text="nosuchfield:1") == []
    size = [k for k, _ in m.columns].index("size")
    assert m.display(m.rows[1], size) == "-"
    assert m.display(m.rows[0], size) == "1000 B"


def test_list_fetch_reads_store_and_caches_sizes(store, assault_frames, monkeypatch):
    rec = store.recorder("ALE/Assault-v5")
    try:
        e1 = rec.begin_episode(seed=0)
        for i in range(5):
            rec.record_step(assault_frames[i], action=i % 7 if i else None)
        rec.end_episode()
        e2 = rec.begin_episode(seed=1)  # still being recorded: it grows
        for i in range(3):
            rec.record_step(assault_frames[i], action=i % 7 if i else None)
        rec.flush()
        real_bytes = store.episode_bytes
        calls: list[int] = []
        monkeypatch.setattr(
            store, "episode_bytes", lambda eid: calls.append(eid) or real_bytes(eid)
        )
        m = EpisodeListModel()
        m.refresh(store)
        assert [(r.id, r.status, r.size) for r in m.rows] == [
            (e1, "complete", real_bytes(e1)),
            (e2, "recording", real_bytes(e2)),
        ]
        assert all(r.size > 0 for r in m.rows)
        calls.clear()
        m.refresh(store)
        assert calls == []  # nothing changed: sizes come from the cache
        rec.record_step(assault_frames[3], action=1)
        rec.flush()
        m.refresh(store)
        assert calls == [e2]  # only the growing episode is measured again
        assert m.rows[1].steps == 4
    finally:
        rec.close()


# =============================================================================== HUD
@pytest.fixture
def recorder_metrics(store, assault_frames) -> RecorderMetrics:
    """The metrics of a real Recorder that recorded 5 Assault steps (all written)."""
    rec = store.recorder("ALE/Assault-v5")
    try:
        rec.begin_episode(seed=0)
        for i in range(5):
            rec.record_step(assault_frames[i], action=i % 7 if i else None)
        rec.end_episode()
        rec.flush()
        return rec.metrics()
    finally:
        rec.close()


def metrics(
    base: RecorderMetrics, *, sink_failed: bool = False, **frames: object
) -> RecorderMetrics:
    """``base`` with the frame writer's numbers set to known values (a queue bound of 100
    frames / 10 MB, 100x compression, nothing queued, slow or failed), then ``frames``."""
    known = dict(
        queue_frames=0,
        queue_bytes=0,
        bound_frames=100,
        bound_bytes=10_000_000,
        high_water_frames=0,
        frames_written=0,
        frames_dropped=0,
        bytes_in=1000,
        bytes_out=10,
        last_flush_ms=0.0,
        max_flush_ms=0.0,
        error=None,
    )
    return replace(
        base,
        frames=replace(base.frames, **{**known, **frames}),
        sink=replace(base.sink, failed=sink_failed),
    )


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def codes(state) -> list[str]:
    return [w.code for w in state.warnings]


def test_hud_fps_and_frame_time_from_presented_frames():
    hud = HudModel()
    for i in range(61):
        hud.frame_presented(i / 60)
    s = hud.update(None)
    assert s.fps == pytest.approx(60)
    assert s.frame_ms == pytest.approx(1000 / 60)
    assert not s.recording and s.warnings == ()
    assert "not recording" in hud.lines()[-1]


def test_hud_queue_warning_at_80_percent(recorder_metrics):
    m = recorder_metrics
    hud = HudModel()
    assert codes(hud.update(metrics(m, queue_frames=79))) == []
    s = hud.update(metrics(m, queue_frames=80, high_water_frames=80))
    assert codes(s) == ["LOG932"]
    assert s.queue_frames == 80 and s.queue_high_water == 80 and s.compression_ratio == 100
    # the byte bound counts too
    s = hud.update(metrics(m, queue_frames=1, queue_bytes=9_000_000))
    assert codes(s) == ["LOG932"]


def test_hud_slow_flush_warning_is_held_for_a_while(recorder_metrics):
    m = recorder_metrics
    clock = FakeClock()
    hud = HudModel(clock=clock, hold_seconds=5)
    assert codes(hud.update(metrics(m, max_flush_ms=200))) == []
    s = hud.update(metrics(m, last_flush_ms=10, max_flush_ms=400))
    assert codes(s) == ["LOG934"] and "400 ms" in s.warnings[0].text
    clock.t = 4.0
    assert codes(hud.update(metrics(m, max_flush_ms=400))) == ["LOG934"]
    clock.t = 6.0
    assert codes(hud.update(metrics(m, max_flush_ms=400))) == []


def test_hud_disk_full_and_writer_errors(recorder_metrics):
    m = recorder_metrics
    hud = HudModel()
    hud.set_error(OSError(errno.ENOSPC, "No space left on device"))
    s = hud.update(None)
    assert codes(s) == ["DISK_FULL"] and s.warnings[0].severity == "error"
    hud.set_error(None)
    assert codes(hud.update(None)) == []
    s = hud.update(metrics(m, error="writer thread died: boom", frames_dropped=3))
    assert codes(s) == ["FRAMES_DROPPED", "WRITER_ERROR"]
    assert "boom" in s.warnings[-1].text


def test_hud_knows_disk_full_by_type_through_the_error_chain():
    from framestore.errors import SinkError

    hud = HudModel()
    try:
        try:
            raise DiskFull("segments/seg-000001.fseg")
        except DiskFull as full:
            raise SinkError("telemetry DB sink failed") from full
    except SinkError as e:
        hud.set_error(e)
    s = hud.update(None)
    assert codes(s) == ["DISK_FULL"] and "telemetry DB sink failed" in s.warnings[0].text


def test_hud_shows_a_real_recorders_numbers(recorder_metrics):
    m = recorder_metrics
    hud = HudModel()
    s = hud.update(m)
    assert s.recording and s.warnings == ()
    assert s.frames_written == 5 and s.steps_recorded == 5 and s.frames_dropped == 0
    assert s.queue_bound == m.frames.bound_frames > 0
    assert s.bytes_in == 5 * 210 * 160 * 3 and 0 < s.bytes_out < s.bytes_in
    assert s.durability == m.durability and s.preset == m.preset
    assert "written 5" in "\n".join(hud.lines())


def test_hud_warns_when_the_sink_failed(recorder_metrics):
    """``SinkMetrics.failed`` (the SQLite sink thread died) is a recording failure."""
    hud = HudModel()
    assert codes(hud.update(metrics(recorder_metrics))) == []
    s = hud.update(metrics(recorder_metrics, sink_failed=True))
    assert codes(s) == ["WRITER_ERROR"] and s.warnings[0].severity == "error"
    assert "sink" in s.warnings[0].text
    # it stays until the next recording clears it
    assert codes(hud.update(metrics(recorder_metrics))) == ["WRITER_ERROR"]
    hud.set_error(None)
    assert codes(hud.update(metrics(recorder_metrics))) == []


# =============================================================================== keys
def test_key_state_keeps_short_taps_for_one_step():
    k = KeyState()
    k.press("Space")
    k.release("Space")
    k.press("Left")
    assert k.consume() == {"Space", "Left"}
    assert k.consume() == {"Left"}
    k.release("Left")
    assert k.consume() == frozenset()


@pytest.fixture(scope="module")
def assault():
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make("ALE/Assault-v5", render_mode="rgb_array")
    yield env
    env.close()


def test_keymap_assault(assault):
    km = KeyMapper.for_env(assault)
    meanings = assault.unwrapped.get_action_meanings()
    name = lambda keys: meanings[km.action(keys)]  # noqa: E731
    assert km.family == "atari" and km.realtime
    assert name(set()) == "NOOP"
    assert name({"Space"}) == "FIRE"
    assert name({"Up"}) == "UP"
    assert name({"Right"}) == "RIGHT"
    assert name({"Left", "Space"}) == "LEFTFIRE"
    assert name({"Right", "Space"}) == "RIGHTFIRE"
    assert name({"Left", "Right"}) == "NOOP"  # opposites cancel
    # UPRIGHTFIRE does not exist in Assault: the closest action it has
    assert name({"Up", "Right", "Space"}) == "RIGHTFIRE"
    assert name({"Down"}) == "NOOP"
    text = km.bindings_text()
    assert "Space" in text and "RIGHTFIRE" in text and "→+Space" in text


def test_keymap_full_atari_combinations():
    from gui.models import AtariKeyMapper

    full = [
        "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
        "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE",
        "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
    ]  # fmt: skip
    km = AtariKeyMapper(full)
    assert full[km.action({"Up", "Right", "Space"})] == "UPRIGHTFIRE"
    assert full[km.action({"Down", "Left"})] == "DOWNLEFT"


def test_keymap_car_racing():
    env = gym.make("CarRacing-v3", render_mode="rgb_array")
    try:
        km = KeyMapper.for_env(env)
        assert km.family == "car_racing" and km.realtime
        a = km.action({"Left", "Up"})
        assert a.dtype == np.float32 and a.shape == (3,)
        assert a.tolist() == [-1.0, 1.0, 0.0]
        assert env.action_space.contains(a)
        assert km.action({"Right", "Down"}).tolist() == pytest.approx([1.0, 0.0, 0.8])
        assert km.action(set()).tolist() == [0.0, 0.0, 0.0]
        assert km.action({"Left", "Right"})[0] == 0.0
        assert "steer" in km.bindings_text()
    finally:
        env.close()


def test_keymap_frozen_lake_is_turn_based():
    env = gym.make("FrozenLake-v1", render_mode="rgb_array")
    try:
        km = KeyMapper.for_env(env)
        assert not km.realtime
        assert km.action(set()) is None  # no key: no step
        assert [km.action({k}) for k in ("Left", "Down", "Right", "Up")] == [0, 1, 2, 3]
        assert "↑" in km.bindings_text()
    finally:
        env.close()


def test_keymap_classic_control():
    env = gym.make("CartPole-v1")
    try:
        km = KeyMapper.for_env(env)
        assert km.action({"Left"}) == 0 and km.action({"Right"}) == 1
        assert km.action(set()) is None
    finally:
        env.close()
    env = gym.make("MountainCar-v0")
    try:
        km = KeyMapper.for_env(env)
        assert km.realtime and km.action(set()) == 1 and km.action({"Right"}) == 2
    finally:
        env.close()
    env = gym.make("Pendulum-v1")
    try:
        km = KeyMapper.for_env(env)
        assert km.action({"Left"}).tolist() == [-2.0] and km.action(set()).tolist() == [0.0]
    finally:
        env.close()
