"""framestore export: library functions and the CLI verb, on real recordings."""

from __future__ import annotations

import json
import os

import av
import gymnasium as gym
import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image

from framestore import FrameStore
from framestore.errors import CorruptData, EpisodeNotFound, InvalidInput
from tools.export import ExportOptions, export_episode, export_run

T = 80  # actions per episode: T + 1 frames
SPACE = gym.spaces.Discrete(7)


def record(path, frames, *, episodes=1, render_fps=30, overrides=None):
    """Record ``episodes`` episodes of ``len(frames)`` rows; returns their ids."""
    ids = []
    with (
        FrameStore.open(path) as st,
        st.recorder(
            "ALE/Assault-v5", action_space=SPACE, render_fps=render_fps, overrides=overrides
        ) as rec,
    ):
        for e in range(episodes):
            ids.append(rec.begin_episode(seed=e))
            for i, f in enumerate(frames):
                if i == 0:
                    rec.record_step(f)
                else:
                    rec.record_step(
                        f, action=(i + e) % 7, reward=float(i % 3), terminated=i == len(frames) - 1
                    )
            rec.end_episode()
    return ids


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, assault_frames):
    """A store with two Assault episodes of T + 1 frames each (shared, read-only)."""
    path = tmp_path_factory.mktemp("export") / "runs.store"
    ids = record(path, assault_frames[: T + 1], episodes=2)
    return path, ids


def stored(path, episode_id, start=0, stop=None):
    with FrameStore.open(path, readonly=True) as st:
        return st.read_frames(episode_id, start, stop), st.read_steps(episode_id, start, stop)


def decode(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return frames, s.codec_context.name, s.codec_context.pix_fmt, s.average_rate


def export(path, episode_id, out, **kw):
    with FrameStore.open(path, readonly=True) as st:
        return export_episode(st, episode_id, out, **kw)


# ----------------------------------------------------------------------------- formats
def test_lossless_mp4_decodes_to_stored_frames(recorded, tmp_path):
    path, (eid, _) = recorded
    report = export(path, eid, tmp_path / "ep.mp4", lossless=True)
    frames, codec, pix_fmt, rate = decode(tmp_path / "ep.mp4")
    want, _ = stored(path, eid)
    assert codec == "h264" and pix_fmt in ("gbrp", "rgb24")
    assert report.frames == len(frames) == len(want) == T + 1
    assert report.exact and rate == 30
    for got, exp in zip(frames, want, strict=True):
        np.testing.assert_array_equal(got, exp)


def test_default_mp4_is_browser_h264(recorded, tmp_path):
    path, (eid, _) = recorded
    result = run_cli("export", path, "--episode", eid, "-o", tmp_path / "ep.mp4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    frames, codec, pix_fmt, rate = decode(tmp_path / "ep.mp4")
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert len(frames) == report["frames"] == T + 1
    assert frames[0].shape == (210, 160, 3)
    assert rate == 30 and report["fps"] == 30  # the run's render_fps
    assert report["exact"] is False
    want, _ = stored(path, eid, 0, 1)
    assert np.abs(frames[0].astype(int) - want[0]).mean() < 8  # lossy, but the same picture


def test_npz_holds_stored_frames_actions_rewards(recorded, tmp_path):
    path, (eid, _) = recorded
    export(path, eid, tmp_path / "ep.npz")
    want, steps = stored(path, eid)
    with np.load(tmp_path / "ep.npz", allow_pickle=False) as z:
        assert z["frames"].dtype == np.uint8 and z["frames"].shape == (T + 1, 210, 160, 3)
        np.testing.assert_array_equal(z["frames"], np.stack(want))
        np.testing.assert_array_equal(z["step_index"], np.arange(T + 1))
        np.testing.assert_array_equal(z["has_action"], [s.action is not None for s in steps])
        np.testing.assert_array_equal(z["actions"][1:], [s.action for s in steps[1:]])
        np.testing.assert_array_equal(z["rewards"], [s.reward for s in steps])
        np.testing.assert_array_equal(z["terminated"], [s.terminated for s in steps])
        np.testing.assert_array_equal(z["truncated"], [s.truncated for s in steps])
        assert z["terminated"][-1] and not z["terminated"][:-1].any()
    # deflated like np.savez_compressed: far smaller than the raw frames it holds
    assert (tmp_path / "ep.npz").stat().st_size < sum(f.nbytes for f in want) / 10


def test_png_dir_has_one_exact_png_per_step(recorded, tmp_path):
    path, (eid, _) = recorded
    out = tmp_path / "pngs"
    result = run_cli("export", path, "--episode", eid, "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(out))
    assert names == [f"step_{i:06d}.png" for i in range(T + 1)]
    want, _ = stored(path, eid)
    for name, exp in zip(names, want, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(out / name)), exp)
    assert not (tmp_path / "pngs.partial").exists()


@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_animations_have_every_frame_exactly(recorded, tmp_path, ext):
    path, (eid, _) = recorded
    report = export(path, eid, tmp_path / f"ep.{ext}", stop=40)
    want, _ = stored(path, eid, 0, 40)
    im = Image.open(tmp_path / f"ep.{ext}")
    assert im.n_frames == report.frames == 40
    assert report.exact  # Atari frames have far fewer than 256 colours
    for i in range(40):
        im.seek(i)
        im.load()
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), want[i])
    assert im.info.get("duration") in (30, 33, 34)  # 30 fps


