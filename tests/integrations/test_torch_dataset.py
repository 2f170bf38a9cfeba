"""framestore.torch: the PyTorch datasets read every frame bit-exactly whatever the number
of DataLoader workers, from fresh, merged and published stores; windows pad at episode
boundaries as LeRobot does; transitions pair a frame with the action taken there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the torch extra (CI installs torch==2.13.0, CPU)

from conftest import SMALL_SEGMENTS, record_episodes  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from framestore import FrameStore  # noqa: E402
from framestore.errors import InvalidInput  # noqa: E402
from framestore.torch import (  # noqa: E402
    IterableStepDataset,
    StepDataset,
    TransitionDataset,
    collate_steps,
)

#: PyTorch warns when a DataLoader starts more workers than the machine has cores: the
#: 4-worker tests do so on purpose (shares of the items, not speed, are what they check).
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

#: zstd chunks of 7 frames: chunk boundaries fall inside episodes and across worker shares.
ZSTD_SMALL = {"codec": "zstd", "chunk_frames": 7, "segment_bytes": 1 << 20}


def stored(paths) -> dict[tuple[int, int, int], np.ndarray]:
    """``(store index, episode, step) -> frame`` for every stored frame, by iter_frames."""
    out = {}
    for i, path in enumerate(paths):
        with FrameStore.open(path, readonly=True) as st:
            for ep in st.episodes():
                for step, frame in st.iter_steps_frames(ep.id):
                    out[(i, ep.id, step)] = frame
    return out


def loaded(dataset, **loader) -> dict[tuple[int, int, int], np.ndarray]:
    """Every item's frame through a DataLoader, keyed like ``stored``; no item twice."""
    out = {}
    for batch in DataLoader(dataset, collate_fn=collate_steps, **loader):
        for s, e, t, frame in zip(
            batch["store"], batch["episode"], batch["step"], batch["render"], strict=True
        ):
            key = (int(s), int(e), int(t))
            assert key not in out, f"{key} twice"
            out[key] = frame.numpy()
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, frame in want.items():
        np.testing.assert_array_equal(got[key], frame, err_msg=str(key))


@pytest.fixture
def two_stores(tmp_path, assault_frames):
    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_episodes(a, assault_frames, episodes=3, steps=23, overrides=ZSTD_SMALL)
    record_episodes(b, assault_frames[70:], episodes=2, steps=9, overrides=SMALL_SEGMENTS)
    return [a, b]


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_iterable_pass_is_bit_exact_with_any_number_of_workers(two_stores, workers):
    want = stored(two_stores)
    assert len(want) == 3 * 23 + 2 * 9
    with IterableStepDataset(two_stores) as ds:
        assert len(ds) == len(want)
        assert_same(loaded(ds, batch_size=16, num_workers=workers), want)


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_map_style_shuffled_epoch_is_bit_exact_with_any_number_of_workers(two_stores, workers):
    want = stored(two_stores)
    with StepDataset(two_stores, cache_bytes=1 << 20) as ds:  # a small cache: chunks evicted
        got = loaded(ds, batch_size=8, shuffle=True, num_workers=workers)
    assert_same(got, want)


def test_iterable_batches_gathered_whole_are_bit_exact(two_stores):
    want = stored(two_stores)
    with IterableStepDataset(two_stores, batch_size=7, shuffle_buffer=9, seed=1) as ds:
        sizes = [len(b["step"]) for b in DataLoader(ds, batch_size=None, num_workers=2)]
        got = loaded(ds, batch_size=None, num_workers=2)
    assert max(sizes) == 7 and sum(sizes) == len(want)
    assert_same(got, want)


def test_map_style_batches_work_with_pytorchs_default_collate(two_stores):
    """StepDataset gathers a DataLoader's batch whole (__getitems__); the default
    collate function still sees a list of items and gives the same batch."""
    window = {"render": [-1, 0], "action": [0, 1]}
    with StepDataset(two_stores, window=window) as ds:
        ours = next(iter(DataLoader(ds, batch_size=5, collate_fn=collate_steps)))
        theirs = next(iter(DataLoader(ds, batch_size=5)))
        single = [ds[i] for i in range(5)]
    assert ours.keys() == theirs.keys() == single[0].keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
        assert torch.equal(ours[key], torch.stack([item[key] for item in single])), key


