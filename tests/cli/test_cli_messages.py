"""What a new user reads: usage errors on one line, paths and failures in words, library
warnings said once in words and counted (``-v`` for the LOG lines), no stray lines from
SDL or the Atari emulator."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import assert_one_line_error, record_episodes, run_cli

from framestore import FrameStore


# ------------------------------------------------------------------ usage errors (13)
@pytest.mark.parametrize(
    "args, words",
    [
        (["record", "x.store", "--env", "CartPole-v1", "--episodes", "x"], "'x' is not a valid"),
        (["ls"], "Missing argument 'STORE'"),
        (["nope"], "No such command 'nope'"),
        (["--bogus"], "No such option '--bogus'"),
        (["gc", "x.store", "--threshold", "2"], "--threshold"),
        (["export", "x.store", "-o", "x.mp4"], "give exactly one of --episode ID or --run ID"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(tmp_path, args, words):
    result = run_cli(*args)
    line = assert_one_line_error(result, code=2)
    assert words in line and "Usage:" not in result.output and "Try '" not in result.output
    assert "--help" in line  # where to read more


def test_help_still_shows_the_usage():
    result = run_cli("record", "--help")
    assert result.exit_code == 0 and result.output.startswith("Usage: ")
    assert "record [OPTIONS] STORE" in result.output.splitlines()[0]


# ------------------------------------------------------------------ paths in words (13)
def test_store_under_a_file_is_described_in_words(tmp_path):
    result = run_cli("record", "/dev/null/x.store", "--env", "CartPole-v1")
    line = assert_one_line_error(result, code=2)
    assert "/dev/null/x.store" in line and "/dev/null is not a directory" in line
    assert "Errno" not in line


@pytest.mark.parametrize("out", ["/proc/framestore-test.gif", "/proc/framestore-test-dir/"])
def test_export_into_an_unwritable_place_names_the_users_path(tmp_path, assault_frames, out):
    (eid, *_) = record_episodes(tmp_path / "s.store", assault_frames, episodes=1, steps=5)
    result = run_cli("export", tmp_path / "s.store", "--episode", eid, "-o", out)
    line = assert_one_line_error(result, code=2)
    assert f"cannot write {out.rstrip('/')}" in line
    assert ".partial" not in line and "Errno" not in line


@pytest.mark.parametrize(
    "fmt, out",
    [
        ("parquet", "/proc/framestore-test-pq"),
        ("lerobot", "/proc/framestore-test-lr"),
        ("minari", "/proc/framestore-test-v0"),
        ("rrd", "/proc/framestore-test.rrd"),  # was rerun's own RuntimeError, a traceback
    ],
)
def test_dataset_export_into_an_unwritable_place_names_the_users_path(
    tmp_path, assault_frames, fmt, out
):
    record_episodes(tmp_path / "s.store", assault_frames, episodes=1, steps=5)
    result = run_cli("export", tmp_path / "s.store", "--format", fmt, "-o", out)
    line = assert_one_line_error(result, code=2)
    assert f"cannot write {out}: /proc does not accept new files" in line
    assert ".partial" not in line and "Errno" not in line


# ------------------------------------------------------------------ warnings (9)
SLOW_DB = "LOG934 queue=db steps=53 resolve_ms=253.5 commit_ms=0.9 ms=254.5 threshold_ms=250"
BEHIND = (
    "LOG932 queue=frames queue_depth=1700 queue_bytes=10 bound=2048 bound_bytes=8388608 "
    "policy=block"
)


def test_warnings_are_said_once_in_words_and_counted(capsys):
    from tools import _warnings

    tally = _warnings.install()
    log = logging.getLogger("telemetry")
    for _ in range(3):
        log.warning(SLOW_DB)
    logging.getLogger("framestore").warning(BEHIND)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "framestore: warning: saving 53 steps to the database took 254 ms (over 250 ms): "
        "the disk or the machine is busy; consider --durability fast",
        "framestore: warning: the frame writer fell behind: its queue reached 83% of "
        "8.0 MiB (1700 of 2048 frames); consider --preset throughput",
    ]
    assert tally.summary() == (
        "the frame writer fell behind 1 time, 3 slow database writes "
        "(LOG932, LOG934; `framestore -v` prints each)"
    )
    verbose = _warnings.install(verbose=True)
    log.warning(SLOW_DB)
    assert capsys.readouterr().err == f"framestore: warning: {SLOW_DB}\n"
    assert verbose.summary() is None


def test_record_says_a_slow_write_in_words_and_counts_the_rest(tmp_path, monkeypatch):
    from telemetry.sink import TelemetryDBSink

    make_sink = TelemetryDBSink.__init__

    def every_commit_is_slow(self, *args, **kwargs):
        make_sink(self, *args, **kwargs)
        self.slow_flush_ms = -1.0

    monkeypatch.setattr(TelemetryDBSink, "__init__", every_commit_is_slow)
    args = ["record", tmp_path / "s.store", "--env", "MountainCar-v0", "--episodes", "2"]
    result = run_cli(*args)  # 402 steps: several commits of the sink
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(said) == 1 and "steps to the database took" in said[0], said
    assert "LOG93" not in said[0]
    assert "slow database writes (LOG934; `framestore -v` prints each)" in result.stdout
    verbose = run_cli("-v", *args)
    assert verbose.exit_code == 0 and verbose.stderr.count("LOG934 queue=db") > 1


def _headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDL_", "XDG_"))}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "ALE/Assault-v5"])
def test_record_prints_no_sdl_or_emulator_lines(tmp_path, env_id):
    """pygame's SDL says ``XDG_RUNTIME_DIR is invalid`` without a display; ale-py prints a
    banner. Neither is for the user of ``framestore record``."""
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "record", str(tmp_path / "s.store"), "--env", env_id]
        + ["--max-steps", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_headless_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr and "A.L.E" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if not ln.startswith("framestore: warn")] == []
    assert json.loads(proc.stdout)["steps"] >= 2
    with FrameStore.open(tmp_path / "s.store", readonly=True) as st:
        assert st.read_frame(st.episodes()[0].id, 0).ndim == 3
    # Replaying makes the environment again: just as quiet.
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "verify", str(tmp_path / "s.store"), "--replay"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_headless_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr


def test_a_progress_bar_of_finished_work_ends_at_100_percent(monkeypatch):
    """The last progress call may report a count short of the total (an export's last
    frame, a recording whose episodes ended early): the bar stopped at 99%."""
    import io

    from tools._progress import ProgressBars

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for failed in (False, True):
        err = Terminal()
        monkeypatch.setattr(sys, "stderr", err)
        try:
            with ProgressBars(True) as bars:
                bars("x", 0, 100)
                bars("x", 99, 100)
                if failed:
                    raise RuntimeError("stopped")
        except RuntimeError:
            pass
        monkeypatch.undo()
        last = err.getvalue().rsplit("\r", 1)[-1]
        assert ("100%" in last) != failed and ("99%" in last) == failed, last
