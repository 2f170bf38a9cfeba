"""Work that must not run on the UI thread: frame loading for the replay viewer (one
worker QThread) and one-off store jobs (export, delete, gc, list refresh) on a small
QThreadPool. Results come back to the UI thread through queued signals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, QTimer, Signal, Slot

from framestore import FrameStore, FrameStoreError

from . import _compat  # noqa: F401  (first: guards a PySide6 refcount bug)


class _LoaderWorker(QObject):
    """Lives in the loader thread. Requests carry a generation number; any request older
    than the latest is skipped, so scrubbing never builds a backlog."""

    opened = Signal(int, object, int, bool, float)  # episode id, EpisodeInfo, rows, live, fps
    frame_ready = Signal(int, int, object, object)  # episode id, step, frame or None, StepInfo
    length_changed = Signal(int, int, bool)  # episode id, rows, live
    failed = Signal(int, str)

    def __init__(self, store: FrameStore, latest: Callable[[], int]):
        super().__init__()
        self.store = store
        self._latest = latest
        self._episode: int | None = None
        self._stream = "render"
        self._locs: list[tuple[int, Any]] = []
        self._live = False
        self.frames_loaded = 0
        self.chunks_prefetched = 0

    @Slot(int, int, str)
    def open(self, gen: int, episode_id: int, stream: str) -> None:
        try:
            ep = self.store.episode(episode_id)
            self._episode = episode_id
            self._stream = stream if stream in ep.streams else "render"
            self._locs = self.store.frame_locations(episode_id, stream=self._stream)
            self._live = ep.status == "recording"
            fps = 0.0
            try:
                fps = float(self.store.run(ep.run_id).config.get("render_fps") or 0.0)
            except (FrameStoreError, TypeError, ValueError):  # no run row, odd config: no fps
                pass
            self.opened.emit(episode_id, ep, len(self._locs), self._live, fps)
        except Exception as e:  # noqa: BLE001 - shown in the viewer
            self._episode = None
            self._locs = []
            self.failed.emit(episode_id, f"cannot open episode {episode_id}: {e}")

    @Slot(int)
    def poll(self, episode_id: int) -> None:
        """Pick up rows recorded since the last look (an episode still being recorded)."""
        if episode_id != self._episode:
            return
        try:
            ep = self.store.episode(episode_id)
            more = self.store.frame_locations(
                episode_id, start=len(self._locs), stream=self._stream
            )
            self._locs.extend(more)
            live = ep.status == "recording"
            if more or live != self._live:
                self._live = live
                self.length_changed.emit(episode_id, len(self._locs), live)
        except Exception as e:  # noqa: BLE001
            self.failed.emit(episode_id, str(e))

    @Slot(int, int, int, int)
    def load(self, gen: int, episode_id: int, step: int, direction: int) -> None:
        if gen != self._latest() or episode_id != self._episode:
            return  # a newer request is queued
        if not 0 <= step < len(self._locs):
            return
        try:
            loc = self._locs[step][1]
            frame = (
                None
                if loc is None
                else self.store.read_at(
                    loc, episode_id, self._locs[step][0], copy=False, stream=self._stream
                )
            )
            rows = self.store.read_steps(episode_id, step, step + 1)
            info = rows[0] if rows else None
        except Exception as e:  # noqa: BLE001 - corrupt data: say so, never show wrong pixels
            self.failed.emit(episode_id, f"step {step}: {e}")
            return
        self.frames_loaded += 1
        self.frame_ready.emit(episode_id, step, frame, info)
        if gen == self._latest():
            self._prefetch(step, loc, direction)

    def _prefetch(self, step: int, loc, direction: int) -> None:
        """Decode the next chunk in the playing direction into the reader's cache."""
        if loc is None:
            return
        here = (loc[0], loc[1])
        i = step
        for _ in range(4096):  # chunks hold at most a few hundred frames
            i += 1 if direction >= 0 else -1
            if not 0 <= i < len(self._locs):
                return
            nxt = self._locs[i][1]
            if nxt is not None and (nxt[0], nxt[1]) != here:
                try:
                    self.store.reader.read_chunk(nxt[0], nxt[1])
                    self.chunks_prefetched += 1
                except Exception:  # the load itself will report it
                    pass
                return


