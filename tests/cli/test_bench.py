"""``framestore bench``, ``presets`` and ``tune``: behaviour only, never timing."""

from __future__ import annotations

import csv
import json
import re
import sys
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

from tools import bench
from tools.cli import cli


@pytest.fixture(scope="module")
def assault_set() -> bench.FrameSet:
    """A few real Assault frames with their actions, rewards and info."""
    return bench.capture("assault", 24, seed=0)


@pytest.fixture(scope="module")
def noise_set() -> bench.FrameSet:
    return bench.capture("noise", 32, seed=1)


def test_capture_shapes_and_episodes(assault_set, noise_set):
    assert len(assault_set) == 24
    assert assault_set.frames[0].shape == (210, 160, 3)
    assert assault_set.frames[0].dtype == np.uint8
    assert assault_set.episodes[0][0] == 0 and assault_set.episodes[-1][1] == 24
    assert assault_set.actions[0] is None  # the reset row
    assert "lives" in assault_set.infos[1]
    json.dumps(assault_set.infos)  # plain values: ALE's numpy seeds were converted
    assert noise_set.frames[0].shape == bench.NOISE_SHAPE


@pytest.mark.parametrize("isolate", [True, False], ids=["forked", "in-process"])
def test_every_pipeline_gives_a_sane_row(assault_set, tmp_path, isolate):
    rows = [
        bench.run_pipeline(name, assault_set, workdir=tmp_path, isolate=isolate)
        for name in bench.PIPELINES
    ]
    bench.add_ratios(rows)
    assert [r.pipeline for r in rows] == list(bench.PIPELINES)
    for r in rows:
        if r.pipeline == "hdf5-lzf" and not bench.hdf5_available():
            assert r.skipped and "h5py" in r.skipped
            continue
        assert r.error is None, r.error
        assert r.frames == 24
        assert r.fps > 0 and r.seconds > 0
        assert r.bytes_per_frame > 0 and r.frame_bytes_per_frame > 0
        assert 0 <= r.producer_p50_us <= r.producer_p99_us <= r.producer_max_us
        assert r.peak_mem_mb >= 0
        assert r.dropped == 0
        assert r.fps_vs_zstd is not None and r.frame_bytes_vs_zstd is not None
    fs_row = rows[0]
    assert fs_row.pipeline == "framestore"
    assert fs_row.verified is True  # its stored frames were read back bit-exact
    assert fs_row.max_queue_depth >= 1
    assert rows[-1].fps_vs_zstd == pytest.approx(1.0)
    assert list(tmp_path.iterdir()) == []  # every temporary output was removed


def test_verify_notices_a_wrong_frame(assault_set, tmp_path):
    from framestore import FrameStore

    with FrameStore.open(tmp_path / "s.store") as store, store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode(seed=0)
        for f in assault_set.frames:
            rec.record_step(f)
    assert bench.verify_framestore(tmp_path / "s.store", assault_set)
    other = assault_set.head(len(assault_set))
    other.frames = list(other.frames)
    other.frames[5] = other.frames[5].copy()
    other.frames[5][0, 0, 0] ^= 1
    assert not bench.verify_framestore(tmp_path / "s.store", other)


def test_table_and_csv(assault_set, tmp_path):
    rows = [bench.run_pipeline(n, assault_set, isolate=False) for n in ("framestore", "zstd")]
    bench.add_ratios(rows)
    text = bench.format_table(rows)
    assert "framestore" in text and "zstd" in text and "frames/s" in text
    path = tmp_path / "bench.csv"
    bench.write_csv(rows, path)
    with open(path, newline="") as fp:
        read = list(csv.DictReader(fp))
    assert [r["pipeline"] for r in read] == ["framestore", "zstd"]
    assert float(read[0]["bytes_per_frame"]) > 0
    assert read[0]["verified"] == "True"


