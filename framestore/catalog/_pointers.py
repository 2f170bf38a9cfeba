"""The ``segments`` table and the frame pointers that point into segments: what ``gc``,
``verify``, ``recover`` and ``merge`` read and move."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .._format import MAX_SEGMENT_ID, MAX_STREAM_KEY
from .._format.streams import stored_shape
from ..disk.segments import relative_segment_path
from ._base import Connection
from ._episodes import format_shape
from ._validate import MAX_SLOT, MAX_SQLITE_INT, STREAM_SHAPE, Cell, is_int

SEGMENT_STATES = ("active", "sealed", "compacting", "obsolete")

# Orphan step rows (no episode row) count as live: never drop their frames.
_LIVE = "(e.status IS NULL OR e.status != 'deleted')"


@dataclass(frozen=True)
class PointerRow:
    """One step row's frame pointer. ``episode``, ``step`` and ``shape`` are as stored
    (not trusted); ``segment``, ``offset`` and ``slot`` are None when the stored value
    is not an integer in range (``valid`` is then False)."""

    episode: int
    step: int
    segment: int | None
    offset: int | None
    slot: int | None
    shape: str | None
    stream_key: int | None = None  # what the chunk's stream key must be (the episode id
    # unless the episode was merged from another store)
    stream: int = 0  # the frame's stream index (m003's step_frames rows: >= 1); ``shape``
    # is then its chunk layout (``stored_shape``)

    @property
    def expected_key(self) -> int:
        return self.episode if self.stream_key is None else self.stream_key

    @property
    def valid(self) -> bool:
        return None not in (self.segment, self.offset, self.slot)

    @classmethod
    def of(
        cls, episode, step, segment, offset, slot, shape, stream_key=None, stream=0
    ) -> PointerRow:
        if stream and isinstance(shape, str) and STREAM_SHAPE.match(shape):
            shape = format_shape(stored_shape(tuple(int(d) for d in shape.split("x"))))
        return cls(
            episode,
            step,
            _in_range(segment, MAX_SEGMENT_ID),
            _in_range(offset, MAX_SQLITE_INT),
            _in_range(slot, MAX_SLOT),
            shape,
            None
            if stream_key is None
            else Cell("episodes", f"id {episode!r}").int(
                "stream_key", stream_key, lo=0, hi=MAX_STREAM_KEY
            ),
            stream if type(stream) is int else -1,
        )


def _in_range(value: object, hi: int) -> int | None:
    return int(value) if is_int(value) and 0 <= value <= hi else None


def _segment_cell(sid: object) -> Cell:
    return Cell("segments", f"id {sid!r}")


def _pointer(seg: object, off: object, where: str) -> tuple[int, int]:
    c = Cell("steps", where)
    return (
        c.int("frame_segment", seg, lo=0, hi=MAX_SEGMENT_ID),
        c.int("frame_offset", off, lo=0),
    )


class Segments:
    """The ``segments`` table: each segment file's path and state."""

    def __init__(self, db: Connection):
        self._db = db

    def rows(self) -> dict[int, tuple[str, str]]:
        """``{segment id: (path, state)}`` as the segments table records them."""
        out = {}
        for sid, path, state in self._db.rows("SELECT id, path, state FROM segments"):
            c = _segment_cell(sid)
            out[c.int("id", sid, lo=0, hi=MAX_SEGMENT_ID)] = (
                c.text("path", path, null=False),
                c.text("state", state, null=False, choices=SEGMENT_STATES),
            )
        return out

    def states(self) -> dict[int, str]:
        """``{segment id: state}``."""
        return {sid: state for sid, (_path, state) in self.rows().items()}

    def obsolete(self) -> list[int]:
        """Segments marked ``obsolete`` (their files are to be deleted)."""
        return [
            _segment_cell(r[0]).int("id", r[0], lo=0, hi=MAX_SEGMENT_ID)
            for r in self._db.rows("SELECT id FROM segments WHERE state = 'obsolete'")
        ]

    def record(
        self,
        segment: int,
        state: str,
        size: int,
        live_bytes: int = 0,
        *,
        header_id: int | None = None,
    ) -> None:
        """Insert or update a segment's row (path is always the canonical one).
        ``header_id``: for a segment merged from another store, the id its file header
        names (kept once set)."""
        if state not in SEGMENT_STATES:
            raise ValueError(f"unknown segment state {state!r}")
        self._db.exec(
            "INSERT INTO segments (id, path, state, bytes, live_bytes, created, header_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "path = excluded.path, state = excluded.state, bytes = excluded.bytes, "
            "live_bytes = excluded.live_bytes, "
            "header_id = COALESCE(excluded.header_id, segments.header_id)",
            (segment, relative_segment_path(segment), state, size, live_bytes, time.time(),
             header_id),
        )  # fmt: skip

    def set_live_bytes(self, live: dict[int, int]) -> None:
        """``segments.live_bytes`` of existing rows (``{segment: bytes}``)."""
        self._db.exec_many(
            "UPDATE segments SET live_bytes = ? WHERE id = ?", [(b, s) for s, b in live.items()]
        )

    def merged(self) -> dict[int, int]:
        """``{segment id: the id its file header names}`` for segments merged from another
        store (their bytes, header included, were copied unchanged; docs/FORMAT.md)."""
        if not self._db.has_m002:
            return {}
        return dict(self._db.rows("SELECT id, header_id FROM segments WHERE header_id IS NOT NULL"))

    def set_states(self, segments: Iterable[int], state: str) -> None:
        if state not in SEGMENT_STATES:
            raise ValueError(f"unknown segment state {state!r}")
        self._db.exec_many(
            "UPDATE segments SET state = ? WHERE id = ?", [(state, s) for s in segments]
        )

    def forget(self, segments: Iterable[int]) -> None:
        """Remove segments' rows (their files are gone)."""
        self._db.exec_many("DELETE FROM segments WHERE id = ?", [(s,) for s in segments])


