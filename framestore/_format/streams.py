"""The on-disk layout of named frame streams and observations (docs/FORMAT.md, "Several
streams" and "Observations"): stream names and counts, how a stream frame is laid out in
a chunk, and the observations' typed binary. ``_format`` holds the rest of the format;
the two together are every size, layout and name of it.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidInput

__all__ = [
    "MAX_INLINE_OBSERVATION",
    "MAX_STREAMS",
    "OBS_DTYPES",
    "OBS_ENTRY",
    "OBS_HEAD",
    "OBS_VERSION",
    "STREAM_NAME",
    "check_stream_name",
    "itemsize",
    "parse_shared",
    "shared_text",
    "stored_shape",
    "stream_columns",
]

MAX_STREAMS = 64  # streams of one episode, render included (CHUNK stream index: u16)
#: A stream's name: what ``record_step(frames={name: ...})`` and ``--stream`` take.
STREAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def stored_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The chunk layout of a stream frame of ``shape`` (docs/FORMAT.md, "Several
    streams"): ``HxW`` and ``HxWxC`` with ``C`` in 1, 3, 4 as they are; any other uint8
    array of 3 or more dimensions as rows of its last one or two (a ``(4, 84, 84)``
    frame stack as ``336x84``, ``(4, 84, 84, 3)`` as ``336x84x3``). Its own shape is
    kept in its pointer row (``frame_shape``), so readers give it back as it was."""
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        return shape
    if shape[-1] in (1, 3, 4):
        return (math.prod(shape[:-2]) * shape[-2], shape[-2], shape[-1])
    return (math.prod(shape[:-1]), shape[-1])


# --------------------------------------------------------------------------- observations
#: Non-image observation entries up to this many bytes each go into the step row (and
#: steps block) as typed binary; larger ones become a frame stream of their bytes.
MAX_INLINE_OBSERVATION = 1024
#: The dtypes an observation entry may have, in code order (code = index + 1), with the
#: struct code of one value (its size).
OBS_DTYPES = dict(zip(
    ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
     "float32", "float64", "bool"), "BbHhIiQqefd?", strict=True,
))  # fmt: skip
OBS_HEAD = struct.Struct("<BB")  # version (1), entries K
OBS_ENTRY = struct.Struct("<BBB")  # name length, dtype code (index in OBS_DTYPES + 1), ndim
OBS_VERSION = 1


def itemsize(dtype: str) -> int:
    """Bytes of one value of an ``OBS_DTYPES`` dtype."""
    return struct.calcsize(OBS_DTYPES[dtype])


def check_stream_name(name: object) -> str:
    """``name`` if it can name a stream (``STREAM_NAME``), else ``InvalidInput``."""
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise InvalidInput(
            f"bad stream name {name!r}: a letter, then up to 63 letters, digits, '_', '.' or '-'"
        )
    return name


# --------------------------------------------------------------------------- steps block
def shared_text(shared: tuple[int, ...]) -> str | None:
    """The steps block's ``shared`` column: ``"1,2"``, or NULL when no stream shares."""
    return ",".join(map(str, shared)) if shared else None


def parse_shared(text: str | None) -> tuple[int, ...]:
    """A ``shared`` column value back (``ValueError`` for one that is not)."""
    out = tuple(int(v) for v in text.split(",")) if text else ()  # ValueError: not numbers
    if any(not 0 < v < MAX_STREAMS for v in out):
        raise ValueError(f"shared streams {text!r}")
    return out


def stream_columns(steps: Sequence[Any], column: Callable[[list], bytes]) -> tuple[bytes, ...]:
    """The steps block's columns appended in 0.3.x, as many as needed (none for a block
    of render frames only, which then reads as in 0.3.0): ``shared`` (text), then
    ``observation`` (bytes) when a step has one; ``column`` packs one column."""
    obs = [s.observation for s in steps].count(None) != len(steps)
    if not obs and not any([s.shared for s in steps]):
        return ()
    shared = column([shared_text(s.shared) for s in steps])
    return (shared, column([s.observation for s in steps])) if obs else (shared,)