def test_stress_small_always_finishes_and_accounts_for_every_frame(assault_set, tmp_path):
    fs = assault_set.head(12)
    rows = bench.stress(fs, rates=(1, 10, None), timeout=60.0, workdir=tmp_path)
    assert {(r.rate, r.policy) for r in rows} == {
        (rate, policy) for rate in ("1x", "10x", "max") for policy in ("block", "drop")
    }
    for r in rows:
        assert r.finished, r
        assert r.error is None, r.error
        assert r.frames_put == 12
        assert r.frames_written + r.frames_dropped == r.frames_put
        assert r.accounted
        if r.policy == "block":
            assert r.frames_dropped == 0


def test_overload_with_drop_policy_drops_and_stays_within_the_byte_bound(noise_set, tmp_path):
    budget = 1024 * 1024  # ten noise frames
    (row,) = bench.overload(
        noise_set, policies=("drop",), level=19, queue_bytes=budget, seconds=1.0, workdir=tmp_path
    )
    assert row.error is None, row.error
    assert row.policy == "drop"
    assert row.frames_dropped > 0
    assert 0 < row.high_water_bytes <= budget
    assert row.frames_written + row.frames_dropped == row.frames_put
    assert row.queue_bytes == budget


def test_pacing_runs_with_and_without_recording(assault_set, tmp_path):
    idle = bench.pacing(assault_set, hz=200, envs=2, seconds=0.1, record=False, workdir=tmp_path)
    busy = bench.pacing(assault_set, hz=200, envs=2, seconds=0.1, record=True, workdir=tmp_path)
    for r in (idle, busy):
        assert r.ticks == 20
        assert r.late_p50_us <= r.late_p99_us <= r.late_max_us
    assert idle.mode == "no recording" and busy.mode == "framestore"
    assert busy.dropped == 0


def test_cli_bench_json_and_csv(tmp_path):
    out = tmp_path / "b.csv"
    res = CliRunner().invoke(
        cli, ["bench", "--game", "noise", "--frames", "8", "--json", "--csv", str(out)]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["pipeline"] for r in rows] == list(bench.PIPELINES)
    assert out.exists() and out.read_text().count("\n") == len(rows) + 1


