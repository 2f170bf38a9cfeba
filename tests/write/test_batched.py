"""The batched producer path (``Recorder.record_steps``) and the chunk layout of
interleaved episodes, on real Assault frames and real segment files.

- frames of N interleaved episodes still make chunks of consecutive steps of ONE
  episode (one open chunk per stream), and a sequential read of an episode decodes each
  of its chunks once;
- the durable watermark is right when chunks are appended out of sequence order;
- everything is validated before anything is queued; policies apply per frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import WRITERS

from framestore import FrameStore, InvalidFrame, InvalidInput
from framestore.disk.reader import SegmentReader
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.settings import resolve
from framestore.write.service import FrameStorageService

ENV_ID = "ALE/Assault-v5"


def chunks_of(root) -> list[tuple[int, int, tuple[int, ...]]]:
    """``(segment, stream key, frame keys)`` of every chunk in file order."""
    out = []
    for sid in list_segment_ids(root):
        scan = scan_segment(segment_path(root, sid), sid)
        out += [(sid, h.stream_key, h.frame_keys) for _off, h in sorted(scan.chunks.items())]
    return out


def test_interleaved_streams_make_chunks_of_one_episode_each(tmp_path, assault_frames):
    frames = assault_frames[:96]
    with FrameStorageService(tmp_path, chunk_frames=8, queue_frames=512) as svc:
        refs = []
        for k in range(24):  # 4 streams, one frame each per round, like a vector env
            refs += svc.put_many(frames[4 * k : 4 * k + 4], [(s, k) for s in range(1, 5)])
        svc.flush()
    chunks = chunks_of(tmp_path)
    assert {len(keys) for _s, _k, keys in chunks} == {8}  # full chunks, none cut short
    for stream in range(1, 5):
        mine = [keys for _s, key, keys in chunks if key == stream]
        assert [k for keys in mine for k in keys] == list(range(24))  # in step order
    with SegmentReader(tmp_path) as reader:
        for ref, want in zip(refs, frames, strict=True):
            assert np.array_equal(reader.read(ref, expect_key=ref.key), want)


def test_watermark_waits_for_every_earlier_frame(tmp_path, assault_frames):
    """Stream 2's chunk fills (and is written) while stream 1's is still open: a wait
    on stream 2's frames is a wait on the watermark, which must not pass stream 1's
    unwritten frame; the cut it asks for writes it, and both resolve."""
    with FrameStorageService(tmp_path, chunk_frames=4, queue_frames=64, max_latency=30) as svc:
        first = svc.put_many([assault_frames[0]], [(1, 0)])[0]
        later = svc.put_many(assault_frames[1:5], [(2, k) for k in range(4)])
        svc.wait_written([later[-1]], timeout=10)
        assert first.written and all(r.written for r in later)
        assert first.location[0:2] != later[0].location[0:2]  # separate chunks


def test_open_chunks_stay_within_half_the_queue(tmp_path, assault_frames):
    """64 streams, chunk_frames 16, a 64-frame queue: open chunks may hold 32 frames, so
    the biggest are closed early and the producer never deadlocks on a full queue."""
    with FrameStorageService(
        tmp_path, chunk_frames=16, queue_frames=64, max_latency=30, block_timeout=10
    ) as svc:
        for k in range(6):
            svc.put_many(assault_frames[:64], [(s, k) for s in range(1, 65)])
        svc.flush()
        assert svc.metrics().frames_written == 6 * 64
    assert max(len(keys) for _s, _k, keys in chunks_of(tmp_path)) <= 16


def record_interleaved(path, frames, episodes=16, steps=20, **kwargs):
    """``episodes`` episodes recorded one row each per batch; episode e step k holds
    ``frames[e * steps + k]``."""
    with FrameStore.open(path) as store, store.recorder(ENV_ID, **kwargs) as rec:
        ids = [rec.open_episode(seed=e, sub_env=e) for e in range(episodes)]
        for k in range(steps):
            block = np.stack([frames[e * steps + k] for e in range(episodes)])
            rec.record_steps(
                ids,
                block,
                actions=None if k == 0 else np.full(episodes, k % 7),
                rewards=np.arange(episodes, dtype=np.float32),
                terminated=[k == steps - 1] * episodes,
                infos=[{"lives": 4, "k": k}] * episodes,
            )
        for eid in ids:
            rec.close_episode(eid)
    return ids


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_record_steps_round_trips_and_reads_one_chunk_at_a_time(writer, tmp_path, assault_frames):
    ids = record_interleaved(tmp_path / "s", assault_frames, episodes=12, steps=20)
    with FrameStore.open(tmp_path / "s", readonly=True) as store:
        for e, eid in enumerate(ids):
            ep = store.episode(eid)
            assert (ep.steps, ep.frames, ep.sub_env, ep.seed, ep.terminated) == (
                20, 20, e, e, True,
            )  # fmt: skip
            assert ep.total_reward == 20.0 * e
            rows = store.read_steps(eid)
            assert [r.action for r in rows] == [None] + [k % 7 for k in range(1, 20)]
            assert rows[5].info == {"lives": 4, "k": 5}
            before = store.reader.chunks_decoded
            got = store.read_frames(eid)
            chunks = len(store.catalog.episodes.chunks(eid)[1])
            assert store.reader.chunks_decoded - before == chunks  # one decode per chunk
            assert all(np.array_equal(g, assault_frames[e * 20 + k]) for k, g in enumerate(got))
    # Chunks of one episode each, at most the preset's length: ceil(20 / chunk_frames)
    # per episode, or more when the sink's commit interval cut an open chunk on a
    # loaded machine (cuts by commits go with issue 19's chunk-granular write path).
    per = resolve(ENV_ID).settings.chunk_frames
    chunks = chunks_of(tmp_path / "s")
    assert len(chunks) >= 12 * -(-20 // per)
    assert all(0 < len(keys) <= per for _sid, _stream, keys in chunks)
    assert sorted(k for _sid, _stream, keys in chunks for k in keys) == sorted(list(range(20)) * 12)


@pytest.mark.parametrize(
    "bad",
    [
        dict(frames=np.zeros((3, 10, 10, 3), dtype=np.float32)),
        dict(frames=np.zeros((2, 10, 10, 3), dtype=np.uint8)),  # 2 frames for 3 rows
        dict(actions=[1, 2, 99]),  # not in Discrete(7)
        dict(rewards=[0.0, float("nan"), 1.0]),
        dict(terminated=[True]),
        dict(infos=[{}, {"x": object()}, {}]),
        dict(episode_ids=[1, 2, 999]),  # not open
    ],
    ids=["dtype", "count", "action", "reward", "flags", "info", "episode"],
)
def test_a_bad_batch_records_nothing(tmp_path, assault_frames, bad):
    import gymnasium as gym

    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, action_space=gym.spaces.Discrete(7)) as rec:
            ids = [rec.open_episode(seed=i) for i in range(3)]
            args = dict(episode_ids=ids, frames=np.stack(assault_frames[:3]))
            args.update(bad)
            with pytest.raises((InvalidInput, InvalidFrame)):
                rec.record_steps(**args)
            assert rec.steps_recorded == 0
            assert rec.metrics().frames.frames_in == 0
        assert all(store.episode(i).steps == 0 for i in ids)


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_drop_policy_drops_per_frame_and_keeps_the_rows(writer, tmp_path, assault_frames):
    overrides = {"policy": "drop", "queue_frames": 8, "chunk_frames": 2, "codec": "png"}
    with FrameStore.open(tmp_path / "s") as store:
        with store.recorder(ENV_ID, overrides=overrides) as rec:
            ids = [rec.open_episode(seed=i) for i in range(4)]
            for k in range(40):
                rec.record_steps(ids, assault_frames[4 * k : 4 * k + 4])
            dropped = rec.metrics().frames.frames_dropped
        eps = [store.episode(i) for i in ids]
    assert dropped > 0  # PNG at 4 frames a call outruns an 8-frame queue
    assert sum(e.frames_dropped for e in eps) == dropped
    assert all(e.steps == 40 for e in eps)
    assert sum(e.frames for e in eps) == 160 - dropped


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_open_episodes_end_as_interrupted_on_close(writer, tmp_path, assault_frames):
    with FrameStore.open(tmp_path / "s") as store:
        rec = store.recorder(ENV_ID)
        ids = [rec.open_episode() for _ in range(3)]
        rec.record_steps(ids, assault_frames[:3])
        rec.close_episode(ids[1])
        assert rec.open_episodes == [ids[0], ids[2]]
        rec.close()
        assert [store.episode(i).status for i in ids] == ["interrupted", "complete", "interrupted"]


@pytest.mark.parametrize("writer", WRITERS, indirect=True)
def test_record_steps_with_named_streams_and_observations(tmp_path, assault_frames, writer):
    """``record_steps`` takes ``{stream: frame}`` rows and ``observations=``: each
    episode's streams start with its first row (two rows of one episode in one batch
    share the stream), a frame equal to its row's render frame is stored once, a bad
    row refuses the whole batch before anything is queued."""
    path = tmp_path / "s.store"
    wrist = [f[::2, ::2].copy() for f in assault_frames[:20]]
    with FrameStore.open(path) as store:
        with store.recorder(ENV_ID, overrides={"chunk_frames": 4}) as rec:
            a, b = rec.open_episode(1, sub_env=0), rec.open_episode(2, sub_env=1, defer=True)
            with pytest.raises(InvalidInput, match="stream name"):
                rec.record_steps([a, b], [{"render": assault_frames[0]}, {"bad name": wrist[0]}])
            with pytest.raises(InvalidInput, match="2 observations for 3 rows"):
                rec.record_steps([a, b, a], assault_frames[:3], observations=[1.0, 2.0])
            for k in range(0, 10, 2):
                rec.record_steps(
                    [a, b, a],
                    [{"render": assault_frames[k], "wrist": wrist[k]}, assault_frames[10 + k],
                     {"render": assault_frames[k + 1], "wrist": wrist[k + 1]}],
                    observations=[np.float32([k, 0]), assault_frames[10 + k], None],
                )  # fmt: skip
            rec.close_episode(a)
            rec.close_episode(b)
    with FrameStore.open(path, readonly=True) as store:
        assert [e.id for e in store.episodes()] == [a, b]  # b's refused rows left no trace
        assert store.episode(a).streams == ("render", "wrist")
        assert store.episode(b).streams == ("render", "observation")
        assert store.streams(b)[1].shared_with == 0
        assert list(store.iter_frames(a, stream="wrist", copy=True)) and all(
            np.array_equal(x, y)
            for x, y in zip(store.iter_frames(a, stream="wrist"), wrist[:10], strict=True)
        )
        assert all(
            np.array_equal(x, y)
            for x, y in zip(store.iter_frames(a), assault_frames[:10], strict=True)
        )
        obs_a = [o for _s, o in store.iter_observations(a)]
        assert [None if o is None else o.tolist() for o in obs_a] == [
            x for k in range(0, 10, 2) for x in ([k, 0], None)
        ]
        obs_b = [o for _s, o in store.iter_observations(b)]
        assert all(
            np.array_equal(o, f) for o, f in zip(obs_b, assault_frames[10:20:2], strict=True)
        )
    with FrameStore.open(path, readonly=True) as store:
        assert store.read_frame(a, 3, stream="wrist").shape == (105, 80, 3)
