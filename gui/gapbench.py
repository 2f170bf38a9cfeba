"""Event-loop gaps of the Play tab: does playing or recording stall the UI?

The Play tab plays a game at 60 Hz with a seeded random policy while a 5 ms timer
records every gap between its ticks (an event-loop stall shows as a long gap). Modes on
the same game, interleaved round by round (the order rotates):

- ``idle``: no game at all, only the timer: what the machine itself adds (a loaded
  machine preempts the process; every other mode is read against this one);
- ``off``: playing, never recording;
- ``reset``: not recording, but the environment is reset with a seed where the others
  turn recording on (ALE reloads its ROM, holding the GIL, for 90-300 ms);
- ``thread``: recording turned on and off again, writer and sink as threads;
- ``process``: the same with a storage process.

Each mode runs with the game in each ``--placement``: ``process`` (the default: the
environment steps in a child process, the session thread hands its frames over) and
``thread`` (the environment steps on the session thread itself, sharing the GIL with
the event loop). Episodes are cut at ``--episode-steps`` actions (default 120, 2 s), so
every run passes through episode ends and seeded resets as well.

Timeline of a run: 1 s of play, recording on (``start``: until the recorder is armed,
plus 0.5 s), 3.5 s recording, recording off (``stop``: 1 s), 1 s of play. ``off`` follows
the same clock without recording. Per mode, the medians over the rounds of: the largest
gap of the whole run, of the start window and of the stop window, the 99th percentile
gap while recording, steps per second, episode ends, and how long "starting..." lasted.
Each gap is also told by its cause (``GapProbe``): ``cpu %`` is how much of the largest
gap this process ran (low: it waited for a core), ``own max``/``own start`` the largest
gaps it ran for at least half of (its own code: a thread holding the GIL, UI work).

Run it headless: ``QT_QPA_PLATFORM=offscreen python -m gui.gapbench --game assault``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GAMES = {"assault": "ALE/Assault-v5", "carracing": "CarRacing-v3"}
MODES = ("idle", "off", "reset", "thread", "process")
PLACEMENTS = ("process", "thread")

__all__ = ["GAMES", "MODES", "PLACEMENTS", "GapProbe", "GapResult", "measure", "run"]


@dataclass
class GapResult:
    """One mode of one game (medians over the rounds; gaps in ms)."""

    game: str
    placement: str  # where the environment steps: "process" or "thread"
    mode: str
    rounds: int
    max_gap_ms: float = 0.0
    max_cpu_share: float = 0.0  # how much of the largest gap the process itself ran
    own_max_gap_ms: float = 0.0  # largest gap the process ran for at least half of
    own_start_gap_ms: float = 0.0  # the same in the start window
    start_gap_ms: float = 0.0  # largest gap from "record on" until armed + 0.5 s
    stop_gap_ms: float = 0.0  # largest gap in the second after "record off"
    p99_gap_ms: float = 0.0  # while recording (off: the same window)
    steps_per_s: float = 0.0
    starting_s: float = 0.0  # how long the tab showed "starting..."
    episode_ends: float = 0.0  # episodes that ended during the run


class GapProbe:
    """A 5 ms precise timer; every gap between its ticks (event-loop stalls), with when
    it ended and how much CPU this process used during it (all its threads). The GUI
    tests measure with it too.

    The CPU tells a stall's cause: a gap during which the process ran for most of the
    time is its own doing (a thread holding the GIL, work on the UI thread); a gap with
    the process hardly running is the event loop waiting for a core (a loaded machine:
    other processes, the game's and the storage process included)."""

    #: A gap is the process's own when it ran for at least this share of it.
    OWN_SHARE = 0.5

    def __init__(self):
        from PySide6.QtCore import QElapsedTimer, Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.clock = QElapsedTimer()
        self.ends: list[float] = []
        self.gaps: list[float] = []
        self.cpu: list[float] = []  # ms of CPU the process used during each gap
        self._cpu0 = 0.0
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._cpu0 = time.process_time()
        self.clock.start()
        self.timer.start()

    def _tick(self) -> None:
        cpu = time.process_time()
        self.gaps.append(self.clock.nsecsElapsed() / 1e6)
        self.ends.append(time.perf_counter())
        self.cpu.append((cpu - self._cpu0) * 1e3)
        self._cpu0 = cpu
        self.clock.restart()

    def stop(self) -> None:
        self.timer.stop()

    @property
    def ticks(self) -> int:
        return len(self.gaps)

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps, default=0.0)

    def window(self, t0: float, t1: float, *, own: bool = False) -> list[float]:
        """The gaps that overlap ``[t0, t1]`` (a gap longer than the window counts); with
        ``own``, only those during which the process ran (``OWN_SHARE``)."""
        out = [
            g
            for g, e, c in zip(self.gaps, self.ends, self.cpu, strict=True)
            if e >= t0 and e - g / 1e3 <= t1 and (not own or c >= self.OWN_SHARE * g)
        ]
        return out or [0.0]

    @property
    def max_own_gap_ms(self) -> float:
        """The largest gap during which the process ran (its own doing, not the load)."""
        return max(self.window(-float("inf"), float("inf"), own=True))

    def cpu_share_of_max(self) -> float:
        """How much of the largest gap the process ran, 0..1 (low: the machine's load)."""
        if not self.gaps:
            return 0.0
        i = max(range(len(self.gaps)), key=self.gaps.__getitem__)
        return min(1.0, self.cpu[i] / self.gaps[i]) if self.gaps[i] else 0.0