def test_shuffle_buffer_keeps_every_item_once_in_another_order(two_stores):
    want = stored(two_stores)
    with IterableStepDataset(two_stores, shuffle_buffer=20, seed=3) as ds:
        first = [(int(s), int(e), int(t)) for s, e, t in _keys(ds)]
        second = [(int(s), int(e), int(t)) for s, e, t in _keys(ds)]
    assert sorted(first) == sorted(want) and first != sorted(first)
    assert first != second  # the next epoch draws again


def _keys(ds):
    for item in ds:
        yield item["store"], item["episode"], item["step"]


def test_items_hold_the_row_values_and_ids(tmp_path, assault_frames):
    path = tmp_path / "r.store"
    record_episodes(path, assault_frames, episodes=2, steps=6, reward=lambda i: i / 2)
    with StepDataset(path) as ds:
        item = ds[7]  # episode 2, step 1
        assert int(item["episode"]) == 2 and int(item["step"]) == 1
        assert int(item["store"]) == 0 and ds.locations == [str(path)]
        assert item["render"].dtype == torch.uint8 and item["render"].shape == (210, 160, 3)
        assert int(item["action"]) == 1 and float(item["reward"]) == 0.5
        assert not bool(item["terminated"]) and bool(ds[11]["terminated"])
        assert int(ds[-1]["step"]) == 5
        with pytest.raises(IndexError):
            ds[12]
    with StepDataset(path, frame_dtype="float32", channels_first=True, fields=()) as ds:
        item = ds[7]
        assert set(item) == {"render", "episode", "step", "store"}
        assert item["render"].shape == (3, 210, 160) and item["render"].dtype == torch.float32
        want = torch.from_numpy(assault_frames[7]).permute(2, 0, 1).float() / 255
        assert torch.equal(item["render"], want)


def test_windows_pad_at_episode_boundaries(tmp_path, assault_frames):
    path = tmp_path / "w.store"
    record_episodes(path, assault_frames, episodes=2, steps=5, overrides=ZSTD_SMALL)
    window = {"render": [-3, -2, -1, 0], "action": [0, 1], "reward": [-1, 0, 1]}
    with StepDataset(path, window=window) as ds:
        first = ds[5]  # episode 2, step 0: the reset row
        assert first["render"].shape == (4, 210, 160, 3)
        assert first["render_is_pad"].tolist() == [True, True, True, False]
        for k in range(4):  # padded with the episode's first frame, never the last episode's
            np.testing.assert_array_equal(first["render"][k].numpy(), assault_frames[5])
        assert first["action"].tolist() == [0, 1]
        assert first["action_is_pad"].tolist() == [True, False]  # the reset has no action
        assert first["reward_is_pad"].tolist() == [True, False, False]
        third = ds[7]  # step 2
        assert third["render_is_pad"].tolist() == [True, False, False, False]
        frames = [assault_frames[5], assault_frames[5], assault_frames[6], assault_frames[7]]
        np.testing.assert_array_equal(third["render"].numpy(), np.stack(frames))
        last = ds[9]  # step 4, the episode's last
        assert last["action"].tolist() == [4, 4] and last["action_is_pad"].tolist() == [False, True]
        assert last["reward_is_pad"].tolist() == [False, False, True]
        batch = collate_steps([ds[i] for i in range(10)])
        assert batch["render"].shape == (10, 4, 210, 160, 3)
        assert batch["render_is_pad"].shape == (10, 4)


