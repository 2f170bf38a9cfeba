"""Named frame streams per step (issue 20 item 1): ``record_step(frames={...})``, each
stream in its own chunks, a frame equal to render stored once, read back bit-exact by
stream, and kept by verify, gc and recover. Real Assault frames and a real frame stack
(ALE grayscale observations through gymnasium's ``FrameStackObservation``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from framestore import (
    EpisodeNotFound,
    FrameNotFound,
    FrameStore,
    InvalidFrame,
    InvalidInput,
    StreamNotFound,
)
from framestore.disk.scan import scan_segment
from framestore.disk.segments import list_segment_ids, segment_path
from framestore.envs import make_env

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


PARTS = {"codec": "zstd", "chunk_frames": 20, "part_frames": 6}  # parts of 6, 6, 6, 2


def _stream_parts(path, stream_index: int) -> int:
    """zstd parts (a chunk of one zstd frame counts one) of a stream's chunks."""
    from framestore._format import ChunkHeader, RecordType, iter_records, read_file_header
    from framestore.disk.codecs import zstd_parts

    total = 0
    for sid in list_segment_ids(path):
        with open(segment_path(path, sid), "rb") as fp:
            version = read_file_header(fp).version
            for rec in iter_records(fp):
                if rec.type != RecordType.CHUNK:
                    continue
                header = ChunkHeader.unpack(rec.payload, version=version)
                if header.count and header.stream_index == stream_index:
                    parts = zstd_parts(header, rec.payload[header.data_offset :])
                    total += 1 if parts is None else len(parts.first) - 1
    return total


def test_random_stream_reads_decode_only_the_part_of_their_frame(tmp_path, stacked_run):
    """A random read of another stream than render decodes as render's do: the zstd part
    of its frame (up to the frame), not the whole chunk; bit-exact in any order, by
    ``read_frame`` and by ``read_at``; a pointer into another stream's chunk is refused."""
    from framestore.errors import CorruptRecord

    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    eid = _record(path, renders, stacks, overrides=PARTS)
    with FrameStore.open(path, readonly=True) as store:
        index = {s.name: s.index for s in store.streams(eid)}["observation"]
        parts = _stream_parts(path, index)
        assert parts > len(store.frame_locations(eid, stream="observation")) // 20
        before = store.reader.chunks_decoded
        for i in reversed(range(len(stacks))):  # backward: each part decoded once, whole
            frame = store.read_frame(eid, i, stream="observation")
            assert frame.flags.writeable and np.array_equal(frame, stacks[i])
        # whole chunks decoded into the cache would count one per chunk, not per part
        assert store.reader.chunks_decoded - before == parts
        rng = np.random.default_rng(0)
        pointers = store.frame_locations(eid, stream="observation")
        for i in rng.permutation(len(stacks)):
            view = store.read_at(pointers[i][1], eid, int(i), copy=False, stream="observation")
            assert not view.flags.writeable and np.array_equal(view, stacks[i])
            pixels = store.read_frame(eid, int(i), stream="pixels")  # stored once, as render
            assert np.array_equal(pixels, renders[i])
        with pytest.raises(CorruptRecord, match="not of stream index 2"):
            store.read_at(pointers[3][1], eid, 3, stream="pixels")