def _pump(app, seconds: float, until=None) -> None:
    """Run the event loop for ``seconds`` (or until ``until()``)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        app.processEvents()
        if until is not None and until():
            return
        time.sleep(0.001)


def measure(
    app,
    env_id: str,
    mode: str,
    workdir: str | None = None,
    *,
    placement: str = "process",
    episode_steps: int = 120,
    freeze: bool = True,
) -> dict:
    """One run of the timeline (module docstring) in ``mode``."""
    from functools import partial

    from framestore import FrameStore
    from framestore.envs import make_env

    from ._play_tab import PlayTab
    from .models import PlaySession

    out = Path(tempfile.mkdtemp(prefix=f"gapbench-{mode}-", dir=workdir))
    store = FrameStore.open(out / "gaps.store")
    factory = partial(
        PlaySession,
        env_factory=partial(make_env, max_episode_steps=episode_steps),
        env_process=placement == "process",
    )
    tab = PlayTab(store, session_factory=factory)
    ends = [0]
    tab.stepped.connect(lambda r: ends.__setitem__(0, ends[0] + (r.terminated or r.truncated)))
    try:
        tab.show()
        tab.fps_override = 60
        if mode in ("thread", "process"):
            tab.writer_combo.setCurrentIndex(tab.writer_combo.findData(mode))
        tab.set_policy(lambda s: s.sample_action())
        if mode != "idle":
            tab.start(env_id, seed=1)
        if freeze:
            from .app import freeze_startup_objects

            freeze_startup_objects()  # as gui.app.run does once the window is up
        probe = GapProbe()
        probe.start()
        _pump(app, 1.0)
        t_on = time.perf_counter()
        steps0 = tab.session.frames_seen if tab.session else 0
        armed = t_on
        if mode == "reset":
            tab.reset()
        elif mode in ("thread", "process"):
            tab.record_btn.setChecked(True)
            _pump(app, 60.0, until=lambda: tab.session.armed)
            armed = time.perf_counter()
        _pump(app, 0.5)
        t_rec = time.perf_counter()
        _pump(app, 3.5)
        t_off = time.perf_counter()
        steps = (tab.session.frames_seen if tab.session else 0) - steps0
        if mode in ("thread", "process"):
            tab.record_btn.setChecked(False)
            stopping = tab.session.stop_recorder()
            _pump(app, 60.0, until=stopping.done)
        _pump(app, max(0.0, 1.0 - (time.perf_counter() - t_off)))
        t_end = time.perf_counter()
        _pump(app, 1.0)
        probe.stop()
        rec = probe.window(t_rec, t_off)
        return {
            "max_gap_ms": max(probe.gaps),
            "max_cpu_share": probe.cpu_share_of_max(),
            "own_max_gap_ms": probe.max_own_gap_ms,
            "own_start_gap_ms": max(probe.window(t_on, armed + 0.5, own=True)),
            "start_gap_ms": max(probe.window(t_on, armed + 0.5)),
            "stop_gap_ms": max(probe.window(t_off, t_end)),
            "p99_gap_ms": float(np.percentile(rec, 99)),
            "steps_per_s": steps / (t_off - t_on),
            "starting_s": armed - t_on,
            "episode_ends": ends[0],
        }
    finally:
        tab.shutdown()
        tab.deleteLater()
        store.close()
        shutil.rmtree(out, ignore_errors=True)


def run(
    games=("assault", "carracing"),
    rounds: int = 3,
    workdir: str | None = None,
    *,
    placements=PLACEMENTS,
    modes=MODES,
    episode_steps: int = 120,
):
    """Every mode of every game in every placement, ``rounds`` rounds interleaved; one
    ``GapResult`` per (game, placement, mode) with the medians."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    rows = []
    for game in games:
        cells = [(p, m) for p in placements for m in modes if p == placements[0] or m != "idle"]
        runs: dict[tuple[str, str], list[dict]] = {c: [] for c in cells}
        for r in range(rounds):
            for cell in cells[r % len(cells) :] + cells[: r % len(cells)]:
                print(f"gapbench: {game} round {r + 1}/{rounds}: {cell}", file=sys.stderr)
                runs[cell].append(
                    measure(
                        app,
                        GAMES[game],
                        cell[1],
                        workdir,
                        placement=cell[0],
                        episode_steps=episode_steps,
                    )
                )
        for placement, mode in cells:
            row = GapResult(game, placement if mode != "idle" else "-", mode, rounds)
            for key in asdict(row):
                if key not in ("game", "placement", "mode", "rounds"):
                    values = [d[key] for d in runs[(placement, mode)]]
                    setattr(row, key, statistics.median(values))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gui.gapbench", description=__doc__.split("\n")[0])
    p.add_argument("--game", choices=(*GAMES, "all"), default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--placement", choices=(*PLACEMENTS, "both"), default="both")
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES)
    )
    p.add_argument("--episode-steps", type=int, default=120)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    games = tuple(GAMES) if args.game == "all" else (args.game,)
    placements = PLACEMENTS if args.placement == "both" else (args.placement,)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"unknown mode(s) {', '.join(sorted(unknown))}")
    rows = run(
        games, args.rounds, placements=placements, modes=modes, episode_steps=args.episode_steps
    )
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    head = ("game      game-in mode    rounds  max gap ms  cpu %  own max ms  start gap ms  "
            "own start ms  stop gap ms  p99 gap ms  steps/s  ends  starting s")  # fmt: skip
    print(head)
    for r in rows:
        print(
            f"{r.game:<9} {r.placement:<7} {r.mode:<7} {r.rounds:>6}  {r.max_gap_ms:>10.1f}  "
            f"{100 * r.max_cpu_share:>5.0f}  {r.own_max_gap_ms:>10.1f}  {r.start_gap_ms:>12.1f}  "
            f"{r.own_start_gap_ms:>12.1f}  {r.stop_gap_ms:>11.1f}  {r.p99_gap_ms:>10.1f}  "
            f"{r.steps_per_s:>7.1f}  {r.episode_ends:>4.0f}  {r.starting_s:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