def test_scale_upscales_nearest(recorded, tmp_path):
    path, (eid, _) = recorded
    report = export(path, eid, tmp_path / "big.gif", stop=3, scale=3)
    want, _ = stored(path, eid, 0, 1)
    im = Image.open(tmp_path / "big.gif")
    assert im.size == (480, 630) and (report.width, report.height) == (480, 630)
    np.testing.assert_array_equal(
        np.asarray(im.convert("RGB")), want[0].repeat(3, axis=0).repeat(3, axis=1)
    )


def test_start_stop_ranges(recorded, tmp_path):
    path, (eid, _) = recorded
    result = run_cli(
        "export", path, "--episode", eid, "-o", tmp_path / "r.npz", "--start", 10, "--stop", 25
    )
    assert result.exit_code == 0, result.output
    want, _ = stored(path, eid, 10, 25)
    with np.load(tmp_path / "r.npz") as z:
        np.testing.assert_array_equal(z["step_index"], np.arange(10, 25))
        np.testing.assert_array_equal(z["frames"], np.stack(want))
    report = export(path, eid, tmp_path / "r.mp4", start=70, stop=10_000)
    assert (report.start, report.stop, report.frames) == (70, T + 1, T + 1 - 70)
    assert len(decode(tmp_path / "r.mp4")[0]) == T + 1 - 70


def test_run_exports_every_episode(recorded, tmp_path):
    path, ids = recorded
    out = tmp_path / "all"
    result = run_cli("export", path, "--run", 1, "-o", out, "--format", "npz", "--json")
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [r["episode_id"] for r in reports] == ids
    assert sorted(os.listdir(out)) == [f"episode_{i:06d}.npz" for i in ids]
    for i in ids:
        with np.load(out / f"episode_{i:06d}.npz") as z:
            np.testing.assert_array_equal(z["frames"], np.stack(stored(path, i)[0]))
    with FrameStore.open(path, readonly=True) as st:
        mp4s = export_run(st, 1, tmp_path / "mp4s", stop=5)
    assert [r.frames for r in mp4s] == [5, 5]