def test_transitions_pair_a_frame_with_the_action_taken_there(tmp_path, assault_frames):
    path = tmp_path / "t.store"
    record_episodes(path, assault_frames, episodes=2, steps=6, reward=lambda i: float(i))
    with TransitionDataset(path) as ds:
        assert len(ds) == 2 * 5  # the last frame of an episode has no next one
        t = ds[6]  # episode 2: step 1 -> 2
        assert (int(t["episode"]), int(t["step"])) == (2, 1)
        np.testing.assert_array_equal(t["obs"].numpy(), assault_frames[7])
        np.testing.assert_array_equal(t["next_obs"].numpy(), assault_frames[8])
        assert int(t["action"]) == 2 and float(t["reward"]) == 2.0
        assert bool(ds[9]["terminated"]) and not bool(ds[8]["terminated"])
    with TransitionDataset(path, frame_stack=4) as ds:
        t = ds[5]  # episode 2: step 0 -> 1
        assert t["obs"].shape == (4, 210, 160, 3)
        assert t["obs_is_pad"].tolist() == [True, True, True, False]
        assert t["next_obs_is_pad"].tolist() == [True, True, False, False]
        np.testing.assert_array_equal(t["next_obs"][3].numpy(), assault_frames[7])
        np.testing.assert_array_equal(t["next_obs"][1].numpy(), assault_frames[6])


def test_a_merged_store_reads_bit_exact(tmp_path, two_stores):
    from tools.merge import merge

    merged = tmp_path / "m.store"
    merge(merged, two_stores)  # b's episodes are re-keyed; their chunks keep b's ids
    want = stored([merged])
    assert len(want) == 3 * 23 + 2 * 9
    with IterableStepDataset(merged) as ds:
        assert_same(loaded(ds, batch_size=32, num_workers=2), want)
    with StepDataset(FrameStore.open(merged, readonly=True)) as ds:  # reopened by location
        assert_same(loaded(ds, batch_size=32, shuffle=True), want)


def test_a_published_store_reads_bit_exact(tmp_path, two_stores, s3):
    from framestore.maintenance.publish import publish

    want = stored(two_stores[:1])
    url = f"s3://{s3.bucket()}/runs"
    with FrameStore.open(two_stores[0], readonly=True) as st:
        publish(st, tmp_path / "pub")
        publish(st, url, storage_options=s3.storage_options)
    with IterableStepDataset(tmp_path / "pub") as ds:
        assert_same(loaded(ds, batch_size=16, num_workers=2), want)
    with StepDataset(url, storage_options=s3.storage_options) as ds:
        assert_same(loaded(ds, batch_size=16, shuffle=True, num_workers=2), want)


def test_bad_arguments_are_one_clear_error(two_stores):
    with pytest.raises(InvalidInput, match="no stream 'observation'.*its streams: render"):
        StepDataset(two_stores, streams=["render", "observation"])
    with pytest.raises(InvalidInput, match="no stream 'wrist'"):
        TransitionDataset(two_stores, stream="wrist")
    with pytest.raises(InvalidInput, match="bad stream name"):
        StepDataset(two_stores, streams=["no spaces"])
    with pytest.raises(InvalidInput, match="window names 'obs'"):
        StepDataset(two_stores, window={"obs": [0]})
    with pytest.raises(InvalidInput, match="integer steps"):
        StepDataset(two_stores, window={"render": [0.5]})
    with pytest.raises(InvalidInput, match="unknown field 'value'"):
        StepDataset(two_stores, fields=["value"])
    with pytest.raises(InvalidInput, match="frame_dtype"):
        StepDataset(two_stores, frame_dtype="float16")
    with pytest.raises(InvalidInput, match="no episode 9"):
        StepDataset(two_stores[0], episodes=[9])


def test_a_vector_recorded_store_reads_bit_exact(tmp_path):
    from tools.record import record

    path = tmp_path / "v.store"
    record(str(path), "CartPole-v1", episodes=3, envs=2, max_steps=6, seed=2)
    want = stored([path])
    with IterableStepDataset(path) as ds:
        assert_same(loaded(ds, batch_size=8, num_workers=2), want)


