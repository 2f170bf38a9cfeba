"""What the producer and its storage process say to each other.

Commands (producer -> storage process) travel on a pipe as length-prefixed pickles of
tuples whose first item is a ``Cmd``; a step is ONE small tuple (its frame is already in
a ring slot). Replies (storage process -> producer) are ``multiprocessing`` Connection
messages, rare: ready, flushed, closed, and background errors.

Exceptions cross as ``(type, args, attributes)`` and are rebuilt without calling their
``__init__`` (framestore's errors build their message from fields, so pickling them the
usual way would build it twice).
"""

from __future__ import annotations

import pickle
import struct
from enum import IntEnum
from typing import Any

from .errors import WriterFailed

__all__ = [
    "DROPPED",
    "NO_FRAME",
    "Cmd",
    "decode_error",
    "encode_error",
    "frame_message",
    "split_messages",
]

#: The ``slot`` of a step without a frame, and of a frame the ``drop`` policy dropped.
NO_FRAME = -1
DROPPED = -2

_LEN = struct.Struct("<I")


class Cmd(IntEnum):
    """Command kinds (the first item of each command tuple)."""

    STEP = (
        0  # (STEP, episode, step, action, reward, term, trunc, info, wall, slot, shape, shape_text)
    )
    BATCH = 1  # (BATCH, StepBatch fields..., slots, shapes)
    EVENT = 2  # (EVENT, event)
    RING = 3  # (RING, name, slot_bytes, slots)
    BATCH_SIZE = 4  # (BATCH_SIZE, rows)
    CUT = 5  # (CUT,)
    FLUSH = 6  # (FLUSH, token, timeout, frames_only)
    CLOSE = 7  # (CLOSE,)


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