# ----------------------------------------------------------------------------- shapes
def synthetic_episode(path, shape, n=12, seed=0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
    (eid,) = record(path, frames)
    return eid, frames


def test_odd_size_is_padded_not_cropped(tmp_path):
    eid, frames = synthetic_episode(tmp_path / "s.store", (101, 75, 3))
    report = export(tmp_path / "s.store", eid, tmp_path / "odd.mp4")
    got, _, pix_fmt, _ = decode(tmp_path / "odd.mp4")
    assert pix_fmt == "yuv420p" and report.padded
    assert got[0].shape == (102, 76, 3) and (report.height, report.width) == (102, 76)
    # lossless keeps the odd size exactly (4:4:4 needs no even dimensions)
    report = export(tmp_path / "s.store", eid, tmp_path / "odd-ll.mp4", lossless=True)
    got, _, _, _ = decode(tmp_path / "odd-ll.mp4")
    assert not report.padded and len(got) == len(frames)
    for g, f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(g, f)


@pytest.mark.parametrize("shape", [(60, 80), (60, 80, 1), (60, 80, 4)])
def test_grey_and_rgba_frames(tmp_path, shape):
    eid, frames = synthetic_episode(tmp_path / "s.store", shape)
    export(tmp_path / "s.store", eid, tmp_path / "v.mp4", lossless=True)
    got, _, _, _ = decode(tmp_path / "v.mp4")
    for g, f in zip(got, frames, strict=True):
        f3 = f if f.ndim == 3 else f[:, :, None]
        want = f3[:, :, :3] if f3.shape[2] == 4 else np.repeat(f3, 3, axis=2)
        np.testing.assert_array_equal(g, want)
    export(tmp_path / "s.store", eid, f"{tmp_path / 'pngs'}/")
    png = np.asarray(Image.open(tmp_path / "pngs" / "step_000003.png"))
    np.testing.assert_array_equal(png, frames[3].reshape(png.shape))
    export(tmp_path / "s.store", eid, tmp_path / "v.npz")
    with np.load(tmp_path / "v.npz") as z:
        np.testing.assert_array_equal(z["frames"], np.stack(frames))
    report = export(tmp_path / "s.store", eid, tmp_path / "v.webp")
    assert Image.open(tmp_path / "v.webp").n_frames == report.frames == len(frames)


# ----------------------------------------------------------------------------- errors
def test_unknown_episode_extension_and_unwritable_output(recorded, tmp_path):
    path, (eid, _) = recorded
    before = set(os.listdir(tmp_path))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    before.add("file.txt")
    cases = [
        ("--episode", 999, "-o", tmp_path / "x.mp4"),
        ("--episode", eid, "-o", tmp_path / "x.avi"),
        ("--episode", eid, "-o", tmp_path / "x"),
        ("--episode", eid, "-o", tmp_path / "missing" / "x.mp4"),
        ("--episode", eid, "-o", a_file / "x.mp4"),
        ("--episode", eid, "-o", tmp_path / "x.mp4", "--start", 500),
        ("--episode", eid, "-o", tmp_path / "x.npz", "--scale", 2),
        ("--run", 42, "-o", tmp_path / "runs"),
    ]
    for args in cases:
        result = run_cli("export", path, *args)
        assert_one_line_error(result)
        assert set(os.listdir(tmp_path)) == before, args
    result = run_cli("export", path, "-o", tmp_path / "x.mp4")
    assert result.exit_code == 2
    with FrameStore.open(path, readonly=True) as st:
        with pytest.raises(EpisodeNotFound):
            export_episode(st, 999, tmp_path / "x.mp4")
        with pytest.raises(InvalidInput, match="extension"):
            export_episode(st, eid, tmp_path / "x.mkv")
    assert set(os.listdir(tmp_path)) == before


def test_corrupt_frame_stops_or_is_skipped(tmp_path, assault_frames):
    path = tmp_path / "c.store"
    (eid,) = record(path, assault_frames[:41], overrides={"chunk_frames": 8})
    with FrameStore.open(path, readonly=True) as st:
        locs = st.frame_locations(eid)
    seg, off, _ = locs[20][1]
    bad_steps = [s for s, loc in locs if loc[:2] == (seg, off)]
    assert 0 < len(bad_steps) < 41
    seg_file = path / "segments" / f"seg-{seg:06d}.fseg"
    data = bytearray(seg_file.read_bytes())
    data[off + 40] ^= 0xFF
    seg_file.write_bytes(bytes(data))

    result = run_cli("export", path, "--episode", eid, "-o", tmp_path / "c.mp4")
    assert_one_line_error(result, code=5)
    assert not (tmp_path / "c.mp4").exists() and not (tmp_path / "c.mp4.partial").exists()
    with pytest.raises(CorruptData):
        export(path, eid, tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "c.npz.partial").exists()
    with pytest.raises(CorruptData):
        export(path, eid, f"{tmp_path / 'pngs'}/")
    assert not (tmp_path / "pngs").exists() and not (tmp_path / "pngs.partial").exists()

    report = export(path, eid, tmp_path / "c.npz", skip_corrupt=True)
    assert report.skipped_steps == bad_steps and report.frames == 41 - len(bad_steps)
    with np.load(tmp_path / "c.npz") as z:
        assert not set(z["step_index"].tolist()) & set(bad_steps)
        assert len(z["frames"]) == report.frames
    result = run_cli("export", path, "--episode", eid, "-o", tmp_path / "c.gif", "--skip-corrupt")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and str(bad_steps[0]) in result.output


def test_export_while_recording_gives_durable_steps(tmp_path, assault_frames):
    path = tmp_path / "live.store"
    with FrameStore.open(path) as st:
        rec = st.recorder("ALE/Assault-v5", action_space=SPACE, render_fps=30)
        try:
            eid = rec.begin_episode(seed=0)
            rec.record_step(assault_frames[0])
            for i in range(1, 50):
                rec.record_step(assault_frames[i], action=i % 7, reward=1.0)
            rec.flush()
            result = run_cli("export", path, "--episode", eid, "-o", tmp_path / "live.npz")
            assert result.exit_code == 0, result.output
            with FrameStore.open(path, readonly=True) as reader:
                report = export_episode(reader, eid, tmp_path / "live.mp4", lossless=True)
            assert report.frames == 50
        finally:
            rec.close()
    with np.load(tmp_path / "live.npz") as z:
        assert z["frames"].shape[0] == 50
        np.testing.assert_array_equal(z["frames"], np.stack(assault_frames[:50]))
    assert len(decode(tmp_path / "live.mp4")[0]) == 50


# ----------------------------------------------------------------------------- run to a file
def test_run_to_a_file_name_writes_one_file_per_episode(recorded, tmp_path):
    path, ids = recorded
    result = run_cli("export", path, "--run", 1, "-o", tmp_path / "y.mp4", "--stop", 5, "--json")
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    names = [f"y-ep{i}.mp4" for i in ids]
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # no directory named y.mp4
    assert [r["path"] for r in reports] == [str(tmp_path / n) for n in names]
    for name in names:
        assert len(decode(tmp_path / name)[0]) == 5
    # the extension names the format: a different --format is refused before writing
    result = run_cli("export", path, "--run", 1, "-o", tmp_path / "z.gif", "--format", "npz")
    assert_one_line_error(result)
    result = run_cli("export", path, "--run", 1, "-o", tmp_path / "z.avi")
    assert_one_line_error(result)
    result = run_cli(
        "export", path, "--episode", ids[0], "-o", tmp_path / "e.mp4", "--format", "gif"
    )
    assert_one_line_error(result)  # --format is for --run: never silently ignored
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    # a trailing slash still means a directory, whatever its name
    with FrameStore.open(path, readonly=True) as st:
        export_run(st, 1, f"{tmp_path / 'd.mp4'}/", format="npz", stop=3)
    assert sorted(os.listdir(tmp_path / "d.mp4")) == [f"episode_{i:06d}.npz" for i in ids]
    help_text = run_cli("export", "--help").output
    assert "NAME-ep42.EXT" in "".join(help_text.split())  # the naming rule is documented


# ----------------------------------------------------------------------------- lossless
def rgba_frames(n, *, colour_under_clear, seed=0):
    """RGBA frames with fully transparent pixels, black there unless asked otherwise."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        f = rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)
        f[:, :, 3] = np.maximum(f[:, :, 3], 1)
        clear = rng.random((30, 40)) < 0.2
        f[clear, 3] = 0
        if not colour_under_clear:
            f[clear, :3] = 0
        frames.append(f)
    return frames


def decode_rgba(path):
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        im.load()
        out.append(np.asarray(im.convert("RGBA")))
    return out


def test_lossless_webp_decodes_to_the_stored_frames(tmp_path):
    frames = rgba_frames(6, colour_under_clear=False)
    (eid,) = record(tmp_path / "s.store", frames)
    out = tmp_path / "a.webp"
    result = run_cli("export", tmp_path / "s.store", "--episode", eid, "-o", out, "--lossless")
    assert result.exit_code == 0, result.output
    assert "lossy" not in result.output
    got = decode_rgba(out)
    assert len(got) == len(frames)
    for g, f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(g, f)


def test_lossless_webp_refuses_colour_under_transparent_pixels(tmp_path):
    frames = rgba_frames(6, colour_under_clear=True)
    (eid,) = record(tmp_path / "s.store", frames)
    out = tmp_path / "a.webp"
    result = run_cli("export", tmp_path / "s.store", "--episode", eid, "-o", out, "--lossless")
    assert_one_line_error(result)
    assert "step 0" in result.output and "transparent" in result.output
    assert sorted(os.listdir(tmp_path)) == ["s.store"]
    # without --lossless it is written, and reported as not exact
    report = export(tmp_path / "s.store", eid, out)
    assert not report.exact
    got = decode_rgba(out)
    clear = frames[0][:, :, 3] == 0
    np.testing.assert_array_equal(got[0][~clear], frames[0][~clear])
    assert not np.array_equal(got[0][clear], frames[0][clear])


def test_lossless_gif_refuses_alpha_and_frames_over_256_colours(tmp_path):
    (eid,) = record(tmp_path / "a.store", rgba_frames(4, colour_under_clear=False))
    result = run_cli(
        "export", tmp_path / "a.store", "--episode", eid, "-o", tmp_path / "a.gif", "--lossless"
    )
    assert_one_line_error(result)
    assert "alpha" in result.output
    eid, _ = synthetic_episode(tmp_path / "c.store", (30, 40, 3))  # 1200 random colours
    result = run_cli(
        "export", tmp_path / "c.store", "--episode", eid, "-o", tmp_path / "c.gif", "--lossless"
    )
    assert_one_line_error(result)
    assert "step 0" in result.output and "256 colours" in result.output
    assert sorted(os.listdir(tmp_path)) == ["a.store", "c.store"]
    report = export(tmp_path / "c.store", eid, tmp_path / "c.gif")  # quantised, and says so
    assert not report.exact and report.frames == 12


def test_export_options_are_checked_once_when_built(recorded, tmp_path):
    for bad in ({"scale": 0}, {"start": -1}, {"start": 5, "stop": 5}, {"fps": 0}, {"fps": "x"}):
        with pytest.raises(InvalidInput):
            ExportOptions(**bad)
    options = ExportOptions(fps=np.float32(25), stop=np.int64(4), scale=2)
    assert (options.fps, options.stop, type(options.stop)) == (25.0, 4, int)
    path, (eid, _) = recorded
    with FrameStore.open(path, readonly=True) as st:
        report = export_episode(st, eid, tmp_path / "o.gif", options)
        assert (report.frames, report.fps, report.scale) == (4, 25.0, 2)
        with pytest.raises(TypeError, match="not both"):
            export_episode(st, eid, tmp_path / "p.gif", options, scale=3)
    assert sorted(os.listdir(tmp_path)) == ["o.gif"]
