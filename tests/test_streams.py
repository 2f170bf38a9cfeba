"""Named frame streams per step (issue 20 item 1): ``record_step(frames={...})``, each
stream in its own chunks, a frame equal to render stored once, read back bit-exact by
stream, and kept by verify, gc and recover. Real Assault frames and a real frame stack
(ALE grayscale observations through gymnasium's ``FrameStackObservation``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from framestore import FrameStore, InvalidFrame, InvalidInput, StreamNotFound
from framestore.envs import make_env
from framestore.scan import scan_segment
from framestore.segments import list_segment_ids, segment_path

RAW = {"codec": "raw", "chunk_frames": 8}


@pytest.fixture(scope="module")
def stacked_run():
    """Real Assault steps: the rendered frame and a 4-frame stack of 84x84 grayscale
    observations (``FrameStackObservation`` over ALE's grayscale observations, resized
    with Pillow: opencv is not installed here)."""
    import gymnasium as gym
    from gymnasium.wrappers import FrameStackObservation, TransformObservation
    from PIL import Image

    env = make_env("ALE/Assault-v5", obs_type="grayscale")

    def small(o):
        return np.asarray(Image.fromarray(o).resize((84, 84), Image.BILINEAR), dtype=np.uint8)

    space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    env = FrameStackObservation(TransformObservation(env, small, space), 4)
    try:
        obs, _ = env.reset(seed=3)
        env.action_space.seed(3)
        renders, stacks = [env.render()], [obs]
        for _ in range(39):
            obs, *_ = env.step(env.action_space.sample())
            renders.append(env.render())
            stacks.append(obs)
    finally:
        env.close()
    assert stacks[0].shape == (4, 84, 84) and stacks[0].dtype == np.uint8
    return renders, stacks


def _record(path, renders, stacks, *, overrides=RAW, same=True, episodes=1):
    """Record ``episodes`` episodes of the same steps in one run (one segment); returns
    the id of the first one (the others follow it)."""
    with FrameStore.open(path) as store:
        with store.recorder("ALE/Assault-v5", overrides=overrides) as rec:
            ids = []
            for _ in range(episodes):
                ids.append(rec.begin_episode(seed=3))
                for i, (f, o) in enumerate(zip(renders, stacks, strict=True)):
                    frames = {"render": f, "observation": o}
                    if same:
                        frames["pixels"] = f.copy()  # equal to render: stored once
                    rec.record_step(frames=frames, action=i % 7, reward=1.0)
                rec.end_episode()
    return ids[0] if episodes == 1 else ids


def _check_reads(path, eid, renders, stacks, same=True) -> None:
    with FrameStore.open(path, readonly=True) as store:
        ep = store.episode(eid)
        assert ep.streams == (("render", "observation", "pixels") if same else
                              ("render", "observation"))  # fmt: skip
        got = list(store.iter_frames(eid, stream="observation"))
        assert len(got) == len(stacks)
        assert all(np.array_equal(a, b) for a, b in zip(got, stacks, strict=True))
        assert all(
            np.array_equal(a, b) for a, b in zip(store.iter_frames(eid), renders, strict=True)
        )
        for i in (0, 17, len(stacks) - 1):
            assert np.array_equal(store.read_frame(eid, i, stream="observation"), stacks[i])
            if same:
                assert np.array_equal(store.read_frame(eid, i, stream="pixels"), renders[i])


def test_streams_round_trip_bit_exact(tmp_path, stacked_run):
    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    eid = _record(path, renders, stacks)
    _check_reads(path, eid, renders, stacks)
    with FrameStore.open(path, readonly=True) as store:
        info = {s.name: s for s in store.streams(eid)}
        assert info["render"].index == 0 and info["render"].frames == len(renders)
        assert info["observation"].shape == (4, 84, 84)
        assert info["observation"].frames == len(stacks)
        assert info["pixels"].shared_with == 0
        with pytest.raises(StreamNotFound, match="no stream 'wrist'"):
            store.read_frame(eid, 0, stream="wrist")
    # each stream has its own chunks: the frame stack's carry stream index 1, none 2
    indexes = set()
    for sid in list_segment_ids(path):
        for _off, header in scan_segment(segment_path(path, sid), sid).chunks.items():
            if header.count:
                indexes.add(header.stream_index)
                if header.stream_index:
                    assert header.steps_length == 0  # steps blocks are render's only
    assert indexes == {0, 1}


def test_equal_observation_adds_no_frame_bytes(tmp_path, stacked_run):
    """An observation equal to the render frame is stored once: the segments hold the
    same chunk bytes as a recording of render alone."""
    renders, _ = stacked_run

    def chunk_bytes(path, with_copy: bool) -> int:
        with FrameStore.open(path) as store:
            with store.recorder("ALE/Assault-v5", overrides=RAW) as rec:
                rec.begin_episode(seed=3)
                for f in renders:
                    if with_copy:
                        rec.record_step(frames={"render": f, "observation": f.copy()})
                    else:
                        rec.record_step(f)
                rec.end_episode()
        frame_bytes = chunks = steps_bytes = 0
        for sid in list_segment_ids(path):
            for _o, h in scan_segment(segment_path(path, sid), sid).chunks.items():
                frame_bytes += sum(h.lengths)
                chunks += bool(h.count)
                steps_bytes += h.steps_length
        return frame_bytes, chunks, steps_bytes

    alone = chunk_bytes(tmp_path / "a.store", False)
    both = chunk_bytes(tmp_path / "b.store", True)
    assert both[:2] == alone[:2]  # the same frame bytes in the same chunks
    # the steps blocks say which steps share their frame: a few bytes per chunk
    assert 0 < both[2] - alone[2] <= 16 * both[1]
    with FrameStore.open(tmp_path / "b.store", readonly=True) as store:
        eid = store.episodes()[0].id
        got = list(store.iter_frames(eid, stream="observation"))
        assert all(np.array_equal(a, b) for a, b in zip(got, renders, strict=True))


def test_verify_gc_recover_keep_streams(tmp_path, stacked_run):
    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    first, doomed, keep = _record(path, renders, stacks, episodes=3)
    assert run_cli("verify", path).exit_code == 0
    assert run_cli("rm", path, "--episode", doomed).exit_code == 0
    result = run_cli("gc", path, "--threshold", "1", "--json")
    assert result.exit_code == 0, result.output
    assert '"steps_repointed": 0' not in result.output  # the kept chunks moved
    assert run_cli("verify", path).exit_code == 0
    for eid in (first, keep):
        _check_reads(path, eid, renders, stacks)
    # the catalogue deleted: recover rebuilds streams and their pointers from segments
    for name in ("framestore.db", "framestore.db-wal", "framestore.db-shm"):
        (path / name).unlink(missing_ok=True)
    result = run_cli("recover", path)
    assert result.exit_code in (0, 1), result.output
    for eid in (first, keep):
        _check_reads(path, eid, renders, stacks)
    assert run_cli("verify", path).exit_code == 0


def test_bad_stream_input_records_nothing(tmp_path, stacked_run):
    renders, stacks = stacked_run
    with FrameStore.open(tmp_path / "s.store") as store:
        with store.recorder("ALE/Assault-v5", overrides=RAW) as rec:
            eid = rec.begin_episode()
            for frames, err, text in [
                ({"render": renders[0], "bad name!": stacks[0]}, InvalidInput, "stream name"),
                ({"render": renders[0], "": stacks[0]}, InvalidInput, "stream name"),
                ({"render": renders[0], "obs": stacks[0].astype(np.float32)}, InvalidFrame,
                 "stream 'obs'"),
                ({"obs": np.zeros(5, np.uint8)}, InvalidFrame, "2 or more dimensions"),
                ([renders[0]], InvalidInput, "dict of stream name"),
            ]:  # fmt: skip
                with pytest.raises(err, match=text):
                    rec.record_step(frames=frames)
            with pytest.raises(InvalidInput, match="not both"):
                rec.record_step(renders[0], frames={"obs": stacks[0]})
            rec.record_step(frames={"render": renders[0]})
            rec.end_episode()
        ep = store.episode(eid)
        assert ep.steps == 1 and ep.streams == ("render",)


def test_cli_unknown_stream_is_one_line(tmp_path, stacked_run):
    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    eid = _record(path, renders[:5], stacks[:5], same=False)
    with FrameStore.open(path, readonly=True) as store, pytest.raises(StreamNotFound):
        store.read_frame(eid, 0, stream="wrist")
    result = run_cli("info", path)
    assert result.exit_code == 0


def test_process_writer_refuses_streams(tmp_path, stacked_run):
    renders, stacks = stacked_run
    over = {**RAW, "writer": "process", "writer_start": "fork"}
    with FrameStore.open(tmp_path / "s.store") as store:
        with store.recorder("ALE/Assault-v5", overrides=over) as rec:
            rec.begin_episode()
            with pytest.raises(InvalidInput, match="writer='thread'"):
                rec.record_step(frames={"render": renders[0], "observation": stacks[0]})
            rec.record_step(frames={"render": renders[0]})  # render alone works everywhere
            rec.end_episode()


def test_older_store_reads_as_one_render_stream(tmp_path):
    from oldstores import copy_fixture

    path = copy_fixture("store-v0.2.0", tmp_path)
    with FrameStore.open(path, readonly=True) as store:
        ep = store.episodes()[0]
        assert ep.streams == ("render",)
        assert [s.name for s in store.streams(ep.id)] == ["render"]
        a = list(store.iter_frames(ep.id))
        b = list(store.iter_frames(ep.id, stream="render"))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        with pytest.raises(StreamNotFound):
            store.read_frame(ep.id, 0, stream="observation")
