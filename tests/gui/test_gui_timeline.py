"""The replay timeline's model, without Qt: per-step data from a real store
(``FrameStore.step_track``, paged), binning per pixel column, hit-testing, caching,
live growth, hover text; and the step panel's readable/exact values."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from framestore import FrameStore
from gui.models import MARKERS, TimelineModel, step_fields, step_json, step_panel_text

N = 3_000


@pytest.fixture
def long_episode(store_path, assault_frames):
    """One Assault episode of N steps: reward 1 on every 7th step, -0.5 on every 11th,
    action i % 5, the frame of every 13th step dropped, truncated at the end."""
    rewards = [0.0] + [
        (1.0 if i % 7 == 0 else 0.0) + (-0.5 if i % 11 == 0 else 0.0) for i in range(1, N)
    ]
    with FrameStore.open(store_path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=gym.spaces.Discrete(5))
        try:
            eid = rec.begin_episode(seed=0)
            for i in range(N):
                rec.record_step(
                    None if i % 13 == 5 else assault_frames[i % len(assault_frames)],
                    action=None if i == 0 else i % 5,
                    reward=rewards[i],
                    truncated=i == N - 1,
                )
            rec.end_episode()
        finally:
            rec.close()
    return store_path, eid, np.array(rewards)


def test_track_is_read_in_pages_and_equals_one_query(long_episode):
    path, eid, rewards = long_episode
    with FrameStore.open(path, readonly=True) as st:
        whole = st.step_track(eid)
        paged = TimelineModel.fetch(st, eid, page=500)
        steps = st.read_steps(eid)
    assert paged == whole and len(whole) == N
    assert list(whole.steps) == list(range(N))
    np.testing.assert_array_equal(np.array(whole.rewards), rewards)
    assert whole.actions[0] is None and [int(a) for a in whole.actions[1:6]] == [1, 2, 3, 4, 0]
    assert whole.has_frame == tuple(s.frame is not None for s in steps)
    assert whole.truncated[-1] and not any(whole.truncated[:-1]) and not any(whole.recovered)


def test_columns_bin_every_step_and_place_markers(long_episode):
    path, eid, rewards = long_episode
    with FrameStore.open(path, readonly=True) as st:
        model = TimelineModel()
        model.set_track(eid, TimelineModel.fetch(st, eid))
    width = 700
    cols = model.columns(width)
    assert cols is model.columns(width)  # cached: repaints do not rebin
    returns = np.cumsum(rewards)
    for x in (0, 1, 350, width - 1):
        a, b = cols.first[x], cols.first[x + 1]
        assert cols.reward_min[x] == rewards[a:b].min() and cols.reward_max[x] == rewards[a:b].max()
        assert cols.returns[x] == pytest.approx(returns[b - 1])
    assert cols.first[0] == 0 and cols.first[-1] == N  # every step in exactly one column
    assert cols.reward_range == (-0.5, 1.0)
    assert cols.action_kind == "discrete" and cols.action_count == 5
    assert cols.action_labels == ("0", "1", "2", "3", "4")  # code i is action labels[i]
    dropped = {model.column_of(i, width) for i in range(N) if i % 13 == 5}
    assert dropped == {int(model.x_of(i, width)) for i in range(N) if i % 13 == 5}
    assert set(cols.markers["dropped"].tolist()) == dropped
    assert cols.markers["truncated"].tolist() == [width - 1]
    assert cols.markers["terminated"].size == cols.markers["recovered"].size == 0
    assert set(cols.markers) == set(MARKERS)


@pytest.mark.parametrize("n, width", [(N, 700), (40, 700), (700, 700)])
def test_a_click_seeks_to_the_step_under_it(n, width):
    from framestore import StepTrack

    model = TimelineModel()
    model.set_track(1, StepTrack(tuple(range(n)), (0.0,) * n, (None,) * n, *([(False,) * n] * 4)))
    for step in range(n):
        x = model.x_of(step, width)  # where the cursor of this step is drawn
        hit = model.step_at(x, width)  # a click on the cursor: that step, or its column
        if n <= width:
            assert hit == step
        else:
            assert model.column_of(hit, width) == model.column_of(step, width) == int(x)
    assert model.step_at(-30, width) == 0 and model.step_at(width + 30, width) == n - 1
    seen = [model.step_at(x, width) for x in np.arange(0, width, 0.05)]
    assert seen == sorted(seen) and set(seen) == set(range(n))  # a drag passes every step


def test_live_episode_extends_and_invalidates_the_cache(long_episode):
    path, eid, rewards = long_episode
    with FrameStore.open(path, readonly=True) as st:
        model = TimelineModel()
        model.set_track(eid, st.step_track(eid, 0, 1000))
        before = model.columns(300)
        changes = []
        model.changed.connect(lambda: changes.append(model.length))
        model.extend(eid, st.step_track(eid, 900, 2000))  # overlapping rows are skipped
        model.extend(eid + 1, st.step_track(eid, 2000))  # another episode: ignored
        model.extend(eid, st.step_track(eid, 2000))
    assert changes == [2000, N] and model.length == N
    assert model.columns(300) is not before
    np.testing.assert_array_equal(model.rewards, rewards)
    assert model.returns[-1] == pytest.approx(rewards.sum())


def test_hover_text_is_readable_and_exact(store_path, assault_frames):
    with FrameStore.open(store_path) as st:
        space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
        with st.recorder("CarRacing-v3", action_space=space) as rec:
            eid = rec.begin_episode(seed=0)
            rec.record_step(assault_frames[0])
            rec.record_step(
                assault_frames[1],
                action=np.array([0.539185, -0.10000000000000009, 1.0]),
                reward=-0.10000000000000009,
            )
            rec.end_episode()
        model = TimelineModel()
        model.set_track(eid, st.step_track(eid))
        steps = st.read_steps(eid)
    assert model.action_kind == "continuous" and model.columns(50).actions.shape == (50, 3)
    text = model.describe(1)
    assert "reward -0.1" in text and "action [0.5392, -0.1, 1]" in text
    assert "exact reward -0.10000000000000009" in text
    fields = {f.name: f for f in step_fields(steps[1])}
    assert fields["reward"].shown == "-0.1" and fields["reward"].exact == "-0.10000000000000009"
    assert fields["action"].shown == "[0.5392, -0.1, 1]"
    exact = json.loads(step_json(steps[1]))
    assert exact["reward"] == -0.10000000000000009 and exact["action"][0] == 0.539185


def test_recovered_rows_are_marked(long_episode):
    path, eid, _ = long_episode
    with FrameStore.open(path) as st:
        (step, loc), *_ = st.frame_locations(eid, 1, 2)
        # the rows recover writes for frames that had none (what it does after a crash)
        with st.transaction() as cat:
            cat.recovery.insert_recovered_steps([(eid, N, loc[0], loc[1], loc[2], "210x160x3")])
        model = TimelineModel()
        model.set_track(eid, st.step_track(eid))
    assert model.length == N + 1 and model.flags["recovered"].tolist() == [False] * N + [True]
    assert "reward unknown" in model.describe(N) and "recovered" in model.describe(N)
    assert model.columns(100).markers["recovered"].tolist() == [99]


def test_step_panel_shows_a_long_info_whole_one_key_per_line():
    from framestore import StepInfo

    info = {"lives": 3, "episode_frame_number": 600, "frame_number": 600, "x": [0.123456] * 3}
    step = StepInfo(
        episode_id=1, step=150, action=0, reward=0.0, terminated=False, truncated=False,
        info=info, wall_time=None, frame=None, frame_shape=None,
    )  # fmt: skip
    lines = step_panel_text(step).splitlines()
    assert lines[0] == "step        150" and lines[5] == "info"
    assert lines[6:] == [
        "  lives: 3",
        "  episode_frame_number: 600",
        "  frame_number: 600",
        "  x: [0.1235, 0.1235, 0.1235]",
    ]
