"""``framestore export --format parquet``: sharded Parquet with PNG frames and Hugging
Face Image features, read back by ``datasets``, pandas and DuckDB with the stored
pixels; bounded shards; errors before anything is written. (Ray Data's read_parquet is
checked in test_ray.py, which has a cluster.)"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_one_line_error, run_cli
from gymnasium import spaces
from PIL import Image

from framestore import FrameStore
from framestore.errors import CorruptData, InvalidInput
from tools.export import export_parquet

SPACE = spaces.Discrete(7)


def record(path, frames, *, episodes=3, steps=30, finish=True):
    """Episodes with Discrete actions; episode e step i holds frames[e * steps + i]."""
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=SPACE)
        try:
            for e in range(episodes):
                rec.begin_episode(seed=e)
                rec.record_step(frames[e * steps])
                for i in range(1, steps):
                    rec.record_step(
                        frames[e * steps + i], action=i % 7, reward=float(i), info={"lives": e}
                    )
                rec.end_episode()
        finally:
            rec.close()


@pytest.fixture
def recorded(tmp_path, assault_frames):
    path = tmp_path / "p.store"
    record(path, assault_frames)
    return path


def png_frame(cell: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])))


def test_parquet_loads_in_datasets_with_the_stored_pixels(recorded, tmp_path):
    datasets = pytest.importorskip("datasets")  # the hf extra; the test extra installs it
    out = tmp_path / "pq"
    result = run_cli("export", recorded, "--format", "parquet", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["rows"], report["frames"], report["episodes"]) == (90, 90, [1, 2, 3])
    assert report["shards"] == ["train-00000-of-00001.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.store", "pq"]  # no .partial

    ds = datasets.load_dataset(
        "parquet", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["action"] == datasets.Value("int64")
    assert len(ds) == 90
    with FrameStore.open(recorded, readonly=True) as st:
        for row in ds:
            stored = st.read_frame(row["episode_id"], row["step"])
            np.testing.assert_array_equal(np.asarray(row["image"]), stored)
            (step,) = st.read_steps(row["episode_id"], row["step"], row["step"] + 1)
            assert row["action"] == (None if step.action is None else int(step.action))
            assert row["reward"] == step.reward and json.loads(row["info"]) == step.info


def test_pandas_and_duckdb_read_the_shards(recorded, tmp_path):
    out = tmp_path / "pq"
    with FrameStore.open(recorded, readonly=True) as st:
        report = export_parquet(st, out, episodes=[3, 1], shard_bytes=64 * 1024)
        frames = {(e, s): f for e in (1, 3) for s, f in st.iter_steps_frames(e)}
    assert report.episodes == [3, 1] and report.rows == 60
    assert len(report.shards) >= 2  # ~1 KB PNGs, 64 KiB shards
    for name, size in zip(report.shards, report.shard_bytes, strict=True):
        assert (out / name).stat().st_size == size <= 64 * 1024
    pd = pytest.importorskip("pandas")
    table = pd.concat([pd.read_parquet(out / name) for name in report.shards])
    assert sorted(set(table["episode_id"])) == [1, 3] and len(table) == 60
    for row in table.itertuples():
        np.testing.assert_array_equal(png_frame(row.image), frames[(row.episode_id, row.step)])
    duckdb = pytest.importorskip("duckdb")
    with duckdb.connect() as db:
        ((count, reward),) = db.execute(
            f"SELECT count(*), sum(reward) FROM read_parquet('{out}/*.parquet') WHERE action = 3"
        ).fetchall()
    expected = [r for r in table.itertuples() if r.action == 3]
    assert count == len(expected) and reward == sum(r.reward for r in expected)
    schema_meta = pq.read_schema(out / report.shards[0]).metadata
    meta = json.loads(schema_meta[b"huggingface"])
    assert meta["info"]["features"]["image"] == {"_type": "Image"}
    ours = json.loads(schema_meta[b"framestore"])  # the store's name, not the path to it
    assert ours["source"] and "/" not in ours["source"]


def test_run_export_and_steps_range(recorded, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "export", recorded, "--format", "parquet", "--run", 1, "--start", 5, "--stop", 8, "-o", out
    )
    assert result.exit_code == 0, result.output
    assert "3 episode(s): 9 rows, 9 frames" in result.output
    table = pq.read_table(out).to_pydict()
    assert sorted(zip(table["episode_id"], table["step"], strict=True)) == [
        (e, s) for e in (1, 2, 3) for s in (5, 6, 7)
    ]


def test_bad_requests_fail_before_writing(recorded, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (("-o", tmp_path / "full"), "not an empty directory"),
        (("-o", tmp_path / "a", "--scale", "2"), "scale"),
        (("-o", tmp_path / "a", "--episode", 9), "no episode 9"),
        (("-o", tmp_path / "a", "--episode", 1, "--run", 1), "not both"),
        (("-o", tmp_path / "no" / "a"), "does not exist"),
    ]
    for args, words in cases:
        line = assert_one_line_error(run_cli("export", recorded, "--format", "parquet", *args))
        assert words in line, line
    several = run_cli("export", recorded, "--episode", 1, "--episode", 2, "-o", tmp_path / "x.mp4")
    assert several.exit_code == 2 and "need --format parquet" in several.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "p.store"]


def test_a_corrupt_frame_leaves_no_output(tmp_path, assault_frames):
    path = tmp_path / "c.store"
    record(path, assault_frames, episodes=1)
    with FrameStore.open(path, readonly=True) as st:
        seg, off, _slot = st.frame_locations(1)[10][1]
    seg_file = path / "segments" / f"seg-{seg:06d}.fseg"
    data = bytearray(seg_file.read_bytes())
    data[off + 60] ^= 0xFF
    seg_file.write_bytes(bytes(data))
    with FrameStore.open(path, readonly=True) as st, pytest.raises(CorruptData):
        export_parquet(st, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.store"]
    line = assert_one_line_error(
        run_cli("export", path, "--format", "parquet", "-o", tmp_path / "out"), code=5
    )
    assert f"segment {seg} at offset {off}" in line


def test_export_while_recording_has_the_committed_rows(tmp_path, assault_frames):
    path = tmp_path / "live.store"
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=SPACE)
        try:
            eid = rec.begin_episode(seed=0)
            rec.record_step(assault_frames[0])
            for i in range(1, 40):
                rec.record_step(assault_frames[i], action=1, reward=1.0)
            rec.flush()
            with FrameStore.open(path, readonly=True) as reader:
                report = export_parquet(reader, tmp_path / "live")
            rec.record_step(assault_frames[40], action=1, reward=1.0)
        finally:
            rec.close()
    assert report.rows == 40 and report.episodes == [eid]
    with pytest.raises(InvalidInput, match="scale"):
        with FrameStore.open(path, readonly=True) as st:
            from tools.export import ExportOptions

            export_parquet(st, tmp_path / "x", options=ExportOptions(scale=2))
