"""The storage process: the frame writer and the SQLite sink of one recording, fed by the
producer through a shared-memory frame ring and a pipe of commands (``_client``).

It runs a ``ThreadStorage`` (the same ``FrameStorageService`` writer and
``TelemetryDBSink`` the thread placement runs in the producer). Chunks arrive whole, one
``CHUNK`` command each, their frames in a ring slot: they are handed to the writer
as they are (compressed straight from the slot, no copy), their rows go to the sink once
they are written, and the slot is freed then. The main thread reads commands in order.

Lifetime: it ends when the producer says ``CLOSE`` (everything committed, segment sealed,
lock released, ``closed`` replied), or when the producer is gone (the command pipe hits
end-of-file, or the parent pid changes): it then writes and commits what it already has,
unlinks the shared memory the producer can no longer unlink, and exits. SIGINT and
SIGTERM are ignored: a Ctrl-C reaches the whole process group, and the producer, not the
storage process, decides when recording ends.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import sys
import threading
import time
from dataclasses import replace
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ...disk._refs import FrameRef
from ...errors import FrameStoreError, WriterFailed
from ...settings import Settings
from .._chunks import Chunk
from .._storage import ThreadStorage
from ._ring import Control, Counter, FrameRing
from ._wire import LOGGERS, NO_FRAME, Cmd, encode_error, split_messages, unwire_steps

__all__ = ["main", "serve"]

_READ_BYTES = 1 << 20
_PARENT_POLL_S = 0.25


class _ForwardLogs(logging.Handler):
    """Sends each record, formatted, to the producer (which re-emits it)."""

    def __init__(self, server: _Server):
        super().__init__()
        self._server = server

    def emit(self, record: logging.LogRecord) -> None:
        try:
            d = dict(record.__dict__)
            d["msg"] = record.getMessage()
            d["args"] = None
            if record.exc_info:
                d["exc_text"] = logging.Formatter().formatException(record.exc_info)
            d["exc_info"] = None
            d.pop("message", None)
            self._server.reply("log", d)
        except Exception:  # noqa: BLE001 - logging must never break the storage process
            self.handleError(record)


class _Server:
    """The storage process's state: its storage, the rings, the reply channel."""

    def __init__(
        self,
        storage_args: tuple[Path, Path, Settings, str | None, int],
        control: Control,
        replies: Connection,
        log_levels: dict[str, int] | None,
    ):
        self.control = control
        self.replies = replies
        self._reply_lock = threading.Lock()
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [_ForwardLogs(self)]
            logger.propagate = False
            logger.setLevel((log_levels or {}).get(name, logging.WARNING))
        self.ring: FrameRing | None = None  # the current ring (none before the first frame)
        root, db_path, s, store_id, first_segment_id = storage_args
        # The producer decides what to drop, and bounds every queue: here nothing blocks.
        self.storage = ThreadStorage(
            root,
            db_path,
            replace(s, policy="block"),
            lambda exc: self._report(exc, "writer"),
            on_sink_error=lambda exc: self._report(exc, "sink"),
            on_written=self._released,
            on_committed=self._committed,
            sink_queue=2 * s.sink_queue + 64,
            store_id=store_id,
            first_segment_id=first_segment_id,
        )

    # ----------------------------------------------------------------- replies
    def reply(self, *msg: Any) -> None:
        with self._reply_lock:
            try:
                self.replies.send(msg)
            except OSError:  # the producer is gone; nobody to tell
                pass

    def _report(self, exc: BaseException, source: str) -> None:
        """The writer's or the sink's ``on_error`` (their threads)."""
        self.reply("error", source, encode_error(exc))

    # ----------------------------------------------------------------- progress
    def _released(self, chunk: Chunk) -> None:
        """A chunk is written and its rows went to the sink (writer thread): free its
        slot, publish the numbers."""
        v = self.control.values
        if chunk.frames is not None:
            ring, slot = chunk.buffer  # type: ignore[misc]
            ring.states[slot] = 0
        m = self.storage.frame_metrics()
        v[Counter.BYTES_OUT] = m.bytes_out
        v[Counter.CHUNKS_WRITTEN] = m.chunks_written
        v[Counter.SEGMENTS_SEALED] = m.segments_sealed
        v[Counter.CURRENT_SEGMENT] = 0 if m.current_segment is None else m.current_segment + 1
        v[Counter.BYTES_RELEASED] += chunk.nbytes
        v[Counter.FRAMES_RELEASED] += len(chunk.refs)  # last: the producer reuses room after it

    def _committed(self, weight: int) -> None:
        """A sink commit (sink thread): publish the numbers, then the credit."""
        v = self.control.values
        m = self.storage.sink_metrics()
        v[Counter.STEPS_COMMITTED] = m.steps_committed
        v[Counter.EVENTS_COMMITTED] = m.events_committed
        v[Counter.BATCHES] = m.batches
        v[Counter.SINK_FLUSH_US] = int(m.last_flush_ms * 1000)
        v[Counter.SINK_MAX_FLUSH_US] = int(m.max_flush_ms * 1000)
        v[Counter.CHECKPOINTS] = m.checkpoints
        v[Counter.WEIGHT_COMMITTED] += weight

    # ----------------------------------------------------------------- commands
    def _blocks(self) -> list[Any]:
        """The shared-memory blocks this process maps: the ring (if any), the counters."""
        return [self.control] if self.ring is None else [self.ring, self.control]

    def handle(self, msg: tuple) -> bool:
        """Carry out one command (not a step: see ``rows``); False once it was ``CLOSE``."""
        kind = msg[0]
        if kind == Cmd.CHUNK:
            self.chunk(msg)
        elif kind == Cmd.EVENT:
            self.storage.offer(msg[1])
        elif kind == Cmd.RING:
            _, name, slot_bytes, slots = msg
            # The producer replaces a ring only once it drained: unmap the old one (if a
            # written chunk still holds a view of it, it stays mapped until exit).
            if self.ring is not None:
                self.ring.close()
                self.ring = None
            self.ring = FrameRing.attach(name, slot_bytes, slots)
        elif kind == Cmd.BATCH_SIZE:
            self.storage.set_batch_size(msg[1])
        elif kind == Cmd.CUT:
            self.storage.cut()
        elif kind == Cmd.FLUSH:
            self._flush(*msg[1:])
        elif kind == Cmd.NOTE:
            self._note(*msg[1:])
        elif kind == Cmd.CLOSE:
            return False
        return True

    def chunk(self, msg: tuple) -> None:
        """One ``CHUNK`` command: the chunk, its frames where they lie in the ring, to
        the writer."""
        _, slot, shape, key, stream_index, frame_keys, wired, row_shapes = msg
        frames = None
        buffer = None
        if slot != NO_FRAME:
            ring = self.ring
            assert ring is not None
            frames = ring.view(slot, tuple(shape))
            buffer = (ring, slot)
        frame_shape = None if shape is None else tuple(shape[1:])
        refs = [FrameRef(None, (key, k), frame_shape, stream=stream_index) for k in frame_keys]
        steps = unwire_steps(wired)
        self.storage.hand_off(Chunk(key, stream_index, frames, refs, steps, buffer, row_shapes))

    def _flush(self, token: int, timeout: float | None, frames_only: bool) -> None:
        try:
            if frames_only:
                self.storage.flush_frames(timeout)
            else:
                self.storage.flush(timeout)
        except BaseException as e:  # noqa: BLE001 - the producer raises it
            self.reply("flushed", token, encode_error(e))
            return
        self.reply("flushed", token, None)

    def _note(self, token: int, records: list[bytes], first_id: int, timeout: float | None) -> None:
        """A note segment (an ``rm``'s tombstone) written by this process's writer,
        which holds the lock and hands out the segment ids; the producer commits the
        rm once the reply says where it is."""
        try:
            where = self.storage.write_note(records, first_id, timeout)
        except BaseException as e:  # noqa: BLE001 - the producer raises it
            self.reply("noted", token, None, encode_error(e))
            return
        self.reply("noted", token, where, None)

    # ----------------------------------------------------------------- shutdown
    def shutdown(self, producer_gone: bool, unregister: bool) -> None:
        """Commit what is queued and close; reply ``closed`` (with the first error)."""
        error = None
        try:
            self.storage.close()
        except BaseException as e:  # noqa: BLE001 - reported to the producer
            error = encode_error(e)
        if producer_gone:
            # Nobody else can unlink them now (the producer unlinked the rings it
            # replaced).
            for block in self._blocks():
                block.unlink()
                if unregister:  # the producer's tracker is ours: drop its entry too
                    resource_tracker.unregister("/" + block.name, "shared_memory")
        self.reply("closed", error)
        for block in self._blocks():
            block.close()