class FrameLoader(QObject):
    """Loads replay frames on a worker QThread with the store's SegmentReader (whose chunk
    cache makes sequential playback decode each chunk once) and prefetches the next chunk.

    ``open(episode_id)`` then ``request(step)``; results arrive as ``frame_ready``. While
    the open episode is being recorded, its new rows are polled and ``length_changed``
    fires. Call ``close()`` before the store closes.
    """

    opened = Signal(int, object, int, bool, float)
    frame_ready = Signal(int, int, object, object)
    length_changed = Signal(int, int, bool)
    failed = Signal(int, str)

    _open = Signal(int, int, str)
    _load = Signal(int, int, int, int)
    _poll = Signal(int)

    def __init__(self, store: FrameStore, parent: QObject | None = None, *, poll_ms: int = 250):
        super().__init__(parent)
        self._gen = 0
        self._gen_lock = threading.Lock()
        self.episode_id: int | None = None
        self.live = False
        self.thread = QThread()
        self.thread.setObjectName("gui-frame-loader")
        self.worker = _LoaderWorker(store, self._latest)
        self.worker.moveToThread(self.thread)
        self._open.connect(self.worker.open)
        self._load.connect(self.worker.load)
        self._poll.connect(self.worker.poll)
        self.worker.opened.connect(self._on_opened)
        self.worker.frame_ready.connect(self.frame_ready)
        self.worker.length_changed.connect(self._on_length)
        self.worker.failed.connect(self.failed)
        self.thread.finished.connect(self.worker.deleteLater)
        self.thread.start()
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(poll_ms)
        self._poll_timer.timeout.connect(self._poll_live)

    def _latest(self) -> int:
        with self._gen_lock:
            return self._gen

    def _next_gen(self) -> int:
        with self._gen_lock:
            self._gen += 1
            return self._gen

    def open(self, episode_id: int, stream: str = "render") -> None:
        """Open an episode's ``stream`` (render when the episode has no such stream)."""
        self.episode_id = int(episode_id)
        self.live = False
        self._poll_timer.stop()
        self._open.emit(self._next_gen(), self.episode_id, stream)

    def request(self, step: int, direction: int = 1) -> None:
        if self.episode_id is None:
            return
        self._load.emit(self._next_gen(), self.episode_id, int(step), int(direction))

    def _on_opened(self, eid, info, rows, live, fps) -> None:
        if eid == self.episode_id:
            self._set_live(live)
        self.opened.emit(eid, info, rows, live, fps)

    def _on_length(self, eid, rows, live) -> None:
        if eid == self.episode_id:
            self._set_live(live)
        self.length_changed.emit(eid, rows, live)

    def _set_live(self, live: bool) -> None:
        self.live = live
        if live:
            self._poll_timer.start()
        else:
            self._poll_timer.stop()

    def _poll_live(self) -> None:
        if self.episode_id is not None:
            self._poll.emit(self.episode_id)

    def close(self) -> None:
        self._poll_timer.stop()
        self.thread.quit()
        self.thread.wait()


class _TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(object)
    progress = Signal(int, int)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[Callable[[int, int], None]], Any], signals: _TaskSignals):
        super().__init__()
        self.setAutoDelete(True)
        self.fn = fn
        self.signals = signals

    def run(self) -> None:
        try:
            result = self.fn(self.signals.progress.emit)
        except BaseException as e:  # noqa: BLE001 - delivered to the UI thread
            self.signals.failed.emit(e)
        else:
            self.signals.done.emit(result)


class TaskRunner(QObject):
    """Runs ``fn(progress)`` on a private QThreadPool; ``on_done(result)``,
    ``on_error(exc)`` and ``on_progress(done, total)`` are called on the UI thread."""

    busy_changed = Signal(int)

    def __init__(self, parent=None, *, threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._live: set[_TaskSignals] = set()

    @property
    def busy(self) -> int:
        return len(self._live)

    def run(
        self,
        fn: Callable[[Callable[[int, int], None]], Any],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        sig = _TaskSignals(self)  # lives in the UI thread: its signals are queued here
        self._live.add(sig)

        def finish():
            self._live.discard(sig)
            sig.deleteLater()
            self.busy_changed.emit(len(self._live))

        def done(result):
            finish()
            if on_done is not None:
                on_done(result)

        def failed(exc):
            finish()
            if on_error is not None:
                on_error(exc)

        sig.done.connect(done)
        sig.failed.connect(failed)
        if on_progress is not None:
            sig.progress.connect(on_progress)
        self.busy_changed.emit(len(self._live))
        self.pool.start(_Task(fn, sig))

    def wait(self, msecs: int = -1) -> bool:
        return self.pool.waitForDone(msecs)