def test_random_stream_reads_query_no_table_after_the_first(tmp_path, stacked_run):
    """``read_frame(stream=...)`` keeps each episode's pointers of each stream as render's
    are kept: after one read per episode and stream, random reads of every stream run no
    SQLite statement but the change-stamp pragma (counted with SQLite's trace), stay
    bit-exact, and a commit by another connection is still seen."""
    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    ids = _record(path, renders, stacks, episodes=2)
    names = ("render", "observation", "pixels")
    with FrameStore.open(path, readonly=True) as store:
        for eid in ids:
            for name in names:
                store.read_frame(eid, 0, stream=name)
        seen: list[str] = []
        store.catalog.connection._database.conn.set_trace_callback(seen.append)
        rng = np.random.default_rng(1)
        for _ in range(90):
            e, name, i = int(rng.integers(2)), names[int(rng.integers(3))], int(rng.integers(40))
            frame = store.read_frame(ids[e], i, stream=name)
            want = stacks[i] if name == "observation" else renders[i]
            assert np.array_equal(frame, want) and frame.shape == want.shape
        assert seen and all(q.startswith("PRAGMA data_version") for q in seen), seen[:3]
        with pytest.raises(FrameNotFound, match="has no step 40"):
            store.read_frame(ids[0], 40, stream="observation")
        with FrameStore.open(path) as other:
            other.delete_episodes([ids[1]])
        seen.clear()
        with pytest.raises(EpisodeNotFound):
            store.read_frame(ids[1], 3, stream="observation")
        assert np.array_equal(store.read_frame(ids[0], 5, stream="observation"), stacks[5])
        assert any("FROM steps" in q for q in seen)  # the pointers were read again
        store.catalog.connection._database.conn.set_trace_callback(None)


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


def test_process_writer_records_streams_and_observations(tmp_path, stacked_run):
    """The storage process carries every stream's chunks and the steps' typed
    observations as the thread writer does: same frames, same rows, same rebuild."""
    renders, stacks = stacked_run
    over = {**RAW, "writer": "process", "writer_start": "fork"}
    path = tmp_path / "s.store"
    eid = _record(path, renders, stacks, overrides=over)
    _check_reads(path, eid, renders, stacks)
    assert run_cli("verify", path).exit_code == 0

    import gymnasium as gym
    from gymnasium.wrappers import AddRenderObservation

    env = AddRenderObservation(gym.make("CartPole-v1", render_mode="rgb_array"), render_only=False)
    path = tmp_path / "d.store"
    with FrameStore.open(path) as store:
        over = {"writer": "process", "writer_start": "fork"}
        seen = _play(env, store, 25, observations=True, overrides=over)
        eid = store.episodes()[0].id
        assert store.episode(eid).streams == ("render", "observation.pixels")
        got = [o for _s, o in store.iter_observations(eid)]
        assert len(got) == len(seen) and all(_equal(a, b) for a, b in zip(seen, got, strict=True))
    for name in ("framestore.db", "framestore.db-wal", "framestore.db-shm"):
        (path / name).unlink(missing_ok=True)
    assert run_cli("recover", path).exit_code in (0, 1)
    with FrameStore.open(path, readonly=True) as store:
        got = [o for _s, o in store.iter_observations(eid)]
        assert all(_equal(a, b) for a, b in zip(seen, got, strict=True))


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


# --------------------------------------------------------------------------- observations
def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _play(env, store, steps: int, **kwargs) -> list:
    """Play ``steps`` seeded random steps through ``RecordFrames``; the observations."""
    from framestore import RecordFrames

    env = RecordFrames(env, store, overrides={**RAW, **kwargs.pop("overrides", {})}, **kwargs)
    try:
        obs, _ = env.reset(seed=5)
        env.action_space.seed(5)
        seen = [obs]
        for _ in range(steps):
            obs, _r, term, trunc, _i = env.step(env.action_space.sample())
            seen.append(obs)
            if term or trunc:
                break
    finally:
        env.close()
    return seen


def test_record_frames_rgb_observation_equal_to_render_adds_no_frame_bytes(tmp_path):
    """ALE's rgb observation is the rendered frame: ``observations=True`` stores it
    once (the same frame bytes and chunks as recording render alone)."""

    def frame_bytes(path, observations: bool):
        with FrameStore.open(path) as store:
            seen = _play(make_env("ALE/Assault-v5"), store, 40, observations=observations)
            eid = store.episodes()[0].id
            if observations:
                got = [o for _s, o in store.iter_observations(eid)]
                assert all(_equal(a, b) for a, b in zip(seen, got, strict=True))
                assert store.episode(eid).streams == ("render", "observation")
        total = 0
        for sid in list_segment_ids(path):
            total += sum(
                sum(h.lengths) for h in scan_segment(segment_path(path, sid), sid).chunks.values()
            )
        return total

    assert frame_bytes(tmp_path / "a.store", False) == frame_bytes(tmp_path / "b.store", True)