def test_cli_presets_json():
    res = CliRunner().invoke(cli, ["presets", "--env", "ALE/Assault-v5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["env_id"] == "ALE/Assault-v5"
    assert data["family"] == "atari"
    by_name = {s["name"]: s for s in data["settings"]}
    assert by_name["codec"]["value"] == "zstd"
    assert by_name["queue_frames"]["source"]  # every value says where it came from
    assert all(s["source"] for s in data["settings"])


def test_cli_presets_unknown_preset_is_one_line_and_exit_2():
    res = CliRunner().invoke(cli, ["presets", "--preset", "nope"])
    assert res.exit_code == 2
    assert "unknown preset" in res.output


def test_cli_tune_suggests_and_applies(tmp_path, monkeypatch, assault_set):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from framestore import FrameStore

    store_path = tmp_path / "runs.store"
    with FrameStore.open(store_path) as store, store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode(seed=0)
        for f in assault_set.frames[:5]:
            rec.record_step(f, action=0, reward=0.0)
    # 5 frames against a queue of thousands: the queue is far too big for this game.
    res = CliRunner().invoke(cli, ["tune", str(store_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["runs"] == 1
    suggestion = data["suggestions"]["ALE/Assault-v5"]
    assert suggestion["queue_frames"] < data["observed"][0]["queue_frames"]
    assert data["saved"] is None
    assert not (tmp_path / "config" / "framestore" / "presets.toml").exists()

    res = CliRunner().invoke(cli, ["tune", str(store_path), "--apply"])
    assert res.exit_code == 0, res.output
    toml_path = tmp_path / "config" / "framestore" / "presets.toml"
    assert str(toml_path) in res.output
    saved = tomllib.loads(toml_path.read_text())
    assert saved["ALE/Assault-v5"]["queue_frames"] == suggestion["queue_frames"]


def test_cli_presets_refuses_an_unregistered_env_in_one_line():
    # Not in GAME_PRESETS and not in gymnasium.registry: before, "family other" silently.
    res = CliRunner().invoke(cli, ["presets", "--env", "Nope-v0"])
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "'Nope-v0' is not registered in Gymnasium" in lines[0]
    assert "--custom-env" in lines[0]


def test_cli_presets_suggests_the_closest_registered_id():
    res = CliRunner().invoke(cli, ["presets", "--env", "CartPol-v1"])
    assert res.exit_code == 2
    assert "did you mean 'CartPole-v1'" in res.stderr


def test_cli_presets_custom_env_shows_the_other_family():
    res = CliRunner().invoke(cli, ["presets", "--env", "Nope-v0", "--custom-env", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["env_id"] == "Nope-v0" and data["family"] == "other"


def test_cli_presets_accepts_ids_only_the_registry_knows():
    res = CliRunner().invoke(cli, ["presets", "--env", "CliffWalkingSlippery-v1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["family"] == "toy_text"


def test_a_recorder_for_an_unregistered_env_still_gets_the_other_family(tmp_path):
    # Only the presets verb refuses unknown ids: recording an env the user's own code
    # registered keeps working, with the "other" family's settings.
    from framestore import FrameStore

    with FrameStore.open(tmp_path / "runs.store") as store:
        with store.recorder("Nope-v0") as rec:
            assert rec.resolved.family == "other"


def test_tune_apply_writes_a_file_whose_comments_name_only_real_flags(
    tmp_path, monkeypatch, assault_set
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from framestore import FrameStore

    store_path = tmp_path / "runs.store"
    with FrameStore.open(store_path) as store, store.recorder("ALE/Assault-v5") as rec:
        rec.begin_episode(seed=0)
        for f in assault_set.frames[:5]:
            rec.record_step(f, action=0, reward=0.0)
    res = CliRunner().invoke(cli, ["tune", str(store_path), "--apply"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "config" / "framestore" / "presets.toml").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    commands = re.findall(r"`framestore ([a-z-]+)([^`]*)`", comments)
    assert {verb for verb, _ in commands} >= {"presets", "tune"}
    for verb, rest in commands:
        options = {opt for param in cli.commands[verb].params for opt in param.opts}
        for flag in re.findall(r"--[a-z][a-z-]*", rest):
            assert flag in options, f"the presets file mentions `framestore {verb} {flag}`"


def test_cli_tune_on_a_missing_store_is_exit_2(tmp_path):
    res = CliRunner().invoke(cli, ["tune", str(tmp_path / "nothing")])
    assert res.exit_code == 2
    assert "framestore: error" in res.output


def test_cli_bench_rate_and_overload_modes(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "bench",
            "--game",
            "assault",
            "--frames",
            "10",
            "--rate",
            "100",
            "--envs",
            "2",
            "--seconds",
            "0.1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["mode"] for r in rows] == ["no recording", "framestore"]
    assert all(r["envs"] == 2 and r["ticks"] == 10 for r in rows)
    res = runner.invoke(
        cli, ["bench", "--overload", "--frames", "16", "--level", "3", "--seconds", "0.2", "--json"]
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["policy"] for r in rows] == ["block", "drop"]
    assert all(r["frames_written"] + r["frames_dropped"] == r["frames_put"] for r in rows)


def test_cli_bench_overload_failed_check_exits_1(monkeypatch):
    # A bound no run can stay within: the check fails on real overload runs.
    monkeypatch.setattr(bench._overload, "MEMORY_SLACK", -(2**40))
    res = CliRunner().invoke(
        cli, ["bench", "--overload", "--frames", "16", "--level", "3", "--seconds", "0.2"]
    )
    assert res.exit_code == 1, res.output
    table = res.stdout.splitlines()
    assert [line.split()[0] for line in table[2:]] == ["block", "drop"]
    assert all(" False " in line for line in table[2:])  # the "ok" column
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith("framestore: error: bench: 2 check(s) failed: overload/block")
    assert "Traceback" not in res.output


def test_every_writers_mode_pays_the_same_harness(assault_set, tmp_path, monkeypatch):
    """framestore and plain zstd alike: the sampler is entered before the output is
    opened and left after it is closed; CPU per frame and frame bytes are reported."""
    events: list[str] = []

    class Counted(bench._writers.ProcessMemory):
        def __enter__(self):
            events.append("sampler on")
            return super().__enter__()

        def __exit__(self, *exc):
            events.append("sampler off")
            return super().__exit__(*exc)

    monkeypatch.setattr(bench._writers, "ProcessMemory", Counted)
    for kind in (bench._writers._FrameStoreOut, bench._writers._ZstdOut):
        for name in ("__init__", "close"):
            original = getattr(kind, name)

            def traced(self, *a, _o=original, _n=f"{kind.__name__}.{name}", **k):
                events.append(_n)
                return _o(self, *a, **k)

            monkeypatch.setattr(kind, name, traced)
    for mode in ("thread", "zstd"):
        events.clear()
        out = tmp_path / mode
        out.mkdir()
        d = bench._writers.measure_write(mode, assault_set, out, {})
        kind = "_ZstdOut" if mode == "zstd" else "_FrameStoreOut"
        assert events == ["sampler on", f"{kind}.__init__", f"{kind}.close", "sampler off"]
        assert d["cpu_us"] > 0 and d["fps"] > 0 and d["frame_bytes"] > 0
        assert d["producer_mb"] >= 0


def test_writers_rows_report_cpu_next_to_frames_per_second(tmp_path):
    rows = bench.run_writers(("assault",), frames=16, rounds=1, workdir=tmp_path)
    assert [r.writer for r in rows] == ["thread", "process", "zstd"]
    for r in rows:
        assert r.error is None, r.error
        assert r.frames == 16 and r.rounds == 1
        assert r.fps > 0 and r.cpu_us > 0 and r.frame_bytes > 0
        assert r.fps_vs_zstd is not None and r.cpu_vs_zstd is not None
    assert rows[-1].cpu_vs_zstd == pytest.approx(1.0)
    assert [r.verified for r in rows] == [True, True, None]
    assert bench.failed_checks(rows) == []
    assert bench.WRITERS_FRAMES["assault"] == 12_000  # the default comparison's size
    assert list(tmp_path.iterdir()) == []


def test_writers_count_the_calls_that_waited_for_room(assault_set, tmp_path):
    """A two-frame queue: the third call finds it full and waits (the writer gets the
    chunk only then); those calls are counted and left out of the no-wait percentiles.
    With the preset's queue nothing waits and the two sets of percentiles agree."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    d = bench._writers.measure_write("thread", assault_set, tiny, {"queue_frames": 2})
    assert 1 <= d["waits"] < len(assault_set)
    assert 0 < d["free_p50_us"] <= d["free_p99_us"]
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    d = bench._writers.measure_write("thread", assault_set, roomy, {})
    assert d["waits"] == 0
    assert (d["free_p50_us"], d["free_p99_us"]) == (d["producer_p50_us"], d["producer_p99_us"])


def test_reads_rows_read_back_bit_exact(tmp_path):
    rows = bench.run_reads(
        "assault", frames=40, chunk_frames=(4, 16), levels=(1,), rounds=1, workdir=tmp_path
    )
    assert [(r.config, r.chunk_frames, r.level) for r in rows] == [
        ("c4 l1", 4, 1),
        ("c16 l1", 16, 1),
        ("zstd", 64, 3),
    ]
    for r in rows:
        assert r.error is None, r.error
        assert r.verified is True  # random and sequential reads equal the recorded frames
        assert r.frames == 40
        assert r.write_fps > 0 and r.write_cpu_us > 0 and r.frame_bytes > 0
        assert 0 < r.random_p50_us <= r.random_p99_us
        assert r.seq_fps > 0
        assert 0 < r.misses <= 1
    assert rows[-1].misses == 1.0  # plain zstd decodes every time
    lim = rows[-1]
    assert (lim.bytes_vs_zstd, lim.random_vs_zstd, lim.seq_vs_zstd) == (1.0, 1.0, 1.0)
    assert bench.failed_checks(rows) == []
    assert list(tmp_path.iterdir()) == []


def test_cli_bench_reads_json(tmp_path):
    res = CliRunner().invoke(
        cli,
        ["bench", "--reads", "--frames", "12", "--chunk-frames", "4", "--repeat", "2", "--json"],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["config"] for r in rows] == ["c4 l-", "zstd"]
    assert all(r["rounds"] == 2 and r["verified"] is True for r in rows)


def test_cli_bench_refuses_frames_that_cannot_fit_in_memory_before_allocating():
    """Issue 18, defect 6: an impossible --frames was a MemoryError traceback."""
    from conftest import assert_one_line_error, run_cli

    line = assert_one_line_error(run_cli("bench", "--game", "noise", "--frames", "100000000000"))
    assert "would hold" in line and "--frames" in line


def test_cli_bench_envs_checks_memory_only_for_what_the_vector_bench_holds(monkeypatch):
    """``bench --envs 8 --frames 24000`` stepped live Assault copies but was refused for
    the CarRacing frames a default (``--game all``) capture would hold: the vector bench
    holds no --frames frames, so no game is checked; --reads checks only its one game."""
    import psutil
    from conftest import assert_one_line_error, run_cli

    real = psutil.virtual_memory()
    small = real._replace(available=2**30)  # 24000 Assault frames (2.4 GB) do not fit
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small)
    calls = []

    def fake_vector(envs, **kw):
        calls.append((envs, kw["steps"], kw["vector_mode"], kw["writers"]))
        return [bench.VectorResult("none", envs, kw["vector_mode"], 1, 10, steps_per_s=1.0)]

    monkeypatch.setattr(bench, "run_vector", fake_vector)
    monkeypatch.setattr(bench, "read_interleaved", lambda *a, **k: [])
    monkeypatch.setattr(bench, "capture", lambda *a, **k: None)
    res = run_cli("bench", "--envs", 8, "--frames", 24000, "--vector-mode", "async", "--writers")
    assert res.exit_code == 0, res.output
    assert calls == [(8, 3000, "async", True)]
    line = assert_one_line_error(run_cli("bench", "--reads", "--frames", 24000))
    assert "24000 assault frames would hold" in line


def test_cli_bench_checks_the_csv_path_before_the_run(tmp_path):
    from conftest import assert_one_line_error, run_cli

    bad = tmp_path / "missing" / "b.csv"
    line = assert_one_line_error(run_cli("bench", "--game", "noise", "--frames", "8", "--csv", bad))
    assert "--csv" in line and str(bad) in line
    assert not bad.parent.exists()
    # the probe leaves no file behind when the path is fine but the run fails later
    good = tmp_path / "b.csv"
    assert_one_line_error(
        run_cli("bench", "--game", "noise", "--frames", "1000000000000", "--csv", good)
    )
    assert not good.exists()


def test_torch_bench_reads_every_frame_exactly_in_every_mode(tmp_path):
    pytest.importorskip("torch")
    fs = bench.capture("assault", 300)
    rows = bench.run_torch(fs, rounds=1, workdir=tmp_path)
    assert [r.mode for r in rows] == list(bench.TORCH_MODES)
    assert not bench.failed_checks(rows), bench.format_table(rows, bench.TORCH_TABLE)
    assert all(r.items > 0 and r.items_per_s > 0 and r.cpu_us_per_item > 0 for r in rows)
    (iterable,) = [r for r in rows if r.mode == "iterable"]
    assert iterable.verified is True and iterable.items == 300
    if sys.platform == "linux":  # /proc/stat: what other processes took meanwhile
        assert all(r.others_cores is not None and 0 <= r.others_cores for r in rows)
    assert list(tmp_path.iterdir()) == []  # the temporary store is removed


def test_cli_bench_exports_measures_every_format_long_and_short(tmp_path):
    pytest.importorskip("rerun")
    pytest.importorskip("minari")
    args = ["bench", "--exports", "--frames", "40", "--repeat", "2", "--json"]
    result = CliRunner().invoke(cli, [*args, "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["format"]: r for r in json.loads(result.stdout)}
    assert list(rows) == ["parquet", "lerobot", "rrd", "minari"]
    for row in rows.values():
        assert row["error"] is None and row["progress_ok"] is True, row
        assert row["rounds"] == 2 and row["steps"] == 40 and row["short_steps"] == 4
        assert row["cpu_s"] > 0 and row["peak_mb"] >= 0 and row["out_mb"] > 0
    assert rows["parquet"]["vs_parquet"] == 1.0
    assert list(tmp_path.iterdir()) == []  # the stores and outputs are removed
