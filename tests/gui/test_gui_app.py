"""``framestore gui`` as a new user meets it: what it checks before Qt starts (a display,
the step asked for, the options), what a screenshot writes, and what play writes to the
store (nothing, unless ``--record``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from conftest import assert_one_line_error, record_episodes, run_cli  # noqa: E402

from framestore import FrameStore  # noqa: E402

pytestmark = pytest.mark.qt


def gui(*args: str, env: dict[str, str] | None = None, timeout: float = 90):
    """``framestore gui ...`` in a process of its own (Qt's own messages included)."""
    base = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "tools", "gui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


@pytest.fixture
def thirty(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    (eid,) = record_episodes(path, assault_frames, episodes=1, steps=30, overrides={})
    return path, eid


@pytest.mark.parametrize("frame", ["-1", "30", "9999"])
def test_a_frame_out_of_range_is_one_line_naming_the_range(thirty, tmp_path, frame):
    path, eid = thirty
    out = tmp_path / "s.png"
    proc = gui(str(path), "--replay", str(eid), "--frame", frame, "--screenshot", str(out))
    line = assert_one_line_error(proc, code=2)  # no Qt plugin chatter either
    assert f"has no step {frame} (30 steps): --frame must be in 0..29" in line
    assert not out.exists()


def test_screenshot_format_follows_the_extension_or_is_refused(qtbot, thirty, tmp_path):
    path, eid = thirty
    jpg = tmp_path / "shot.jpg"
    result = run_cli("gui", path, "--replay", eid, "--frame", 3, "--screenshot", jpg)
    assert result.exit_code == 0, result.output
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes in a .jpg
    tiff = tmp_path / "shot.tiff"
    line = assert_one_line_error(run_cli("gui", path, "--replay", eid, "--screenshot", tiff))
    assert "cannot write .tiff files; use .bmp, .jpeg, .jpg, .png" in line
    assert not tiff.exists()


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_play_steps_below_one_are_refused(tmp_path, steps):
    args = ["gui", tmp_path / "s.store", "--play", "CartPole-v1", "--steps", steps]
    line = assert_one_line_error(run_cli(*args, "--screenshot", tmp_path / "p.png"))
    assert f"--steps must be at least 1 (got {steps})" in line
    assert not (tmp_path / "s.store").exists()
    line = assert_one_line_error(run_cli("gui", tmp_path / "s.store", "--record"))
    assert "--record needs --play" in line


def _contents(path) -> tuple:
    with FrameStore.open(path, readonly=True) as st:
        return [r.id for r in st.runs()], [(e.id, e.steps) for e in st.episodes()]


def test_play_screenshot_writes_nothing_to_the_store_unless_asked(qtbot, thirty, tmp_path):
    path, _ = thirty
    before = _contents(path)
    segments = sorted(p.name for p in (path / "segments").iterdir())
    args = ["--play", "MountainCar-v0", "--steps", "40", "--fast"]
    result = run_cli("gui", path, *args, "--screenshot", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert _contents(path) == before
    assert sorted(p.name for p in (path / "segments").iterdir()) == segments
    # a store that does not exist is not created for it either
    result = run_cli("gui", tmp_path / "new.store", *args, "--screenshot", tmp_path / "b.png")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "new.store").exists()


@pytest.mark.parametrize("env_id", ["ALE/Assault-v5", "MountainCar-v0"])
def test_recorded_play_holds_steps_plus_one_rows_in_every_env(qtbot, tmp_path, env_id):
    path = tmp_path / "s.store"
    args = ["--play", env_id, "--steps", "40", "--fast", "--record"]
    result = run_cli("gui", path, *args, "--screenshot", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    with FrameStore.open(path, readonly=True) as st:
        (ep,) = st.episodes()
        steps = st.read_steps(ep.id)
    # like `record --max-steps 40`: 40 actions after the reset, 41 rows, and complete,
    # its last step truncated (a time limit), not "interrupted"
    assert ep.steps == len(steps) == 41 and ep.env_id == env_id
    assert steps[0].action is None and all(s.action is not None for s in steps[1:])
    assert ep.status == "complete" and steps[-1].truncated


def test_no_display_is_one_line_not_a_qt_abort(tmp_path, thirty):
    path, _ = thirty
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "gui", str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    line = assert_one_line_error(proc, code=2)
    assert "no display" in line and "QT_QPA_PLATFORM=offscreen" in line and "xvfb-run" in line


def test_missing_xcb_libraries_name_the_debian_packages():
    from gui._display import display_problem

    text = display_problem(
        {"DISPLAY": ":99"}, libraries=["libframestore-missing.so.1", "libxcb-icccm.so.4"]
    )
    assert text is not None and "libframestore-missing.so.1" in text
    assert "apt-get install" in text and "QT_QPA_PLATFORM=offscreen" in text
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert display_problem({}, platform="wayland").startswith("no display")


HOLD_LOCK = """
import sys, time
from framestore import FrameStore
store = FrameStore.open(sys.argv[1])
rec = store.recorder("ALE/Assault-v5")
print("recording", flush=True)
time.sleep(120)
"""


def test_recording_into_a_store_another_process_records_into_is_exit_4_in_one_line(
    tmp_path,
):
    path = tmp_path / "live.store"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "recording"
        args = ["--play", "ALE/Assault-v5", "--record", "--steps", "5"]
        proc = gui(str(path), *args, "--screenshot", str(tmp_path / "p.png"))
        # one line and exit 4 (StoreLocked): no "nanobind: leaked ..." lines after it
        line = assert_one_line_error(proc, code=4)
        assert "locked by another writer" in line and f"pid {holder.pid}" in line
        assert not (tmp_path / "p.png").exists()
    finally:
        holder.kill()
        holder.wait()


def test_published_stores_open_read_only_in_the_gui(qtbot, thirty, tmp_path, s3):
    path, eid = thirty
    pub = tmp_path / "pub"
    url = f"s3://{s3.bucket()}/runs/pub"
    for dest in (pub, url):
        assert run_cli("publish", path, dest).exit_code == 0
    for where in (pub, url):
        shot = tmp_path / f"{'dir' if where == pub else 's3'}.png"
        result = run_cli("gui", where, "--replay", eid, "--frame", 7, "--screenshot", shot)
        assert result.exit_code == 0, result.output
        assert shot.read_bytes()[:4] == b"\x89PNG"
        args = ["--play", "CartPole-v1", "--record", "--screenshot", tmp_path / "r.png"]
        line = assert_one_line_error(run_cli("gui", where, *args))
        assert "a published store is read-only" in line and str(where) in line
    # a URL is a URL: not a path that lost a slash ("s3:/bucket/...: no such store")
    line = assert_one_line_error(
        run_cli(
            "gui", f"s3://{s3.bucket()}/none", "--replay", 1, "--screenshot", tmp_path / "n.png"
        )
    )
    assert "s3:/" not in line.replace("s3://", "")