def test_record_frames_frame_stack_observation(tmp_path):
    import gymnasium as gym
    from gymnasium.wrappers import FrameStackObservation

    env = FrameStackObservation(make_env("ALE/Assault-v5", obs_type="grayscale"), 4)
    assert env.observation_space.shape == (4, 210, 160)
    with FrameStore.open(tmp_path / "s.store") as store:
        seen = _play(env, store, 30, observations=True)
        eid = store.episodes()[0].id
        got = [o for _s, o in store.iter_observations(eid)]
        assert len(got) == len(seen) and all(_equal(a, b) for a, b in zip(seen, got, strict=True))
        assert store.streams(eid)[1].shape == (4, 210, 160)
        assert isinstance(env.observation_space, gym.spaces.Box)


def test_record_frames_dict_observation_space(tmp_path):
    """A Dict space (CartPole's state vector with its rendered pixels): the vector goes
    into the step row as typed binary, the pixels (equal to render) are stored once;
    recover rebuilds both from the segments alone."""
    import gymnasium as gym
    from gymnasium.wrappers import AddRenderObservation

    env = AddRenderObservation(gym.make("CartPole-v1", render_mode="rgb_array"), render_only=False)
    path = tmp_path / "s.store"
    with FrameStore.open(path) as store:
        seen = _play(env, store, 25, observations=True)
        eid = store.episodes()[0].id
        assert store.episode(eid).streams == ("render", "observation.pixels")
        got = [o for _s, o in store.iter_observations(eid)]
        assert all(_equal(a, b) for a, b in zip(seen, got, strict=True))
        assert got[3]["state"].dtype == np.float32
    assert run_cli("verify", path).exit_code == 0
    for name in ("framestore.db", "framestore.db-wal", "framestore.db-shm"):
        (path / name).unlink(missing_ok=True)
    assert run_cli("recover", path).exit_code in (0, 1)
    with FrameStore.open(path, readonly=True) as store:
        got = [o for _s, o in store.iter_observations(eid)]
        assert all(_equal(a, b) for a, b in zip(seen, got, strict=True))


def test_large_and_odd_observations(tmp_path, stacked_run):
    """Entries above the inline bound become a stream of their bytes (dtype kept);
    scalars and nested dicts come back as recorded; a bad observation is one error
    before anything is recorded."""
    renders, _ = stacked_run
    rng = np.random.default_rng(1)
    obs = [
        {
            "big": rng.standard_normal(300),
            "n": np.int64(i),
            "deep": {"v": np.arange(3, dtype=np.int16)},
        }
        for i in range(10)
    ]
    with FrameStore.open(tmp_path / "s.store") as store:
        with store.recorder("ALE/Assault-v5", overrides=RAW) as rec:
            eid = rec.begin_episode()
            for f, o in zip(renders, obs, strict=False):
                rec.record_step(f, observation=o)
            for bad, text in [
                ({"x": np.array(["a"])}, "dtype"),
                ({}, "empty dict"),
                ({"big": np.zeros(300, np.float32)}, "holds float64, not float32"),
                ({"bad key!": np.zeros(2)}, "stream name"),
            ]:
                with pytest.raises(InvalidInput, match=text):
                    if text == "stream name":  # only a stream (a big entry) is named
                        rec.record_step(renders[0], observation={"bad key!": np.zeros(500)})
                    else:
                        rec.record_step(renders[0], observation=bad)
            rec.end_episode()
        assert store.episode(eid).steps == len(obs)
        info = {s.name: s for s in store.streams(eid)}
        assert info["observation.big"].dtype == "float64" and info["observation.big"].shape == (
            300,
        )
        got = [o for _s, o in store.iter_observations(eid)]
        assert all(_equal(a, b) for a, b in zip(obs, got, strict=True))


