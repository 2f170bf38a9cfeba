"""The FrameStore facade: one directory holding a SQLite catalogue and segment files.

``FrameStore.open(path)`` gives reading (episodes, steps, frames) and ``recorder(...)``
composes a recording: FrameStorageService (frames) + TelemetryAsyncHub + TelemetryDBSink
(metadata and frame pointers). SQL lives in the catalogue (``store.catalog``); segment
files are named by ``framestore.segments``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from telemetry import open_db

from ._format import (
    DB_NAME,
    FILE_HEADER_SIZE,
    LOCK_NAME,
    SEAL_RECORD_SIZE,
    SEGMENT_DIR,
    record_extent,
)
from ._lock import StoreLock, writer_running
from .catalog import Catalog
from .errors import (
    EpisodeNotFound,
    FrameNotFound,
    InvalidInput,
    NotAStore,
    RunNotFound,
    StoreClosed,
    StoreLocked,
)
from .files import fsync_dir, why_not_writable
from .reader import SegmentReader
from .segments import is_sealed, list_segment_ids, segment_path
from .types import (
    DiskUsage,
    EpisodeInfo,
    FrameLocation,
    FrameSummary,
    RunInfo,
    StepInfo,
    StepTrack,
)

if TYPE_CHECKING:
    from .recorder import Recorder

__all__ = ["FrameStore"]


class FrameStore:
    """A store directory. Use ``FrameStore.open``; close it (or use ``with``).

    Reading works while another process records into the same store: SQLite runs in WAL
    mode and the database only ever points at frames that are written.
    """

    def __init__(self, root: Path, catalog: Catalog, *, readonly: bool):
        self.root = root
        self.readonly = readonly
        self._catalog = catalog
        self._reader = SegmentReader(root, cache_chunks=16)
        self._closed = False
        self._recorders: list[Recorder] = []

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        create: bool = True,
        readonly: bool = False,
        durability: str = "balanced",
    ) -> FrameStore:
        """Open (and with ``create`` make) a store directory.

        Raises ``NotAStore`` for a path that is a file, a non-empty directory that is not
        a store, or (without ``create``) a missing path; ``SchemaTooNew`` for a store
        written by a newer framestore.
        """
        root = Path(path)
        db_path = root / DB_NAME
        if root.exists() and not root.is_dir():
            raise NotAStore(str(root), "is a file, not a store directory")
        if not db_path.exists():
            if readonly or not create:
                raise NotAStore(
                    str(root),
                    "not a framestore store (no framestore.db)"
                    if root.exists()
                    else "no such store",
                )
            if root.exists() and any(
                p.name not in (SEGMENT_DIR, LOCK_NAME) for p in root.iterdir()
            ):
                raise NotAStore(str(root), "directory is not empty and is not a framestore store")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NotAStore(
                    str(root), f"cannot create a store here: {why_not_writable(root, e)}"
                ) from None
        db = open_db(db_path, profile=durability, readonly=readonly)
        return cls(root, Catalog(db, readonly=readonly), readonly=readonly)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def catalog(self) -> Catalog:
        """The store's catalogue: typed queries and changes of its SQLite database."""
        self._check_open()
        return self._catalog

    @property
    def reader(self) -> SegmentReader:
        """The segment reader (checksummed, cached chunk reads)."""
        self._check_open()
        return self._reader

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise InvalidInput("store is open read-only; this operation changes it")

    @contextmanager
    def transaction(self) -> Iterator[Catalog]:
        """Changes made through the yielded catalogue commit together or not at all."""
        self._check_writable()
        with self._catalog.transaction():
            yield self._catalog

    # ----------------------------------------------------------------- the writer lock
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's one-writer lock (``StoreLocked`` if a recorder or another
        maintenance command holds it)."""
        self._check_writable()
        lock = StoreLock(self.root).acquire()
        try:
            yield
        finally:
            lock.release()

    def writer_running(self) -> bool | None:
        """Whether some process holds the writer lock, found without taking it (None
        when it cannot be told)."""
        return writer_running(self.root)

    # ----------------------------------------------------------------- runs/episodes
    def runs(self) -> list[RunInfo]:
        return self.catalog.runs()

    def run(self, run_id: int) -> RunInfo:
        for r in self.runs():
            if r.id == run_id:
                return r
        raise RunNotFound(run_id)

    def episodes(
        self, *, run_id: int | None = None, include_deleted: bool = False
    ) -> list[EpisodeInfo]:
        """Episode records in id order (deleted ones only when asked)."""
        return self.catalog.episodes(run_id=run_id, include_deleted=include_deleted)

    def episode(self, episode_id: int, *, include_deleted: bool = False) -> EpisodeInfo:
        ep = self.catalog.episode(int(episode_id))
        if ep is None or (ep.status == "deleted" and not include_deleted):
            raise EpisodeNotFound(episode_id)
        return ep

    # ----------------------------------------------------------------- steps/frames
    def read_steps(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[StepInfo]:
        """Step records of an episode in step order, ``start <= step < stop``."""
        self.episode(episode_id)
        return self.catalog.steps(episode_id, start, stop)

    def step_track(self, episode_id: int, start: int = 0, stop: int | None = None) -> StepTrack:
        """Rewards, actions and flags (terminated, truncated, frame stored, row rebuilt by
        ``recover``) of ``start <= step < stop``, one query and no frames: cheap enough
        to read a whole episode for a timeline (page long ones with ``start``/``stop``)."""
        self.episode(episode_id)
        return self.catalog.step_track(episode_id, start, stop)

    def frame_locations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, FrameLocation | None]]:
        """``(step, (segment, offset, slot) or None)`` for the episode's rows, in order."""
        self.episode(episode_id)
        return self.catalog.frame_locations(episode_id, start, stop)

    def frame_summary(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> FrameSummary:
        """What is committed for ``start <= step < stop`` of an episode right now: the
        step count, the distinct frame shapes and the number of stored frames (a snapshot:
        rows of a live episode keep arriving)."""
        self.episode(episode_id)
        return self.catalog.frame_summary(episode_id, start, stop)

    def read_frame(self, episode_id: int, step: int) -> np.ndarray:
        """The frame of one step, bit-exact (checksum verified)."""
        locs = self.frame_locations(episode_id, step, step + 1)
        if not locs:
            raise FrameNotFound(f"episode {episode_id} has no step {step}")
        if locs[0][1] is None:
            raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame (dropped)")
        return self._reader.read(locs[0][1], expect_key=(episode_id, step))

    def iter_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None, *, skip_missing: bool = True
    ) -> Iterator[np.ndarray]:
        """Frames of an episode in step order; memory stays O(chunk).

        Steps whose frame was dropped are skipped (or raise ``FrameNotFound`` with
        ``skip_missing=False``). Corrupt data raises; it is never yielded.
        """
        for _step, frame in self.iter_steps_frames(
            episode_id, start, stop, skip_missing=skip_missing
        ):
            yield frame

    def iter_steps_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None, *, skip_missing: bool = True
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, frame)`` pairs in step order (see ``iter_frames``)."""
        for step, loc in self.frame_locations(episode_id, start, stop):
            if loc is None:
                if skip_missing:
                    continue
                raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame")
            yield step, self._reader.read(loc, expect_key=(episode_id, step))

    def read_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[np.ndarray]:
        """All frames of an episode (or a range) as a list. Prefer ``iter_frames`` for
        long episodes: this holds them all in memory."""
        return list(self.iter_frames(episode_id, start, stop))

    # ----------------------------------------------------------------- sizes
    def chunk_bytes(self, segment: int, offsets: Iterable[int]) -> int:
        """Total bytes of the records starting at ``offsets`` in one segment, read from
        their headers (the file is opened once). A missing file or offset counts 0."""
        try:
            with open(segment_path(self.root, segment), "rb") as fp:
                return sum(record_extent(fp, off) for off in offsets)
        except FileNotFoundError:
            return 0

    def episode_bytes(self, episode_id: int) -> int:
        """Bytes of segment records holding this episode's frames (read from record headers)."""
        chunks = self.catalog.episode_chunks(episode_id)
        return sum(self.chunk_bytes(seg, offs) for seg, offs in chunks.items())

    def live_bytes_by_segment(self) -> dict[int, int]:
        """Bytes of chunk records referenced by live (not deleted) episodes, per segment."""
        return {
            seg: self.chunk_bytes(seg, offs) for seg, offs in self.catalog.live_chunks().items()
        }

    def segment_state(self, segment: int, marks: dict[int, str] | None = None) -> str:
        """``obsolete``/``compacting`` as the catalogue marks it, else ``sealed`` or
        ``active`` as the file says."""
        mark = (self.catalog.segment_states() if marks is None else marks).get(segment)
        if mark in ("obsolete", "compacting"):
            return mark
        return "sealed" if is_sealed(segment_path(self.root, segment)) else "active"

    def sync_segments(self) -> None:
        """Reconcile the catalogue's ``segments`` table with the files in ``segments/``.

        Files are the truth for existence and size (a sealed segment ends with a SEAL
        record); the catalogue for ``obsolete``/``compacting`` marks."""
        self._check_writable()
        live = self.live_bytes_by_segment()
        marks = self.catalog.segment_states()
        on_disk = list_segment_ids(self.root)
        with self.transaction() as cat:
            for sid in on_disk:
                try:
                    size = segment_path(self.root, sid).stat().st_size
                except FileNotFoundError:
                    continue
                cat.record_segment(sid, self.segment_state(sid, marks), size, live.get(sid, 0))
            gone = set(marks) - set(on_disk)
            cat.forget_segments(s for s in gone if marks[s] == "obsolete")

    def delete_segment_files(self, segments: Iterable[int]) -> None:
        """Delete segment files (after the catalogue stopped pointing into them)."""
        ids = list(segments)
        self.reader.forget(ids)  # our own descriptors: let the kernel free the space
        for sid in ids:
            segment_path(self.root, sid).unlink(missing_ok=True)
        fsync_dir(self.root / SEGMENT_DIR)

    def file_bytes(self) -> dict[str, int]:
        """Bytes on disk: ``segments`` (files), ``database``, ``wal``, ``shm``."""

        def size(path: str | os.PathLike) -> int:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return 0

        return {
            "segments": sum(size(segment_path(self.root, s)) for s in list_segment_ids(self.root)),
            "database": size(self.db_path),
            "wal": size(f"{self.db_path}-wal"),
            "shm": size(f"{self.db_path}-shm"),
        }

    def disk_usage(self) -> DiskUsage:
        """Bytes on disk split the one way ``record``, ``info`` and ``gc`` report them
        (see ``DiskUsage``)."""
        sizes = self.file_bytes()
        marks = self.catalog.segment_states()
        overhead = 0
        for sid in list_segment_ids(self.root):
            path = segment_path(self.root, sid)
            if marks.get(sid) == "obsolete" or not path.exists():
                continue  # an obsolete file goes whole at the next gc: all of it is dead
            overhead += FILE_HEADER_SIZE + (SEAL_RECORD_SIZE if is_sealed(path) else 0)
        return DiskUsage(
            segments=sizes["segments"],
            live=sum(self.live_bytes_by_segment().values()),
            overhead=overhead,
            database=sizes["database"],
            wal=sizes["wal"],
            shm=sizes["shm"],
        )

    # ----------------------------------------------------------------- changes
    def delete_episodes(
        self, episode_ids: Iterable[int], *, dry_run: bool = False
    ) -> list[EpisodeInfo]:
        """Mark episodes deleted (they vanish from listings at once; ``gc`` reclaims the
        space). Unknown or already deleted ids raise ``EpisodeNotFound`` before anything
        changes. Returns the episodes deleted (or that would be, with ``dry_run``)."""
        if self.readonly:
            raise InvalidInput("store is open read-only")
        ids = list(dict.fromkeys(int(i) for i in episode_ids))
        eps = [self.episode(i) for i in ids]
        recording = [e.id for e in eps if e.status == "recording" and self._is_live(e.id)]
        if recording:
            raise InvalidInput(f"episode {recording[0]} is being recorded; stop recording first")
        if not dry_run and ids:
            self.catalog.mark_deleted(ids)
        return eps

    def _is_live(self, episode_id: int) -> bool:
        if any(r.current_episode == episode_id for r in self._recorders):
            return True
        lock = StoreLock(self.root)
        try:
            lock.acquire()
        except StoreLocked:
            return True  # another writer holds the store: the episode may be live
        lock.release()
        return False

    # ----------------------------------------------------------------- recording
    def recorder(self, env_id: str, **kwargs: Any) -> Recorder:
        """Start a recording run; see ``Recorder`` for the arguments."""
        from .recorder import Recorder

        self._check_open()
        if self.readonly:
            raise InvalidInput("store is open read-only; open it without readonly to record")
        rec = Recorder(self, env_id, on_close=self._forget_recorder, **kwargs)
        self._recorders.append(rec)
        return rec

    def _forget_recorder(self, rec: Recorder) -> None:
        if rec in self._recorders:
            self._recorders.remove(rec)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self._closed:
            return
        errors = []
        for rec in list(self._recorders):
            try:
                rec.close()
            except Exception as e:  # close everything, then report the first failure
                errors.append(e)
        self._closed = True
        self._reader.close()
        self._catalog.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"FrameStore({str(self.root)!r}{', readonly' if self.readonly else ''})"