def test_rows_rebuilt_by_recover_read_with_their_values(tmp_path, assault_frames):
    """recover rebuilds lost rows from segments: from format 3 with their metadata (the
    chunk's steps block), so the dataset reads them exactly as recorded."""
    import sqlite3
    from contextlib import closing

    from tools.recover import recover

    path = tmp_path / "r.store"
    ids = record_episodes(path, assault_frames, episodes=2, steps=6, overrides=SMALL_SEGMENTS)
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("DELETE FROM steps WHERE episode_id = ? AND step >= 3", (ids[1],))
    assert not recover(path).data_lost
    want = stored([path])
    assert len(want) == 12
    with StepDataset(path, window={"action": [0]}) as ds:
        assert_same(loaded(ds, batch_size=5, shuffle=True, num_workers=2), want)
        item = ds[6 + 4]  # episode 2, step 4: rebuilt
        assert float(item["reward"]) == 1.0 and item["action_is_pad"].tolist() == [False]
        assert item["action"].tolist() == [4]


def test_rows_rebuilt_without_metadata_read_with_unknown_values_marked(tmp_path):
    """Rows rebuilt from a format-2 segment (no steps block) have a frame and no action or
    reward: the frames read bit-exact, the reward is NaN and a window marks the missing
    action as padding."""
    import shutil
    import sqlite3
    from contextlib import closing

    from tools.recover import recover

    path = tmp_path / "v2.store"
    shutil.copytree(Path(__file__).parent.parent / "fixtures" / "store-v0.2.0", path)
    with FrameStore.open(path, readonly=True) as st:
        ep = next(e for e in st.episodes() if e.steps >= 6)
        framed = [s.step for s in st.read_steps(ep.id) if s.frame is not None and s.step >= 3]
    with closing(sqlite3.connect(path / "framestore.db")) as conn, conn:
        conn.execute("DELETE FROM steps WHERE episode_id = ? AND step >= 3", (ep.id,))
    assert recover(path).data_lost  # "rebuilt with their frame only"
    with FrameStore.open(path, readonly=True) as st:
        rebuilt = {s.step: s for s in st.read_steps(ep.id) if s.step >= 3}
    assert sorted(rebuilt) == framed and all(s.action is None for s in rebuilt.values())
    with StepDataset(path, episodes=[ep.id], window={"action": [0]}) as ds:
        rows = {int(ds[i]["step"]): ds[i] for i in range(len(ds))}
        for step in framed:
            assert torch.isnan(rows[step]["reward"])
            assert rows[step]["action_is_pad"].tolist() == [True]


def test_named_stream_items_run_no_sqlite_statement(tmp_path, assault_frames):
    """A StepDataset keeps every episode's pointers of every stream asked for in memory:
    once each episode's stream info is known, random items of a named stream (and of
    render) run no SQLite statement at all (counted with SQLite's trace), bit-exact."""
    path = tmp_path / "o.store"
    small = [f[::5, ::5, 0].copy() for f in assault_frames[:60]]
    with FrameStore.open(path) as st:
        with st.recorder("ALE/Assault-v5", overrides=ZSTD_SMALL) as rec:
            for e in range(3):
                rec.begin_episode(seed=e)
                for i in range(20):
                    frames = {
                        "render": assault_frames[e * 20 + i],
                        "observation": small[e * 20 + i],
                    }
                    rec.record_step(frames=frames)
                rec.end_episode()
    with StepDataset(path, streams=("render", "observation")) as ds:
        assert len(ds) == 60
        for i in (0, 20, 40):  # each episode's stream info, read once per process
            ds[i]
        seen: list[str] = []
        ds.stores.get(0).catalog.connection._database.conn.set_trace_callback(seen.append)
        for i in np.random.default_rng(0).permutation(60):
            item = ds[int(i)]
            k = int(item["episode"] - 1) * 20 + int(item["step"])  # episodes 1..3
            np.testing.assert_array_equal(item["observation"].numpy(), small[k])
            np.testing.assert_array_equal(item["render"].numpy(), assault_frames[k])
        assert seen == []
        ds.stores.get(0).catalog.connection._database.conn.set_trace_callback(None)