class Pointers:
    """Frame pointers (step rows' and, with m003, ``step_frames``' rows): which chunks
    are referenced, and moving or clearing pointers."""

    def __init__(self, db: Connection):
        self._db = db

    def count(self, segments: Iterable[int]) -> int:
        """Step rows (of any episode) whose frame lives in one of ``segments``."""
        ids = list(segments)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return self._db.one(
            f"SELECT COUNT(*) FROM {self._db.frames()} WHERE frame_segment IN ({marks})", ids
        )[0]

    def referenced_segments(self) -> set[int]:
        """Segments that step rows point into (values that cannot be a segment id are
        left out: the value checks report them)."""
        return {
            r[0]
            for r in self._db.rows(
                f"SELECT DISTINCT frame_segment FROM {self._db.frames()} "
                "WHERE typeof(frame_segment) = "
                f"'integer' AND frame_segment BETWEEN 0 AND {MAX_SEGMENT_ID}"
            )
        }

    def live_chunk_offsets(self, segment: int, *, include_deleted: bool = False) -> list[int]:
        """Offsets of the chunk records of ``segment`` that step rows point at (of live
        episodes, or of every episode with ``include_deleted``)."""
        cond = "1" if include_deleted else _LIVE
        return [
            _pointer(segment, r[0], f"a row of segment {segment}")[1]
            for r in self._db.rows(
                f"SELECT DISTINCT s.frame_offset FROM {self._db.frames()} s "
                "LEFT JOIN episodes e ON e.id = s.episode_id "
                f"WHERE s.frame_segment = ? AND {cond} ORDER BY s.frame_offset",
                [segment],
            )
        ]

    def live_chunks(self) -> dict[int, list[int]]:
        """``{segment: [chunk offsets]}`` referenced by live episodes."""
        out: dict[int, list[int]] = {}
        for seg, off in self._db.rows(
            f"SELECT DISTINCT s.frame_segment, s.frame_offset FROM {self._db.frames()} s "
            "JOIN episodes e ON e.id = s.episode_id "
            "WHERE s.frame_segment IS NOT NULL AND e.status != 'deleted'"
        ):
            seg, off = _pointer(seg, off, "a row")
            out.setdefault(seg, []).append(off)
        return out

    def live_count(self, segment: int) -> int:
        """Step rows of live episodes (or orphans) pointing into ``segment``."""
        return self._db.one(
            f"SELECT COUNT(*) FROM {self._db.frames()} s "
            f"LEFT JOIN episodes e ON e.id = s.episode_id WHERE s.frame_segment = ? AND {_LIVE}",
            [segment],
        )[0]

    def _key_column(self) -> str:
        """The stream key a step's chunk must carry (NULL for orphan rows: the id)."""
        return self._db.m002("e.stream_key", "NULL")

    def iter_live(self) -> Iterator[PointerRow]:
        """Every frame pointer of a live episode, ordered by segment and offset."""
        for r in self._db.iter(
            "SELECT s.episode_id, s.step, s.frame_segment, s.frame_offset, s.frame_slot, "
            f"s.frame_shape, {self._key_column()}, s.stream FROM {self._db.frames()} s "
            f"LEFT JOIN episodes e ON e.id = s.episode_id "
            f"WHERE s.frame_segment IS NOT NULL AND {_LIVE} "
            "ORDER BY s.frame_segment, s.frame_offset, s.episode_id, s.stream, s.step"
        ):
            yield PointerRow.of(*r)

    def all(self) -> list[PointerRow]:
        """Every frame pointer, of every episode (``recover`` checks them all)."""
        return [
            PointerRow.of(*r)
            for r in self._db.rows(
                "SELECT s.episode_id, s.step, s.frame_segment, s.frame_offset, s.frame_slot, "
                f"s.frame_shape, {self._key_column()} FROM steps s "
                "LEFT JOIN episodes e ON e.id = s.episode_id WHERE s.frame_segment IS NOT NULL"
            )
        ]

    def pointed_frames(self) -> set[tuple[int, int, int]]:
        """Every ``(segment, offset, slot)`` some step row (of any stream) points at."""
        return {
            (seg, off, slot)
            for seg, off, slot in self._db.iter(
                f"SELECT frame_segment, frame_offset, frame_slot FROM {self._db.frames()} "
                "WHERE frame_segment IS NOT NULL"
            )
        }

    def steps_with_frames(self) -> dict[int, set[int]]:
        """``{episode: {steps whose frame is stored}}``."""
        served: dict[int, set[int]] = {}
        for ep, step in self._db.iter(
            "SELECT episode_id, step FROM steps WHERE frame_segment IS NOT NULL"
        ):
            served.setdefault(ep, set()).add(step)
        return served

    def repoint_chunks(self, moves: Mapping[tuple[int, int], tuple[int, int]]) -> int:
        """Move every pointer at chunk ``(segment, offset)`` to its new place (slots keep
        their index: chunks are copied whole). Returns the step rows changed (of the
        render stream; ``step_frames`` rows of other streams move likewise)."""
        rows = [(ns, no, os_, oo) for (os_, oo), (ns, no) in moves.items()]
        if self._db.has_m003:
            self._db.exec_many(
                "UPDATE step_frames SET frame_segment = ?, frame_offset = ? "
                "WHERE frame_segment = ? AND frame_offset = ?",
                rows,
            )
        return self._db.exec_many(
            "UPDATE steps SET frame_segment = ?, frame_offset = ? "
            "WHERE frame_segment = ? AND frame_offset = ?",
            rows,
        )

    def relink(self, rows: Iterable[tuple[int, int, int, int, int, str]]) -> int:
        """Point ``(episode, step, segment, offset, slot, shape)`` rows at another copy of
        their frame (``recover`` re-links rows whose segment is gone)."""
        return self._db.exec_many(
            "UPDATE steps SET frame_segment = ?, frame_offset = ?, frame_slot = ?, "
            "frame_shape = ? WHERE episode_id = ? AND step = ?",
            [(seg, off, slot, shape, ep, k) for ep, k, seg, off, slot, shape in rows],
        )

    def clear(self, keys: Iterable[tuple[int, int]]) -> int:
        """Forget the frame pointers of ``(episode, step)`` rows (their frames are lost)."""
        return self._db.exec_many(
            "UPDATE steps SET frame_segment = NULL, frame_offset = NULL, frame_slot = NULL "
            "WHERE episode_id = ? AND step = ?",
            keys,
        )

    def deleted_step_rows(self) -> int:
        """Step rows of deleted episodes (``gc`` removes them)."""
        return self._db.one(
            "SELECT COUNT(*) FROM steps WHERE episode_id IN "
            "(SELECT id FROM episodes WHERE status = 'deleted')"
        )[0]

    def drop_step_rows(self, episode_ids: list[int]) -> int:
        """Remove the step rows of ``episode_ids`` (every stream); returns the steps
        rows removed (``recover``: rows gc had dropped, rebuilt from segments)."""
        if not episode_ids:
            return 0
        marks = ",".join("?" * len(episode_ids))
        if self._db.has_m003:
            self._db.exec(f"DELETE FROM step_frames WHERE episode_id IN ({marks})", episode_ids)
        return self._db.exec(f"DELETE FROM steps WHERE episode_id IN ({marks})", episode_ids)

    def drop_deleted_step_rows(self) -> int:
        """Remove the step rows of deleted episodes (their ``episodes`` rows stay: they
        tell ``recover`` never to bring the frames back), and of their other streams."""
        if self._db.has_m003:
            self._db.exec(
                "DELETE FROM step_frames WHERE episode_id IN "
                "(SELECT id FROM episodes WHERE status = 'deleted')"
            )
        return self._db.exec(
            "DELETE FROM steps WHERE episode_id IN "
            "(SELECT id FROM episodes WHERE status = 'deleted')"
        )