def test_merge_and_publish_carry_streams(tmp_path, stacked_run):
    renders, stacks = stacked_run
    src, dest, pub = tmp_path / "src.store", tmp_path / "dest.store", tmp_path / "pub"
    _record(dest, renders[:5], stacks[:5], same=False)  # ids in dest are taken already
    eid = _record(src, renders, stacks)
    with FrameStore.open(src) as store, store.recorder("x", overrides=RAW) as rec:
        rec.begin_episode()
        rec.record_step(renders[0], observation={"v": np.arange(4, dtype=np.float32)})
        rec.end_episode()
    result = run_cli("merge", dest, src, "--json")
    assert result.exit_code == 0, result.output
    with FrameStore.open(dest, readonly=True) as store:
        merged = [e for e in store.episodes() if e.run_id != 1]
        assert [e.streams for e in merged] == [("render", "observation", "pixels"), ("render",)]
        _check_reads(dest, merged[0].id, renders, stacks)
        obs = store.read_observation(merged[1].id, 0)
        assert obs["v"].dtype == np.float32 and list(obs["v"]) == [0, 1, 2, 3]
    assert run_cli("verify", dest).exit_code == 0
    result = run_cli("publish", dest, pub)
    assert result.exit_code == 0, result.output
    with FrameStore.open(pub, readonly=True) as store:
        ep = [e for e in store.episodes() if e.run_id != 1][0]
        assert ep.streams == ("render", "observation", "pixels")
        got = list(store.iter_frames(ep.id, stream="observation"))
        assert all(np.array_equal(a, b) for a, b in zip(got, stacks, strict=True))
    assert run_cli("verify", pub).exit_code == 0
    assert eid


def test_info_of_a_published_copy_counts_streams_from_its_totals(tmp_path, stacked_run):
    """``info`` of a published copy says what the source's says about streams (a frame
    stored once for ``pixels`` and render counts no raw bytes twice) from the copy's
    per-stream totals: the same with steps and step_frames gone. Totals that do not add
    up are refused in one line, naming the object."""
    import hashlib
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from conftest import assert_one_line_error

    renders, stacks = stacked_run
    src, pub = tmp_path / "s.store", tmp_path / "pub"
    _record(src, renders, stacks, episodes=2)
    _record(src, renders[:7], stacks[:7], same=False)  # a second run, without pixels

    def info(path) -> dict:
        result = run_cli("info", path, "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)
        return {k: shown[k] for k in ("streams", "raw_frame_bytes", "steps", "frames")}

    want = info(src)
    assert want["streams"] == {"render": 87, "observation": 87, "pixels": 80}
    assert run_cli("publish", src, pub).exit_code == 0
    assert info(pub) == want
    for table in ("steps", "step_frames"):  # any read of them would now fail
        (pub / "catalogue" / f"{table}.parquet").unlink()
    assert info(pub) == want

    name = "catalogue/stream_totals.parquet"
    totals = pq.read_table(pub / name)
    at = totals.schema.get_field_index("frames")
    pq.write_table(totals.set_column(at, "frames", pc.add(totals["frames"], 1)), pub / name)
    manifest = json.loads((pub / "manifest.json").read_text())
    data = (pub / name).read_bytes()
    manifest["objects"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (pub / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("info", pub)
    assert "stream_totals.parquet" in assert_one_line_error(result, 5)


# --------------------------------------------------------------------------- tools
def test_ls_info_export_understand_streams(tmp_path, stacked_run):
    import json

    from conftest import assert_one_line_error

    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    eid = _record(path, renders, stacks)
    result = run_cli("ls", path)
    assert result.exit_code == 0 and "render,observation,pixels" in result.output
    info = json.loads(run_cli("info", path, "--json").output)
    assert info["streams"] == {"render": 40, "observation": 40, "pixels": 40}
    assert (
        "streams      render (40 frames), observation (40 frames)" in run_cli("info", path).output
    )
    # the frame stack to .npz, bit-exact; an image stream to PNGs
    out = tmp_path / "obs.npz"
    result = run_cli("export", path, "--episode", eid, "--stream", "observation", "-o", out)
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        assert np.array_equal(z["frames"], np.stack(stacks))
    result = run_cli(
        "export", path, "--episode", eid, "--stream", "pixels", "-o", f"{tmp_path}/px/"
    )
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "px").iterdir())
    assert len(pngs) == 40
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(pngs[7])), renders[7])
    # bad stream names: one line, the usage exit code
    line = assert_one_line_error(
        run_cli("export", path, "--episode", eid, "--stream", "wrist", "-o", tmp_path / "w.npz")
    )
    assert "no stream 'wrist'" in line
    line = assert_one_line_error(
        run_cli(
            "export", path, "--episode", eid, "--stream", "observation", "-o", tmp_path / "o.gif"
        )
    )
    assert "export it to .npz" in line
    assert not (tmp_path / "w.npz").exists() and not (tmp_path / "o.gif").exists()