def _parent_gone(parent_pid: int, within: float = 1.0) -> bool:
    """Whether this process was reparented (its producer died), waiting up to ``within``
    seconds for it: a dying producer's resource tracker may remove its blocks a moment
    before the kernel reparents its children."""
    deadline = time.monotonic() + within
    while os.getppid() == parent_pid:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _read_commands(server: _Server, fd: int, parent_pid: int) -> bool:
    """Read and carry out commands until ``CLOSE`` (True) or the producer is gone
    (False)."""
    pending = b""
    pipe_read = server.control.values
    while True:
        ready, _, _ = select.select([fd], [], [], _PARENT_POLL_S)
        if not ready:
            if os.getppid() != parent_pid:  # reparented: the producer died
                return False
            continue
        data = os.read(fd, _READ_BYTES)
        if not data:
            return False
        pending += data
        messages, pending = split_messages(pending)
        for msg in messages:
            try:
                if not server.handle(msg):
                    return True
            except FrameStoreError as e:
                # The writer's or the sink's own failure was reported through on_error
                # already; anything else (a queue that stayed full) is reported here.
                server.reply("error", "storage", encode_error(e))
            except FileNotFoundError as e:
                # A ring the producer announced and then died with: its resource tracker
                # removed it. Not a defect: commit what came before, as for any death.
                if msg[0] == Cmd.RING and _parent_gone(parent_pid):
                    return False
                server.reply("error", "storage", encode_error(e))
                return True
            except Exception as e:  # noqa: BLE001 - a defect here: say so, then stop
                # The producer learns of it at its next call; what was queued before is
                # committed by the shutdown that follows (the producer is still there).
                server.reply("error", "storage", encode_error(e))
                return True
        # Counted once handled: the producer keeps the pipe's backlog bounded by it.
        pipe_read[Counter.PIPE_READ] += len(data)


