"""What the producer and its storage process say to each other.

Commands (producer -> storage process) travel on a pipe as length-prefixed pickles of
tuples whose first item is a ``Cmd``; a chunk is ONE command (its frames are already in
a ring slot, its steps ride along as tuples). Replies (storage process -> producer) are ``multiprocessing`` Connection
messages, rare: ready, flushed, noted (a note segment written), closed, and background
errors.

Exceptions cross as ``(type, args, attributes)`` and are rebuilt without calling their
``__init__`` (framestore's errors build their message from fields, so pickling them the
usual way would build it twice).
"""

from __future__ import annotations

import pickle
import struct
from enum import IntEnum
from typing import Any

from ..._format.steps import StepMeta
from ...errors import WriterFailed

__all__ = [
    "NO_FRAME",
    "Cmd",
    "LOGGERS",
    "decode_error",
    "encode_error",
    "frame_message",
    "split_messages",
    "unwire_steps",
    "wire_steps",
]

#: The loggers framestore and telemetry log to; the storage process forwards their
#: records to the producer, whose handlers and levels then apply.
LOGGERS = ("framestore", "telemetry")

#: The ``slot`` of a chunk without frames (its steps only).
NO_FRAME = -1

_LEN = struct.Struct("<I")


class Cmd(IntEnum):
    """Command kinds (the first item of each command tuple)."""

    # (CHUNK, slot, shape, stream key, stream index, frame keys, wire steps, row shapes)
    CHUNK = 0
    EVENT = 2  # (EVENT, event)
    RING = 3  # (RING, name, slot_bytes, slots)
    BATCH_SIZE = 4  # (BATCH_SIZE, rows)
    CUT = 5  # (CUT,)
    FLUSH = 6  # (FLUSH, token, timeout, frames_only)
    CLOSE = 7  # (CLOSE,)
    NOTE = 8  # (NOTE, token, records, first_id, timeout): write a note segment (rm)


#: A step on the wire: ``StepMeta``'s fields in order (a tuple pickles 3x faster).
WireStep = tuple


def wire_steps(steps: list[StepMeta]) -> list[WireStep]:
    """A chunk's steps as plain tuples for its ``CHUNK`` command."""
    return [
        (
            s.episode_id,
            s.step,
            s.action,
            s.reward,
            s.terminated,
            s.truncated,
            s.info,
            s.wall_time,
            s.frame_shape,
            s.has_frame,
            s.dropped,
            s.shared,
            s.observation,
        )  # fmt: skip
        for s in steps
    ]


def unwire_steps(wired: list[WireStep]) -> list[StepMeta]:
    """The ``StepMeta`` of ``wire_steps``'s tuples."""
    return [StepMeta(*t) for t in wired]


def frame_message(msg: tuple) -> bytes:
    """One command as bytes for the pipe: its length, then its pickle."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


def split_messages(buf: bytes) -> tuple[list[Any], bytes]:
    """The complete commands at the start of ``buf`` and the bytes left over."""
    out = []
    pos = 0
    end = len(buf)
    while end - pos >= 4:
        (n,) = _LEN.unpack_from(buf, pos)
        if end - pos - 4 < n:
            break
        out.append(pickle.loads(buf[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out, buf[pos:]


def encode_error(exc: BaseException) -> tuple[Any, ...]:
    """An exception as something a Connection can carry."""
    attrs = {k: v for k, v in vars(exc).items() if not k.startswith("__")}
    encoded = (type(exc), exc.args, attrs, str(exc))
    try:
        pickle.dumps(encoded)
    except Exception:  # noqa: BLE001 - an unpicklable type or attribute: keep the text
        return (WriterFailed, (str(exc),), {}, str(exc))
    return encoded


def decode_error(encoded: tuple[Any, ...]) -> BaseException:
    """The exception ``encode_error`` encoded (same type, message and fields)."""
    cls, args, attrs, text = encoded
    try:
        exc = cls.__new__(cls)
        exc.args = args
        exc.__dict__.update(attrs)
        str(exc)
    except Exception:  # noqa: BLE001 - a type that cannot be rebuilt: keep the text
        return WriterFailed(text)
    return exc
