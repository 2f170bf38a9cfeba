"""A CHUNK's steps block (docs/FORMAT.md, "Steps block"): the metadata of the steps a
chunk describes (``StepMeta``, one step's values as the catalogue's ``steps`` row holds
them), column by column in one zstd frame. The columns 0.3.x appended (shared streams,
observations) are laid out by ``streams``; the CHUNK head that carries the block's
length and count is ``_format``'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard

from ..errors import CorruptRecord
from .streams import parse_shared, stream_columns  # the 0.3.x columns

MAX_STEPS_BLOCK_BYTES = 256 * 1024 * 1024  # a CHUNK's steps block, decompressed
_STEPS_HEAD = struct.Struct("<HHI")  # head size, reserved, M
_NULL_TEXT = 0xFFFFFFFF
STEP_TERMINATED, STEP_TRUNCATED, STEP_HAS_FRAME, STEP_DROPPED = 1, 2, 4, 8
STEP_NO_REWARD, STEP_NO_WALL_TIME = 16, 32


@dataclass(slots=True)
class StepMeta:
    """One step's metadata as the catalogue's ``steps`` row holds it (the values written
    into a CHUNK's steps block). ``action``, ``info`` and ``frame_shape`` are the stored
    text; ``has_frame``: its frame is in the chunk (set by the writer); ``dropped``: it
    was recorded without its frame (the ``drop`` policy)."""

    episode_id: int
    step: int
    action: str | None
    reward: float | None
    terminated: bool
    truncated: bool
    info: str | None
    wall_time: float | None
    frame_shape: str | None
    has_frame: bool = False
    dropped: bool = False
    shared: tuple[int, ...] = ()  # streams (>= 1) whose frame here is the render frame
    observation: bytes | None = None  # non-image observation entries, typed binary

    @property
    def flags(self) -> int:
        return (
            (STEP_TERMINATED if self.terminated else 0)
            | (STEP_TRUNCATED if self.truncated else 0)
            | (STEP_HAS_FRAME if self.has_frame else 0)
            | (STEP_DROPPED if self.dropped else 0)
            | (STEP_NO_REWARD if self.reward is None else 0)
            | (STEP_NO_WALL_TIME if self.wall_time is None else 0)
        )


def _text_column(values: list[str | bytes | None] | tuple[str | bytes | None, ...]) -> bytes:
    try:  # the common case: ASCII text only, one character a byte (one join, one encode)
        joined = "".join(values)  # type: ignore[arg-type]
    except TypeError:  # a None or bytes
        joined = None
    if joined is not None and joined.isascii():
        return struct.pack(f"<{len(values)}I", *map(len, values)) + joined.encode()  # type: ignore[arg-type]
    data = [v.encode() if isinstance(v, str) else v for v in values]
    lengths = struct.pack(f"<{len(data)}I", *(_NULL_TEXT if d is None else len(d) for d in data))
    return lengths + b"".join(d for d in data if d is not None)


def _flags_column(steps: list[StepMeta]) -> bytes:
    """Each step's ``StepMeta.flags``, one byte each (the property inlined: no call per
    step)."""
    return bytes(
        [
            (STEP_TERMINATED if s.terminated else 0)
            | (STEP_TRUNCATED if s.truncated else 0)
            | (STEP_HAS_FRAME if s.has_frame else 0)
            | (STEP_DROPPED if s.dropped else 0)
            | (STEP_NO_REWARD if s.reward is None else 0)
            | (STEP_NO_WALL_TIME if s.wall_time is None else 0)
            for s in steps
        ]
    )


def pack_steps(steps: list[StepMeta], compressor: zstandard.ZstdCompressor) -> bytes:
    """A CHUNK's steps block (compressed with ``compressor``, content size set). Built
    column by column from one pass over the steps (the writer's per-step Python)."""
    m = len(steps)
    if not m:  # every column empty
        return compressor.compress(_STEPS_HEAD.pack(_STEPS_HEAD.size, 0, 0))
    # (list comprehensions: faster here than generator expressions or attrgetter tuples)
    rewards = [s.reward for s in steps]
    walls = [s.wall_time for s in steps]
    flags = _flags_column(steps)
    if None in rewards:
        rewards = [0.0 if r is None else r for r in rewards]
    if None in walls:
        walls = [0.0 if w is None else w for w in walls]
    raw = b"".join(
        (
            _STEPS_HEAD.pack(_STEPS_HEAD.size, 0, m),
            struct.pack(f"<{m}I", *[s.step for s in steps]),
            flags,
            struct.pack(f"<{m}d", *rewards),
            struct.pack(f"<{m}d", *walls),
            _text_column([s.action for s in steps]),
            _text_column([s.info for s in steps]),
            _text_column([s.frame_shape for s in steps]),
            *stream_columns(steps, _text_column),
        )
    )
    return compressor.compress(raw)


def unpack_steps(
    block: bytes | memoryview,
    count: int,
    episode_id: int,
    *,
    segment: int | str = "?",
    offset: int = 0,
) -> list[StepMeta]:
    """The steps of a CHUNK's steps block (``count`` from the chunk head; ``episode_id``
    is given to each). Raises ``CorruptRecord`` for a block that does not parse."""

    def bad(why: str) -> CorruptRecord:
        return CorruptRecord(segment, offset, f"bad steps block: {why}")

    try:
        size = zstandard.frame_content_size(block)
    except zstandard.ZstdError as e:
        raise bad(str(e)) from None
    if size < 0 or size > MAX_STEPS_BLOCK_BYTES:
        raise bad(f"content size {size} unknown or above {MAX_STEPS_BLOCK_BYTES}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(block, max_output_size=size)
    except zstandard.ZstdError as e:
        raise bad(str(e)) from None
    try:
        head_size, _r, m = _STEPS_HEAD.unpack_from(raw)
        if m != count or head_size < _STEPS_HEAD.size:
            raise bad(f"{m} steps where the chunk says {count}")
        pos = head_size
        steps = struct.unpack_from(f"<{m}I", raw, pos)
        pos += 4 * m
        flags = raw[pos : pos + m]
        pos += m
        rewards = struct.unpack_from(f"<{m}d", raw, pos)
        pos += 8 * m
        walls = struct.unpack_from(f"<{m}d", raw, pos)
        pos += 8 * m
        texts = []
        for n in range(5):  # action, info, frame shape; 0.3.x: shared streams, observations
            if n >= 3 and pos >= len(raw):  # an appended column that is absent: all NULL
                texts.append([None] * m)
                continue
            lengths = struct.unpack_from(f"<{m}I", raw, pos)
            pos += 4 * m
            column: list[str | None] = []
            for ln in lengths:
                if ln == _NULL_TEXT:
                    column.append(None)
                    continue
                if pos + ln > len(raw):
                    raise bad("text runs past the block")
                column.append(raw[pos : pos + ln] if n == 4 else raw[pos : pos + ln].decode())
                pos += ln
            texts.append(column)
        texts[3] = [parse_shared(t) for t in texts[3]]
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise bad(str(e)) from None
    if len(flags) != m:
        raise bad("block too short")
    return [
        StepMeta(
            episode_id, st, a,
            None if f & STEP_NO_REWARD else r,
            bool(f & STEP_TERMINATED), bool(f & STEP_TRUNCATED), i,
            None if f & STEP_NO_WALL_TIME else w,
            sh, bool(f & STEP_HAS_FRAME), bool(f & STEP_DROPPED), sd, ob,
        )
        for st, f, r, w, a, i, sh, sd, ob in zip(steps, flags, rewards, walls, *texts, strict=True)
    ]  # fmt: skip