def serve(
    storage_args: tuple[Path, Path, Settings, str | None, int],
    control_name: str,
    commands: int,
    replies: int,
    parent_pid: int,
    log_levels: dict[str, int] | None = None,
    inherited: tuple[int, ...] = (),
    shared_tracker: bool = False,
) -> None:
    """The storage process's body.

    Args:
        storage_args: ``(store root, framestore.db path, settings, store id, the
            writer's first segment id)``.
        control_name: the ``Control`` block's name.
        commands: the read end of the command pipe (a descriptor).
        replies: the write end of the reply pipe.
        parent_pid: the producer's pid (a change means it died).
        log_levels: the producer's effective level of each of ``LOGGERS``.
        inherited: the producer's ends of both pipes, to close (``fork`` copies them).
        shared_tracker: the producer's resource tracker is this process's too (``fork``):
            unlinking a block after the producer died then also unregisters it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in inherited:
        os.close(fd)  # else the command pipe never reaches end-of-file
    reply_conn = Connection(replies, readable=False)
    try:
        control = Control.attach(control_name)
    except FileNotFoundError:
        # The producer died right after creating it, and its resource tracker removed
        # it: nobody is left to serve (no traceback: nothing went wrong here).
        try:
            reply_conn.send(("failed", encode_error(WriterFailed("the producer is gone"))))
        except OSError:
            pass
        return
    try:
        server = _Server(storage_args, control, reply_conn, log_levels)
    except BaseException as e:  # noqa: BLE001 - the producer raises it (StoreLocked, ...)
        reply_conn.send(("failed", encode_error(e)))
        control.close()
        return
    reply_conn.send(("ready", os.getpid()))
    closing = False
    try:
        closing = _read_commands(server, commands, parent_pid)
    finally:
        server.shutdown(producer_gone=not closing, unregister=shared_tracker)


def main() -> None:
    """``spawn``: the arguments come pickled on stdin (``_launch.BOOTSTRAP``)."""
    args = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    serve(**args)
