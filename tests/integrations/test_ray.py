"""framestore.ray on a real 2-node Ray cluster (two raylets on this machine, 1 CPU each),
started once for the module and shut down after it, with no Ray process left behind:
``read_store`` over several stores (local, published on S3) returns every committed step
once with bit-exact frames in bounded blocks; ``record_parallel`` records stores whose
episodes replay from their seed and actions; Ray Data reads the Parquet export."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from conftest import SMALL_SEGMENTS, http_server, record_episodes
from PIL import Image

from framestore import FrameStore
from framestore.errors import InvalidInput
from framestore.maintenance.publish import publish

ray = pytest.importorskip("ray")  # the ray extra; the test extra installs it
pytestmark = pytest.mark.ray


def rows_by_key(rows) -> dict:
    keys = Counter((r["store"], r["episode_id"], r["step"]) for r in rows)
    assert max(keys.values()) == 1, "a step came back twice"
    return {(r["store"], r["episode_id"], r["step"]): r for r in rows}


def expected_frames(paths) -> dict:
    out = {}
    for path in paths:
        with FrameStore.open(path, readonly=True) as st:
            for ep in st.episodes():
                for step, frame in enumerate(st.read_frames(ep.id)):
                    out[(str(path), ep.id, step)] = frame
    return out


def test_read_store_over_three_stores_every_step_once_bit_exact(cluster, tmp_path, assault_frames):
    from framestore.ray import read_store

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    paths = [tmp_path / f"s{i}.store" for i in range(3)]
    for path, episodes in zip(paths, (2, 3, 1), strict=True):
        record_episodes(path, assault_frames, episodes=episodes, steps=10)
    frame_bytes = assault_frames[0].nbytes
    ds = read_store(paths, block_bytes=3 * frame_bytes, override_num_blocks=4)
    rows = rows_by_key(ds.take_all())
    want = expected_frames(paths)
    assert set(rows) == set(want) and len(rows) == 60
    for key, frame in want.items():
        np.testing.assert_array_equal(rows[key]["frame"], frame)
        assert rows[key]["env_id"] == "ALE/Assault-v5" and rows[key]["reward"] == 1.0
    # Blocks are bounded in bytes: at most three frames each here.
    sizes = [len(b["step"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    assert sum(sizes) == 60 and max(sizes) <= 3


def test_read_store_columns_episodes_and_rows_without_frames(cluster, tmp_path, assault_frames):
    from framestore.ray import read_store

    a, b = tmp_path / "a.store", tmp_path / "b.store"
    record_episodes(a, assault_frames, episodes=2, steps=5)
    record_episodes(b, assault_frames, episodes=2, steps=5)
    picked = read_store([a, b], episodes={str(a): [2]}, columns=["episode_id", "step", "frame"])
    rows = picked.take_all()
    assert sorted((r["episode_id"], r["step"]) for r in rows if "frame" in r) == sorted(
        [(2, s) for s in range(5)] + [(e, s) for e in (1, 2) for s in range(5)]
    )
    assert set(rows[0]) == {"episode_id", "step", "frame"}
    meta = read_store(a, frames=False).take_all()
    assert len(meta) == 10 and "frame" not in meta[0] and meta[1]["action"] == "1"
    with pytest.raises(InvalidInput, match="unknown column 'pixels'"):
        read_store(a, columns=["pixels"])
    with pytest.raises(InvalidInput, match="no episode 7"):
        read_store(a, episodes=[7])


def test_read_store_over_a_store_published_on_s3(cluster, s3, tmp_path, assault_frames):
    from framestore.ray import read_store

    path = tmp_path / "src.store"
    record_episodes(path, assault_frames, episodes=3, steps=10)
    url = f"s3://{s3.bucket()}/runs"
    with FrameStore.open(path, readonly=True) as st:
        publish(st, url, storage_options=s3.storage_options)
    ds = read_store(url, storage_options=s3.storage_options, override_num_blocks=2)
    rows = {(r["episode_id"], r["step"]): r["frame"] for r in ds.take_all()}
    want = {(e, s): f for (_p, e, s), f in expected_frames([path]).items()}
    assert rows.keys() == want.keys()
    for key, frame in want.items():
        np.testing.assert_array_equal(rows[key], frame)


def test_read_store_over_http_masks_the_password_in_the_store_column(
    cluster, tmp_path, assault_frames
):
    from framestore.ray import read_store

    path = tmp_path / "src.store"
    record_episodes(path, assault_frames, episodes=2, steps=5)
    with FrameStore.open(path, readonly=True) as st:
        publish(st, tmp_path / "pub")
    with http_server(tmp_path) as host:
        url = f"http://reader:s3cret@{host}/pub"
        # the episodes mapping is keyed by the location as the caller typed it
        ds = read_store(url, episodes={url: [2]}, override_num_blocks=2)
        rows = ds.take_all()
    assert {r["store"] for r in rows} == {f"http://***@{host}/pub"}
    want = {(e, s): f for (_p, e, s), f in expected_frames([path]).items() if e == 2}
    got = {(r["episode_id"], r["step"]): r["frame"] for r in rows}
    assert got.keys() == want.keys()
    for key, frame in want.items():
        np.testing.assert_array_equal(got[key], frame)


def test_read_store_while_recording_reads_the_committed_rows(cluster, tmp_path, assault_frames):
    from framestore.ray import read_store

    path = tmp_path / "live.store"
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", overrides=SMALL_SEGMENTS)
        try:
            eid = rec.begin_episode(seed=0)
            for i in range(12):
                rec.record_step(assault_frames[i], action=None if i == 0 else 1, reward=1.0)
            rec.flush()
            ds = read_store(path)  # the snapshot: 12 committed rows
            for i in range(12, 20):
                rec.record_step(assault_frames[i], action=1, reward=1.0)
            rec.flush()
            rows = ds.take_all()  # read while the recorder is still open
        finally:
            rec.close()
    assert sorted(r["step"] for r in rows) == list(range(12))
    for r in rows:
        assert r["episode_id"] == eid
        np.testing.assert_array_equal(r["frame"], assault_frames[r["step"]])


def test_record_parallel_stores_replay_from_seed_and_actions(cluster, tmp_path):
    from framestore.envs import make_env
    from framestore.ray import read_store, record_parallel

    out = tmp_path / "par"
    summaries = record_parallel(
        "CartPole-v1", workers=2, episodes=3, out=out, seed=11, max_steps=15
    )
    stores = sorted(out.glob("*.store"))
    assert [s.name for s in stores] == ["worker-000.store", "worker-001.store"]
    assert sorted(e["seed"] for s in summaries for e in s["episodes"]) == [11, 12, 13]
    for path in stores:
        with FrameStore.open(path, readonly=True) as st:
            for ep in st.episodes():
                env = make_env("CartPole-v1", max_episode_steps=15)
                try:
                    env.reset(seed=ep.seed)
                    steps = st.read_steps(ep.id)
                    frames = st.read_frames(ep.id)
                    np.testing.assert_array_equal(env.render(), frames[0])
                    for step, frame in zip(steps[1:], frames[1:], strict=True):
                        env.step(step.action)
                        np.testing.assert_array_equal(env.render(), frame)
                finally:
                    env.close()
    rows = read_store(stores, frames=False).take_all()
    assert len(rows) == sum(s["steps"] for s in summaries)
    assert {type(r["action"]) for r in rows if r["step"] > 0} == {int}
    # the same play loop as `framestore record`: the same seed gives the same actions
    from tools.record import record

    record(str(tmp_path / "one.store"), "CartPole-v1", episodes=3, seed=11, max_steps=15)
    parallel = {}
    for path in stores:
        with FrameStore.open(path, readonly=True) as st:
            for ep in st.episodes():
                parallel[ep.seed] = [s.action for s in st.read_steps(ep.id)]
    with FrameStore.open(tmp_path / "one.store", readonly=True) as st:
        one = {ep.seed: [s.action for s in st.read_steps(ep.id)] for ep in st.episodes()}
    assert one == parallel
    with pytest.raises(InvalidInput, match="not an empty directory"):
        record_parallel("CartPole-v1", workers=1, episodes=1, out=out)


def test_ray_data_reads_the_parquet_export(cluster, tmp_path, assault_frames):
    from tools.export import export_parquet

    path = tmp_path / "p.store"
    record_episodes(path, assault_frames, episodes=2, steps=10)
    with FrameStore.open(path, readonly=True) as st:
        export_parquet(st, tmp_path / "pq", shard_bytes=64 * 1024)
    rows = ray.data.read_parquet(str(tmp_path / "pq")).take_all()
    want = {(e, s): f for (_p, e, s), f in expected_frames([path]).items()}
    assert len(rows) == len(want) == 20
    for r in rows:
        frame = np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])))
        np.testing.assert_array_equal(frame, want[(r["episode_id"], r["step"])])


def test_bench_scale_out_reads_every_frame_exactly(cluster):
    from tools.bench import SCALEOUT_TABLE, capture, failed_checks, format_table, scale_out

    rows = scale_out(capture("assault", 120))  # uses the running cluster
    assert [(r.reader, r.source, r.workers) for r in rows] == [
        ("iter_frames", "local", 1),
        ("read_store", "local", 1),
        ("read_store", "local", 2),
        ("iter_frames", "s3 (moto)", 1),
        ("read_store", "s3 (moto)", 1),
        ("read_store", "s3 (moto)", 2),
    ]
    assert not failed_checks(rows), format_table(rows, SCALEOUT_TABLE)
    assert all(r.verified and r.frames == 120 and r.fps > 0 for r in rows)


def test_read_store_reads_a_merged_store_and_its_published_copy(cluster, tmp_path, assault_frames):
    """A merged episode's chunks carry the id it had in its own store (its stream key):
    read_store must check frames against that key, as FrameStore.read_at does."""
    from framestore.maintenance.publish import publish
    from framestore.ray import read_store
    from tools.merge import merge

    a, b, m = tmp_path / "a.store", tmp_path / "b.store", tmp_path / "m.store"
    record_episodes(a, assault_frames, episodes=2, steps=5)
    record_episodes(b, assault_frames[10:], episodes=2, steps=5)
    merge(m, [a, b])  # b's episodes 1, 2 become 3, 4 with stream keys 1, 2
    with FrameStore.open(m, readonly=True) as st:
        publish(st, tmp_path / "m.pub")
    want = expected_frames([m])
    assert len(want) == 20
    for path in (m, tmp_path / "m.pub"):
        rows = rows_by_key(read_store([path]).take_all())
        got = {(e, s): f for (_store, e, s), f in ((k, r["frame"]) for k, r in rows.items())}
        assert set(got) == {(e, s) for (_store, e, s) in want}
        for (_store, e, s), frame in want.items():
            np.testing.assert_array_equal(got[(e, s)], frame)


def test_record_parallel_checks_the_env_id_before_starting_actors(tmp_path):
    """An unknown id was a Ray actor traceback (ANSI codes included) and an empty
    directory left behind: now one InvalidInput, before anything is created."""
    from framestore.errors import InvalidInput
    from framestore.ray import record_parallel

    out = tmp_path / "runs"
    with pytest.raises(InvalidInput, match="'Nope-v0' is not registered"):
        record_parallel("Nope-v0", workers=2, episodes=2, out=out)
    assert not out.exists()


def test_read_store_reads_another_stream(cluster, tmp_path, assault_frames):
    """``stream=`` fills the frame column with that stream's frames (a frame stack of 4
    grayscale frames here), bit-exact; a stream an episode lacks is one error."""
    from framestore import StreamNotFound
    from framestore.ray import read_store

    path = tmp_path / "s.store"
    grey = [f.mean(axis=2).astype(np.uint8) for f in assault_frames[:24]]
    stacks = [np.stack([grey[max(0, i - k)] for k in (3, 2, 1, 0)]) for i in range(24)]
    with FrameStore.open(path) as st, st.recorder("ALE/Assault-v5") as rec:
        eid = rec.begin_episode(seed=0)
        for f, s in zip(assault_frames[:24], stacks, strict=True):
            rec.record_step(frames={"render": f, "observation": s}, reward=1.0)
        rec.end_episode()
    rows = read_store(path, stream="observation", override_num_blocks=2).take_all()
    assert sorted(r["step"] for r in rows) == list(range(24))
    for r in rows:
        assert r["episode_id"] == eid
        np.testing.assert_array_equal(r["frame"], stacks[r["step"]])
    with pytest.raises(StreamNotFound, match="no stream 'wrist'"):
        read_store(path, stream="wrist")