def test_parquet_export_carries_streams(tmp_path, stacked_run):
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    _record(path, renders[:12], stacks[:12])
    out = tmp_path / "pq"
    result = run_cli("export", path, "--format", "parquet", "-o", out)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert len(table) == 12
    for i, row in enumerate(table):
        cell = row["array.observation"]
        arr = np.frombuffer(cell["bytes"], dtype=cell["dtype"]).reshape(cell["shape"])
        assert np.array_equal(arr, stacks[i])
        px = np.asarray(Image.open(io.BytesIO(row["image.pixels"]["bytes"])))
        assert np.array_equal(px, renders[i])


# --------------------------------------------------------------------------- readers
def test_torch_datasets_read_streams(tmp_path, stacked_run):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from framestore.torch import IterableStepDataset, StepDataset, TransitionDataset, collate_steps

    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    eid = _record(path, renders, stacks)
    with StepDataset(path, streams=["render", "observation"], fields=["reward"]) as ds:
        assert len(ds) == len(stacks)
        item = ds[5]
        assert np.array_equal(item["observation"].numpy(), stacks[5])
        assert np.array_equal(item["render"].numpy(), renders[5])
        got = {}
        for batch in DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_steps):
            for s, o in zip(batch["step"].tolist(), batch["observation"].numpy(), strict=True):
                got[s] = o
        assert all(np.array_equal(got[i], stacks[i]) for i in range(len(stacks)))
    window = {"observation": [-1, 0]}
    with StepDataset(path, streams="observation", fields=(), window=window) as ds:
        first = ds[0]
        assert first["observation"].shape == (2, 4, 84, 84)
        assert first["observation_is_pad"].tolist() == [True, False]
    with IterableStepDataset(path, streams="pixels", fields=(), batch_size=16) as ds:
        frames = np.concatenate([b["pixels"].numpy() for b in ds])
        assert np.array_equal(frames, np.stack(renders))
    with TransitionDataset(path, stream="observation") as ds:
        t = ds[3]
        assert np.array_equal(t["obs"].numpy(), stacks[3])
        assert np.array_equal(t["next_obs"].numpy(), stacks[4])
    assert eid


def test_streams_under_the_drop_policy(tmp_path, stacked_run):
    """A full queue drops frames stream by stream (a dropped render frame takes the
    streams that shared it along); every frame kept reads back bit-exact, verify agrees."""
    renders, stacks = stacked_run
    path = tmp_path / "s.store"
    over = {**RAW, "policy": "drop", "queue_frames": 4, "chunk_frames": 4}
    with FrameStore.open(path) as store, store.recorder("x", overrides=over) as rec:
        eid = rec.begin_episode()
        for f, o in zip(renders, stacks, strict=True):
            rec.record_step(frames={"render": f, "observation": o, "pixels": f.copy()})
        rec.end_episode()
    with FrameStore.open(path, readonly=True) as store:
        kept = {
            name: dict(store.iter_steps_frames(eid, stream=name))
            for name in ("render", "observation", "pixels")
        }
        assert set(kept["pixels"]) == set(kept["render"])  # stored once: dropped together
        for name, want in (("render", renders), ("observation", stacks), ("pixels", renders)):
            assert all(np.array_equal(frame, want[step]) for step, frame in kept[name].items())
        assert store.episode(eid).steps == len(renders)
    assert run_cli("verify", path).exit_code == 0
