"""``framestore export --format rrd``: one rerun recording, read back with rerun's own
reader (``rerun.chunk.RrdReader``): every frame bit-exact, rewards, returns, actions,
end events, info and the recording's properties as stored."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from gymnasium import spaces
from PIL import Image

from framestore import FrameStore
from tools.export import ExportOptions, export_rrd

rr_chunk = pytest.importorskip("rerun.chunk")  # the rerun extra; the test extra installs it


def record(path, frames, *, episodes=2, steps=12):
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=spaces.Discrete(7))
        try:
            for e in range(episodes):
                rec.begin_episode(seed=10 + e)
                rec.record_step(frames[e * steps])
                for i in range(1, steps):
                    rec.record_step(
                        None if (e, i) == (0, 4) else frames[e * steps + i],
                        action=i % 7,
                        reward=float(i),
                        info={"lives": 3 - e} if i % 2 else {},
                        terminated=e == 0 and i == steps - 1,
                        truncated=e == 1 and i == steps - 1,
                    )
                rec.end_episode()
        finally:
            rec.close()


def read_rrd(path) -> tuple[list, dict[str, dict]]:
    """rerun's reader: the recordings of the file and, per entity, its rows by column."""
    reader = rr_chunk.RrdReader(path)
    recordings = reader.recordings()
    entities: dict[str, dict] = {}
    for chunk in reader.stream(store=recordings[0]):
        batch = chunk.to_record_batch().to_pydict()
        columns = entities.setdefault(chunk.entity_path, {})
        for name, values in batch.items():
            columns.setdefault(name, []).extend(values)
    return recordings, entities


def by_step(columns: dict, value: str) -> dict[int, object]:
    return dict(zip(columns["step"], columns[value], strict=True))


def test_rerun_reads_back_every_frame_and_scalar(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record(path, assault_frames)
    out = tmp_path / "x.rrd"
    result = run_cli("export", path, "--format", "rrd", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["episodes"] == [1, 2] and report["steps"] == 24 and report["frames"] == 23
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.store", "x.rrd"]  # no .partial

    recordings, entities = read_rrd(out)
    assert [(r.kind, r.application_id) for r in recordings] == [("recording", "framestore")]
    props = entities["/__properties/framestore"]
    assert props["episode_id"] == [[1, 2]] and props["env_id"] == [["ALE/Assault-v5"]]
    with FrameStore.open(path, readonly=True) as st:
        for ep in st.episodes():
            base = f"/episode_{ep.id}"
            assert entities[base]["seed"] == [[ep.seed]]
            images = entities[f"{base}/render"]
            assert {m[0] for m in images["EncodedImage:media_type"]} == {"image/png"}
            blobs = by_step(images, "EncodedImage:blob")
            stored = dict(st.iter_steps_frames(ep.id))
            assert sorted(blobs) == sorted(stored)  # the dropped frame is not logged
            for step, blob in blobs.items():
                decoded = np.asarray(Image.open(io.BytesIO(bytes(blob[0]))))
                np.testing.assert_array_equal(decoded, stored[step])
            steps = st.read_steps(ep.id)
            rewards = by_step(entities[f"{base}/reward"], "Scalars:scalars")
            returns = by_step(entities[f"{base}/return"], "Scalars:scalars")
            actions = by_step(entities[f"{base}/action"], "Scalars:scalars")
            total = 0.0
            for s in steps[1:]:
                total += s.reward
                assert rewards[s.step] == [s.reward] and returns[s.step] == [total]
                assert actions[s.step] == [float(s.action)]
            wall = by_step(images, "wall_time")
            assert all(wall[s.step] is not None for s in steps if s.step in wall)
            info = by_step(entities[f"{base}/info"], "TextLog:text")
            assert {k: json.loads(v[0]) for k, v in info.items()} == {
                s.step: s.info for s in steps if s.info
            }
            events = by_step(entities[f"{base}/events"], "TextLog:text")
            end = "terminated" if ep.terminated else "truncated"
            assert events == {steps[-1].step: [end]}


def test_one_episode_range_and_bad_requests(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record(path, assault_frames)
    out = tmp_path / "one.rrd"
    with FrameStore.open(path, readonly=True) as st:
        calls = []
        report = export_rrd(
            st,
            out,
            episodes=[2],
            options=ExportOptions(start=3, stop=6),
            progress=lambda *c: calls.append(c),
        )
    assert report.steps == 3 and calls == [(1, 3), (2, 3), (3, 3)]
    _, entities = read_rrd(out)
    assert sorted(entities["/episode_2/render"]["step"]) == [3, 4, 5]
    assert entities["/__properties/framestore"]["seed"] == [[11]]
    cases = [
        (("-o", tmp_path / "x.mp4"), "end the name in .rrd"),
        (("-o", tmp_path / "no" / "x.rrd"), "does not exist"),
        (("--episode", 7, "-o", tmp_path / "x.rrd"), "no episode 7"),
        (("--scale", 2, "-o", tmp_path / "x.rrd"), "scale"),
        (("-o", path / "x.rrd"), "inside the store"),
    ]
    for args, words in cases:
        line = assert_one_line_error(run_cli("export", path, "--format", "rrd", *args))
        assert words in line, (args, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.rrd", "s.store"]


def test_each_image_stream_is_an_entity_of_its_own(tmp_path, assault_frames):
    """``record_step(frames={...})``: each image stream is an ``episode_<id>/<stream>``
    entity, its frames bit-exact on the steps that have one; a frame stack is no image."""
    path = tmp_path / "streams.store"
    wrist = [np.ascontiguousarray(f[50:134, 40:124]) for f in assault_frames]  # 84x84x3
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=spaces.Discrete(7))
        try:
            rec.begin_episode(seed=1)
            for i in range(10):
                frames = {"render": assault_frames[i], "stack": np.stack([wrist[i][:, :, 0]] * 4)}
                if i != 3:
                    frames["wrist"] = wrist[i]
                rec.record_step(frames=frames, action=None if i == 0 else 1, reward=0.0)
            rec.end_episode()
        finally:
            rec.close()
    out = tmp_path / "x.rrd"
    result = run_cli("export", path, "--format", "rrd", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["frames"] == 10 + 9
    _recordings, entities = read_rrd(out)
    assert entities["/episode_1"]["streams"] == [["render", "wrist"]]
    assert "/episode_1/stack" not in entities
    for name, frames, steps in (
        ("render", assault_frames, range(10)),
        ("wrist", wrist, [i for i in range(10) if i != 3]),
    ):
        blobs = by_step(entities[f"/episode_1/{name}"], "EncodedImage:blob")
        assert sorted(blobs) == list(steps), name
        for step, blob in blobs.items():
            decoded = np.asarray(Image.open(io.BytesIO(bytes(blob[0]))))
            np.testing.assert_array_equal(decoded, frames[step])
