"""Observations recorded with a step (issue 20): ``record_step(observation=obs)`` splits
an observation (an array, or a Dict space's dict of them) into

- image entries (uint8, 2 or more dimensions, frame stacks included): frame streams
  named ``observation`` (a plain array) or ``observation.<key>`` (a dict's entry);
- small non-image entries (at most ``MAX_INLINE_OBSERVATION`` bytes each: state vectors,
  scalars, discrete values): typed binary in the step row (``pack_observation``);
- larger non-image entries: frame streams of their bytes (the stream's ``dtype`` says
  how to read them back).

``assemble`` puts a step's parts back together (``FrameStore.read_observation``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._format import RENDER_STREAM
from .._format.streams import (
    MAX_INLINE_OBSERVATION,
    OBS_DTYPES,
    OBS_ENTRY,
    OBS_HEAD,
    OBS_VERSION,
    check_stream_name,
    itemsize,
    stored_shape,
)
from ..catalog import format_shape
from ..disk.codecs import check_frame
from ..errors import InvalidFrame, InvalidInput
from ._streams import StreamInput

__all__ = [
    "OBSERVATION_STREAM",
    "ObservationParts",
    "assemble",
    "pack_observation",
    "split_observation",
    "unpack_observation",
    "with_observation",
]

#: The stream (or, for a dict, the prefix of the streams) of image observations.
OBSERVATION_STREAM = "observation"


@dataclass(frozen=True)
class ObservationParts:
    """An observation split for recording: its frame streams and its typed binary."""

    streams: tuple[StreamInput, ...]
    inline: bytes | None


def _entries(obs: Any, name: str, out: list[tuple[str, Any]]) -> None:
    if isinstance(obs, Mapping):
        if not obs:
            raise InvalidInput(f"observation {name or '(root)'} is an empty dict")
        for key, value in obs.items():
            if not isinstance(key, str):
                raise InvalidInput(f"observation keys must be strings, got {key!r}")
            _entries(value, f"{name}.{key}" if name else key, out)
        return
    out.append((name, obs))


def _array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.name not in OBS_DTYPES:
        raise InvalidInput(
            f"observation {name or '(array)'}: dtype {arr.dtype} cannot be recorded "
            f"(one of {', '.join(OBS_DTYPES)})"
        )
    if arr.size == 0:
        raise InvalidInput(f"observation {name or '(array)'} is empty (shape {arr.shape})")
    return arr


def _stream(name: str, arr: np.ndarray) -> StreamInput:
    """A frame stream of ``arr``: images in their chunk layout, other arrays as bytes."""
    stream = f"{OBSERVATION_STREAM}.{name}" if name else OBSERVATION_STREAM
    check_stream_name(stream)
    if arr.dtype == np.uint8 and arr.ndim >= 2:
        stored = arr.reshape(stored_shape(arr.shape))
        dtype = "uint8"
    else:
        little = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        stored = little.reshape(-1).view(np.uint8).reshape(1, -1)
        dtype = arr.dtype.name
    try:
        check_frame(stored)
    except InvalidFrame as e:
        raise InvalidFrame(f"stream {stream!r}: {e}") from None
    return StreamInput(stream, stored, format_shape(arr.shape), False, dtype)


def split_observation(obs: Any) -> ObservationParts:
    """``obs`` split as the module docstring says; ``InvalidInput`` for what cannot be
    recorded (before anything is queued)."""
    entries: list[tuple[str, Any]] = []
    _entries(obs, "", entries)
    streams: list[StreamInput] = []
    inline: list[tuple[str, np.ndarray]] = []
    for name, value in entries:
        arr = _array(name, value)
        image = arr.dtype == np.uint8 and arr.ndim >= 2
        if image or arr.nbytes > MAX_INLINE_OBSERVATION:
            streams.append(_stream(name, arr))
        else:
            inline.append((name, arr))
    if len(inline) > 255:
        raise InvalidInput(f"{len(inline)} observation entries; at most 255")
    return ObservationParts(tuple(streams), pack_observation(inline) if inline else None)


def with_observation(
    extra: tuple[StreamInput, ...], parts: ObservationParts, render: np.ndarray | None
) -> tuple[StreamInput, ...]:
    """``extra`` and the observation's streams (one name once; an image equal to the
    render frame is stored once)."""
    names = {s.name for s in extra}
    out = list(extra)
    for s in parts.streams:
        if s.name in names or s.name == RENDER_STREAM:
            raise InvalidInput(f"stream {s.name!r} given twice (in frames= and observation=)")
        if render is not None and s.dtype == "uint8" and s.shape == format_shape(render.shape):
            same = s.frame is render or np.array_equal(s.frame.reshape(render.shape), render)
            if same:
                s = replace(s, shared=True)
        out.append(s)
    return tuple(out)


def pack_observation(entries: list[tuple[str, Any]]) -> bytes:
    """The typed binary of observation entries ``[(name, array)]`` (docs/FORMAT.md)."""
    parts = [OBS_HEAD.pack(OBS_VERSION, len(entries))]
    for name, arr in entries:
        raw, code = name.encode(), list(OBS_DTYPES).index(arr.dtype.name) + 1
        parts += [OBS_ENTRY.pack(len(raw), code, arr.ndim), raw]
        little = arr.astype("<" + arr.dtype.str[1:]).tobytes()  # C order, little-endian
        parts += [struct.pack(f"<{arr.ndim}I", *arr.shape), little]
    return b"".join(parts)


def unpack_observation(data: bytes) -> list[tuple[str, str, tuple[int, ...], bytes]]:
    """``[(name, dtype, shape, little-endian bytes)]`` of a typed observation binary;
    ``ValueError`` for one that does not parse."""
    try:
        version, count = OBS_HEAD.unpack_from(data)
        if version != OBS_VERSION:
            raise ValueError(f"observation encoding version {version}")
        pos = OBS_HEAD.size
        out = []
        for _ in range(count):
            nlen, code, ndim = OBS_ENTRY.unpack_from(data, pos)
            pos += OBS_ENTRY.size
            name = bytes(data[pos : pos + nlen]).decode()
            pos += nlen
            if not 1 <= code <= len(OBS_DTYPES):
                raise ValueError(f"dtype code {code}")
            shape = struct.unpack_from(f"<{ndim}I", data, pos)
            pos += 4 * ndim
            dtype = list(OBS_DTYPES)[code - 1]
            size = math.prod(shape) * itemsize(dtype)
            if size > MAX_INLINE_OBSERVATION or pos + size > len(data):
                raise ValueError("entry runs past the data")
            out.append((name, dtype, tuple(shape), bytes(data[pos : pos + size])))
            pos += size
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None
    return out


def _set(out: dict, name: str, value: Any) -> None:
    keys = name.split(".")
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    out[keys[-1]] = value


def assemble(
    inline: bytes | None, streams: Mapping[str, Callable[[], np.ndarray]]
) -> np.ndarray | dict | None:
    """A step's observation from its typed binary and its observation streams
    (``{stream name: read its frame}``): an array, or a dict as recorded; None when
    none was recorded."""
    entries: list[tuple[str, np.ndarray]] = []
    if inline is not None:
        for name, dtype, shape, data in unpack_observation(inline):
            arr = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
            entries.append((name, arr.astype(dtype)))
    for stream, read in streams.items():
        if stream == OBSERVATION_STREAM:
            entries.append(("", read()))
        elif stream.startswith(OBSERVATION_STREAM + "."):
            entries.append((stream[len(OBSERVATION_STREAM) + 1 :], read()))
    if not entries:
        return None
    if len(entries) == 1 and entries[0][0] == "":
        return entries[0][1]
    out: dict = {}
    for name, value in entries:
        _set(out, name, value)
    return out
