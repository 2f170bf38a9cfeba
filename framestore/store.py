"""The FrameStore facade: one directory holding a SQLite catalogue and segment files.

``FrameStore.open(path)`` gives reading (episodes, steps, frames) and ``recorder(...)``
composes a recording: FrameStorageService (frames) + TelemetryAsyncHub + TelemetryDBSink
(metadata and frame pointers). SQL lives in the catalogue (``store.catalog``); segment
files are named by ``framestore.disk.segments``.
"""

from __future__ import annotations

import itertools
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telemetry import open_db

from ._closing import close_all, close_on_exit
from ._format import (
    DB_NAME,
    FILE_HEADER_SIZE,
    LOCK_NAME,
    RENDER_STREAM,
    RENDER_STREAM_INDEX,
    SEGMENT_DIR,
)
from .catalog import Catalog, check_id, clamp_step
from .catalog._framepointers import FramePointers
from .disk._lock import StoreLock, writer_running
from .disk._passes import iter_runs
from .disk._sources import SegmentSource
from .disk.reader import SegmentReader
from .disk.segments import (
    list_segment_ids,
    segment_path,
    segment_seal,
)
from .errors import (
    EpisodeNotFound,
    FrameNotFound,
    InvalidInput,
    NotAStore,
    RunNotFound,
    StoreClosed,
    StoreLocked,
    StreamNotFound,
    UnsafeStore,
)
from .files import why_not_writable
from .published._reading import ObjectProblem, PublishedObjects, is_published, shown_location
from .state.bookkeeping import (
    chunk_bytes,
    delete_episodes_noted,
    file_bytes,
    live_bytes_by_segment,
)
from .types import (
    DiskUsage,
    EpisodeInfo,
    FrameLocation,
    FrameSummary,
    RunInfo,
    StepInfo,
    StepTrack,
    StreamInfo,
)

if TYPE_CHECKING:
    import numpy as np

    from .write.recorder import Recorder

__all__ = ["FrameStore", "enclosing_store"]


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The store directory that ``path`` is (or lies inside), or None. Outputs of the
    tools (exports) must never be written into a store: its files are the store's own."""
    p = Path(os.path.realpath(os.fspath(path) or "."))
    for d in (p, *p.parents):
        if os.path.lexists(d / DB_NAME) and d.is_dir():
            return d
    return None


def _check_database_files(db_path: Path) -> None:
    """The database and its WAL/SHM files must be regular files of the store when they
    exist: SQLite follows links and would read, create or write files elsewhere."""
    for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there (opening then says why the store is missing)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeStore(str(p), "the database file is a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStore(str(p), "the database file is not a regular file")
        if st.st_nlink != 1:
            raise UnsafeStore(str(p), "the database file has other hard links")


class FrameStore:
    """A store directory. Use ``FrameStore.open``; close it (or use ``with``).

    Reading works while another process records into the same store: SQLite runs in WAL
    mode and the database only ever points at frames that are written.

    Members, by group (one line each in docs/ARCHITECTURE.md, "FrameStore's members"):
    opening; what and where the store is; the lower level that the tools' maintenance
    works through (``catalog``, ``reader``, ``transaction``); runs and episodes; steps
    and frames; sizes; changes and recording; closing. Maintenance itself (the writer
    lock, new ids, segment files) is ``framestore.state.bookkeeping``.

    Attributes:
        root: the store's directory (a published store's local cache directory).
        readonly: whether it was opened read-only.
        location: where the store is: its directory, or the URL of a published store.
    """

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        *,
        readonly: bool,
        source: SegmentSource | None = None,
        location: str | None = None,
        objects: PublishedObjects | None = None,
        cache_bytes: int | None = None,
    ):
        self.root = root
        self.readonly = readonly
        #: Where the store is: its directory, or the URL of a published store.
        self.location = location or str(root)
        self._catalog = catalog
        # A byte budget alone bounds the cache when one is given (a dataset's workers).
        cache = {} if cache_bytes is None else {"cache_chunks": 1 << 20, "cache_bytes": cache_bytes}
        self._reader = SegmentReader(
            root,
            **({"cache_chunks": 16} | cache),
            source=source,
            # (a published store's catalogue has no store id: its segments are checked
            # against the manifest instead)
            store_id_of=None
            if source is not None or objects is not None
            else catalog.recovery.writer_store_id,
        )
        self._objects = objects  # a published store's manifest and where its objects are
        self._closed = False
        self._recorders: list[Recorder] = []
        self._stream_keys: dict[int, int] = {}  # an episode's stream key never changes
        # episode -> its streams by name: a stream, once recorded, never changes (an
        # episode being recorded may gain more: a name not found here is looked up again)
        self._stream_infos: dict[int, dict[str, StreamInfo]] = {}
        # Random reads look their pointer up here, not in SQLite (issue 19).
        self._pointers = FramePointers(catalog, self.episode)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        create: bool = True,
        readonly: bool = False,
        durability: str = "balanced",
        storage_options: Mapping[str, Any] | None = None,
        cache_bytes: int | None = None,
    ) -> FrameStore:
        """Open (and with ``create`` make) a store directory, or open a published store
        (``framestore publish``): a URL such as ``s3://bucket/runs`` or a local directory
        holding its ``manifest.json``, read-only, with ``storage_options`` for fsspec.

        ``cache_bytes`` bounds the decoded chunks kept for reading by bytes alone
        (default: 16 chunks, at most 128 MiB): a training loop's random reads hit more
        chunks than a replay's.

        Raises ``NotAStore`` for a path that is a file, a non-empty directory that is not
        a store, or (without ``create``) a missing path; ``SchemaTooNew`` for a store
        written by a newer framestore; ``PublishedObjectError`` for a published store
        whose catalogue does not match its manifest.
        """
        if cache_bytes is not None and (not isinstance(cache_bytes, int) or cache_bytes < 1):
            raise InvalidInput(f"cache_bytes must be a positive integer, got {cache_bytes!r}")
        if is_published(path):
            return cls._open_published(
                path, readonly=readonly, storage_options=storage_options, cache_bytes=cache_bytes
            )
        root = Path(path)
        db_path = root / DB_NAME
        if root.exists() and not root.is_dir():
            raise NotAStore(str(root), "is a file, not a store directory")
        _check_database_files(db_path)
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
        return cls(root, Catalog(db, readonly=readonly), readonly=readonly, cache_bytes=cache_bytes)

    @classmethod
    def _open_published(
        cls,
        path: str | os.PathLike,
        *,
        readonly: bool,
        storage_options: Mapping[str, Any] | None,
        cache_bytes: int | None,
    ) -> FrameStore:
        if not readonly:
            raise InvalidInput(
                f"{shown_location(path)}: a published store is read-only: it opens for "
                "reading only and never changes (publish its source again instead)"
            )
        from .published._reading import open_published

        parts = open_published(path, storage_options)
        location = shown_location(os.fspath(path).rstrip("/"))
        return cls(
            parts.root,
            parts.catalog,
            readonly=True,
            source=parts.source,
            location=location,
            objects=parts.objects,
            cache_bytes=cache_bytes,
        )

    # ----------------------------------------------------------------- what and where
    @property
    def published(self) -> bool:
        """Whether this is a published store (``framestore publish``), not a directory with
        a SQLite catalogue."""
        return self._reader.source is not None or not self.db_path.exists()

    def check_published_objects(
        self, progress: Callable[[int, int], None] | None = None
    ) -> list[ObjectProblem]:
        """Read every object of a published store whole (catalogue tables and segments,
        in blocks) and compare its size and SHA-256 with the manifest; what does not match
        or is missing, in name order (empty: all match). Readers do not do this on their
        own: they check each chunk's CRC as they read it. ``progress(done, total)`` in
        bytes.

        Raises:
            InvalidInput: this is not a published store.
        """
        if self._objects is None:
            raise InvalidInput(f"{self.location}: not a published store (no manifest)")
        return self._objects.problems(progress)

    @property
    def name(self) -> str:
        """How the store names itself to others (a published manifest, exported Parquet
        metadata): its directory's name, never the path to it; a URL as shown."""
        return self.location if self.remote else Path(self.location).name

    @property
    def remote(self) -> bool:
        """Whether segments are read from a URL (a published store on object storage)."""
        return self._reader.source is not None

    @property
    def db_path(self) -> Path:
        """The path of the store's SQLite catalogue (``framestore.db``)."""
        return self.root / DB_NAME

    def writer_running(self) -> bool | None:
        """Whether some process holds the writer lock, found without taking it (None
        when it cannot be told)."""
        return writer_running(self.root)

    # ----------------------------------------------------------------- lower level (tools)
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
        with self._catalog.connection.transaction():
            yield self._catalog

    # ----------------------------------------------------------------- runs/episodes
    def runs(self) -> list[RunInfo]:
        """Run records in id order."""
        return self.catalog.episodes.runs()

    def run(self, run_id: int) -> RunInfo:
        """One run's record (``RunNotFound`` for an unknown id)."""
        run_id = check_id(run_id, "run id")
        for r in self.runs():
            if r.id == run_id:
                return r
        raise RunNotFound(run_id)

    def episodes(
        self, *, run_id: int | None = None, include_deleted: bool = False
    ) -> list[EpisodeInfo]:
        """Episode records in id order (deleted ones only when asked)."""
        return self.catalog.episodes.all(run_id=run_id, include_deleted=include_deleted)

    def episode(self, episode_id: int, *, include_deleted: bool = False) -> EpisodeInfo:
        """One episode's record (``EpisodeNotFound`` for an unknown or deleted id)."""
        ep = self.catalog.episodes.get(check_id(episode_id, "episode id"))
        if ep is None or (ep.status == "deleted" and not include_deleted):
            raise EpisodeNotFound(episode_id)
        return ep

    # ----------------------------------------------------------------- steps/frames
    def read_steps(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[StepInfo]:
        """Step records of an episode in step order, ``start <= step < stop``."""
        ep = self.episode(episode_id)
        return self.catalog.episodes.steps(ep.id, *_step_range(start, stop))

    def step_track(self, episode_id: int, start: int = 0, stop: int | None = None) -> StepTrack:
        """Rewards, actions and flags (terminated, truncated, frame stored, row rebuilt by
        ``recover``) of ``start <= step < stop``, one query and no frames: cheap enough
        to read a whole episode for a timeline (page long ones with ``start``/``stop``)."""
        self.episode(episode_id)
        return self.catalog.episodes.step_track(episode_id, start, stop)

    def frame_locations(
        self,
        episode_id: int,
        start: int = 0,
        stop: int | None = None,
        *,
        stream: str = RENDER_STREAM,
    ) -> list[tuple[int, FrameLocation | None]]:
        """``(step, (segment, offset, slot) or None)`` for the episode's rows, in order
        (of ``stream``'s frames: None where it has none)."""
        ep = self.episode(episode_id)
        if stream != RENDER_STREAM:
            index = self._stream_index(ep.id, stream)
            pointers = self.catalog.streams.pointers(ep.id, index, *_step_range(start, stop))
            return [(step, loc) for step, loc, _shape in pointers]
        return self.catalog.episodes.frame_locations(ep.id, *_step_range(start, stop))

    def frame_summary(
        self,
        episode_id: int,
        start: int = 0,
        stop: int | None = None,
        *,
        stream: str = RENDER_STREAM,
    ) -> FrameSummary:
        """What is committed for ``start <= step < stop`` of an episode right now: the
        step count, the distinct frame shapes and the number of stored frames (a snapshot:
        rows of a live episode keep arriving); of ``stream``'s frames when given."""
        ep = self.episode(episode_id)
        summary = self.catalog.episodes.frame_summary(ep.id, *_step_range(start, stop))
        if stream == RENDER_STREAM:
            return summary
        index = self._stream_index(ep.id, stream)
        pointers = self.catalog.streams.pointers(ep.id, index, int(start), summary.stop)
        shapes = {"x".join(map(str, shape)) for _s, loc, shape in pointers if loc and shape}
        frames = sum(loc is not None for _s, loc, _shape in pointers)
        return FrameSummary(summary.steps, summary.stop, tuple(sorted(shapes)), frames)

    def streams(self, episode_id: int) -> list[StreamInfo]:
        """The episode's frame streams, ``render`` (index 0) first (docs/FORMAT.md,
        "Several streams"); a store of 0.3.0 or older has ``render`` only."""
        ep = self.episode(episode_id)
        return self.catalog.streams.of_episode(ep.id)

    def _stream_info(self, episode_id: int, stream: str) -> StreamInfo:
        """The episode's stream ``stream`` (``StreamNotFound`` if none; kept once read)."""
        known = self._stream_infos.get(episode_id)
        if known is None or stream not in known:
            ep = self.episode(episode_id)
            known = {s.name: s for s in self.catalog.streams.of_episode(ep.id, counts=False)}
            self._stream_infos[episode_id] = known
            if stream not in known:
                raise StreamNotFound(episode_id, stream, tuple(known))
        return known[stream]

    def _stream_index(self, episode_id: int, stream: str) -> int:
        """The index of the episode's stream ``stream`` (``StreamNotFound`` if none)."""
        if stream == RENDER_STREAM:
            return RENDER_STREAM_INDEX
        return self._stream_info(episode_id, stream).index

    def _stream_frame(
        self,
        chunk: Any,
        slot: int,
        info: StreamInfo,
        episode_id: int,
        step: int,
        shape: tuple[int, ...] | None,
        copy: bool,
    ) -> np.ndarray:
        """Frame ``slot`` of a decoded chunk as a frame of stream ``info``: the chunk
        checked to be of that stream (or render's, a frame stored once for both), the
        frame back in its own dtype and ``shape`` (the stream's first frame's if None)."""
        key = (self.stream_key(episode_id), step)
        frame = self._reader.frame_of(
            chunk, slot, copy=copy, expect_key=key, expect_stream=info.index
        )
        return _as_stream(frame, info, shape)

    def read_frame(
        self, episode_id: int, step: int, *, copy: bool = True, stream: str = RENDER_STREAM
    ) -> np.ndarray:
        """The frame of one step, bit-exact (checksum verified); with ``copy=False`` a
        read-only array (a view into the decoded chunk when the chunk is cached; a miss
        decodes only the zstd part up to the frame into a reused buffer and returns a
        read-only copy of the frame). ``stream``: which of the step's frames
        (``EpisodeInfo.streams``; ``StreamNotFound`` for a name the episode lacks).

        The episode's frame pointers (of each stream read) are read once and kept while
        the catalogue is unchanged (a pragma checks that), so a random read queries no
        table."""
        self._check_open()
        episode_id = check_id(episode_id, "episode id")
        if clamp_step(step, "step") != step:  # negative, or past any step SQLite holds
            raise FrameNotFound(f"episode {episode_id} has no step {step}")
        if stream != RENDER_STREAM:
            info = self._stream_info(episode_id, stream)
            step = int(step)
            _step, loc, shape = self._pointers.pointer(episode_id, step, info.index)
            if loc is None:
                raise FrameNotFound(
                    f"episode {episode_id} step {step} has no stored frame in stream {stream!r}"
                )
            # a miss decodes the zstd part up to the frame, as render's reads do
            key = (self.stream_key(episode_id), step)
            frame = self._reader.read(loc, copy=copy, expect_key=key, expect_stream=info.index)
            return _as_stream(frame, info, shape)
        loc = self._pointers.location(episode_id, int(step))
        if loc is None:
            raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame (dropped)")
        return self.read_at(loc, episode_id, step, copy=copy)

    def stream_key(self, episode_id: int) -> int:
        """The stream key an episode's chunks carry: its id, unless it was merged from
        another store (docs/FORMAT.md, "Merged stores")."""
        key = self._stream_keys.get(episode_id)
        if key is None:
            key = self._stream_keys[episode_id] = self.catalog.episodes.stream_key(episode_id)
        return key

    def read_at(
        self,
        location: FrameLocation,
        episode_id: int,
        step: int,
        *,
        copy: bool = True,
        stream: str = RENDER_STREAM,
        keep: bool = False,
    ) -> np.ndarray:
        """The frame at ``location`` (a step row's pointer), checked to be the frame of
        ``episode_id``'s ``step``: a wrong pointer raises ``CorruptRecord``, never returns
        another step's pixels. ``stream``: the pointer is one of that stream's
        (``frame_locations(stream=...)``); the frame comes back in its own shape.
        ``keep``: for random readers that return to the same chunks (a dataset's
        workers): the frame's zstd part is decoded whole and kept within the store's
        ``cache_bytes``; with ``copy=False`` the frame is a read-only view of it."""
        key = (self.stream_key(episode_id), step)
        if stream == RENDER_STREAM:
            return self._reader.read(
                location, copy=copy, expect_key=key, expect_stream=RENDER_STREAM_INDEX, keep=keep
            )
        info = self._stream_info(episode_id, stream)
        frame = self._reader.read(
            location, copy=copy, expect_key=key, expect_stream=info.index, keep=keep
        )
        return _as_stream(frame, info, None)

    def read_into(
        self,
        location: FrameLocation,
        episode_id: int,
        steps: Sequence[int],
        out: np.ndarray,
        *,
        stream: str = RENDER_STREAM,
    ) -> None:
        """Decode the frames of ``episode_id``'s ``steps``, which lie in consecutive slots
        of one chunk from ``location`` (the first step's pointer) on, into ``out``: a
        writable C-contiguous uint8 array shaped ``(len(steps), *stored frame shape)``
        (a slice of a batch a dataset fills). No copy between the decode and ``out``
        where the run holds a whole zstd part (``SegmentReader.read_into``). Every
        slot is checked to hold its step of ``stream`` (``CorruptRecord`` if not, as
        ``read_at``); ``ValueError`` if ``out`` has another shape than the frames."""
        key = (self.stream_key(episode_id), steps)
        index = self._stream_index(episode_id, stream)
        self._reader.read_into(location, out, expect_keys=key, expect_stream=index)

    def iter_frames(
        self,
        episode_id: int,
        start: int = 0,
        stop: int | None = None,
        *,
        skip_missing: bool = True,
        copy: bool = False,
        stream: str = RENDER_STREAM,
    ) -> Iterator[np.ndarray]:
        """Frames of an episode in step order; memory stays O(chunk).

        Each frame is a read-only view into its decoded chunk (each chunk is decoded
        once, and a view keeps only its own chunk alive); ``copy=True`` returns writable
        copies. Steps whose frame was dropped (or that have none in ``stream``) are
        skipped (or raise ``FrameNotFound`` with ``skip_missing=False``). Corrupt data
        raises; it is never yielded. ``stream``: as ``read_frame``'s.
        """
        if stream == RENDER_STREAM and skip_missing and not copy:
            # The common pass: the frames of each run (consecutive slots of one chunk,
            # keys checked once a run) are a view iterated in C, chained in C: no Python
            # frame a frame. Lazy as a generator: nothing is read before the first next.
            return _chained(self._render_runs(episode_id, start, stop))
        return self._iter_frames(episode_id, start, stop, skip_missing, copy, stream)

    def _iter_frames(
        self,
        episode_id: int,
        start: int,
        stop: int | None,
        skip_missing: bool,
        copy: bool,
        stream: str,
    ) -> Iterator[np.ndarray]:
        """``iter_frames`` one frame at a time (copies, a stream, missing frames)."""
        for _step, frame in self.iter_steps_frames(
            episode_id, start, stop, skip_missing=skip_missing, copy=copy, stream=stream
        ):
            yield frame

    def _render_runs(
        self, episode_id: int, start: int, stop: int | None
    ) -> Iterator[Iterable[np.ndarray]]:
        """Read-only render frames that skip missing ones, as runs (``_frame_blocks``),
        or one at a time when the runs query leaves the rows to ``frame_locations``."""
        blocks = self._frame_blocks(episode_id, start, stop)
        if blocks is None:
            for _step, frame in self.iter_steps_frames(episode_id, start, stop):
                yield (frame,)
            return
        for _first, block in blocks:
            yield block

    def iter_steps_frames(
        self,
        episode_id: int,
        start: int = 0,
        stop: int | None = None,
        *,
        skip_missing: bool = True,
        copy: bool = False,
        stream: str = RENDER_STREAM,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, frame)`` pairs in step order (see ``iter_frames``)."""
        if stream != RENDER_STREAM:
            yield from self._iter_stream(episode_id, start, stop, skip_missing, copy, stream)
            return
        blocks = self._frame_blocks(episode_id, start, stop) if skip_missing else None
        if blocks is not None:
            for first, block in blocks:
                if copy:
                    for i, frame in enumerate(block, first):
                        yield i, frame.copy()
                else:
                    yield from zip(range(first, first + len(block)), block, strict=True)
            return
        locations = self.frame_locations(episode_id, start, stop)
        key = self.stream_key(episode_id)
        reader = self._reader
        chunk = None
        frames = keys = None
        for step, loc in locations:
            if loc is None:
                if skip_missing:
                    continue
                raise FrameNotFound(f"episode {episode_id} step {step} has no stored frame")
            segment, offset, slot = loc
            if chunk is None or chunk.offset != offset or chunk.segment != segment:
                # Once per chunk, not per frame; not cached: a pass reads each chunk once.
                chunk = reader.read_chunk(segment, offset, keep=False)
                header = chunk.header
                plain = header.stream_key == key and header.stream_index == RENDER_STREAM_INDEX
                keys = header.frame_keys if plain else ()
                frames = chunk.blocks[0] if len(chunk.blocks) == 1 else None
            if frames is not None and 0 <= slot < len(keys) and keys[slot] == step:
                frame = frames[slot]  # the checks of frame_of, without a call per frame
                yield step, frame.copy() if copy else frame
            else:
                yield (
                    step,
                    reader.frame_of(
                        chunk,
                        slot,
                        copy=copy,
                        expect_key=(key, step),
                        expect_stream=RENDER_STREAM_INDEX,
                    ),
                )

    def _frame_blocks(
        self, episode_id: int, start: int, stop: int | None
    ) -> Iterator[tuple[int, np.ndarray]] | None:
        """A render pass that skips missing frames as runs: ``(first step, frames)``,
        ``frames`` a read-only view of consecutive frames of one decoded chunk whose
        slots were checked to hold steps ``first, first + 1, ...`` of this episode (one
        comparison a run, not a call a frame). The pointers come from one query an
        episode that returns a row a run (``catalog.episodes.frame_runs``). None when
        that query finds a pointer it does not take as plain: the caller then goes step
        by step, whose checks name the bad row. A run whose slots do not hold its steps
        goes frame by frame through ``frame_of``, which raises naming the place, after
        the frames before it."""
        ep = self.episode(episode_id)
        runs = self.catalog.episodes.frame_runs(ep.id, *_step_range(start, stop))
        if runs is None:
            return None
        return iter_runs(self._reader, self.stream_key(ep.id), runs)

    def _iter_stream(
        self,
        episode_id: int,
        start: int,
        stop: int | None,
        skip_missing: bool,
        copy: bool,
        stream: str,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``iter_steps_frames`` of a stream other than render: its pointers, each chunk
        checked to be of that stream (or render's, for a frame stored once for both)."""
        info = self._stream_info(episode_id, stream)
        pointers = self.catalog.streams.pointers(episode_id, info.index, *_step_range(start, stop))
        reader = self._reader
        chunk = None
        for step, loc, shape in pointers:
            if loc is None:
                if skip_missing:
                    continue
                raise FrameNotFound(
                    f"episode {episode_id} step {step} has no stored frame in stream {stream!r}"
                )
            segment, offset, slot = loc
            if chunk is None or chunk.offset != offset or chunk.segment != segment:
                chunk = reader.read_chunk(segment, offset)
            yield step, self._stream_frame(chunk, slot, info, episode_id, step, shape, copy)

    def read_observation(self, episode_id: int, step: int) -> np.ndarray | dict | None:
        """The observation recorded with a step (``record_step(observation=...)``,
        ``RecordFrames(observations=True)``): an array, or a dict as recorded, entries
        bit-exact; None when the step has none."""
        for _step, obs in self.iter_observations(episode_id, int(step), int(step) + 1):
            return obs
        raise FrameNotFound(f"episode {episode_id} has no step {step}")

    def iter_observations(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray | dict | None]]:
        """``(step, observation or None)`` in step order (see ``read_observation``); the
        observation streams are read chunk by chunk."""
        from .write._observations import OBSERVATION_STREAM, assemble

        ep = self.episode(episode_id)
        names = [
            n
            for n in ep.streams
            if n == OBSERVATION_STREAM or n.startswith(OBSERVATION_STREAM + ".")
        ]
        iters = {
            n: self.iter_steps_frames(ep.id, start, stop, skip_missing=True, copy=True, stream=n)
            for n in names
        }
        pending: dict[str, tuple[int, np.ndarray] | None] = {
            n: next(it, None) for n, it in iters.items()
        }
        for step, blob in self.catalog.streams.observations(ep.id, *_step_range(start, stop)):
            here: dict[str, Callable[[], np.ndarray]] = {}
            for n, item in pending.items():
                if item is not None and item[0] == step:
                    here[n] = lambda frame=item[1]: frame
                    pending[n] = next(iters[n], None)
            yield step, assemble(blob, here)

    def read_frames(
        self, episode_id: int, start: int = 0, stop: int | None = None
    ) -> list[np.ndarray]:
        """All frames of an episode (or a range) as a list of writable copies. Prefer
        ``iter_frames`` for long episodes: this holds them all in memory."""
        return list(self.iter_frames(episode_id, start, stop, copy=True))

    # ----------------------------------------------------------------- sizes
    def episode_bytes(self, episode_id: int) -> int:
        """Bytes of segment records holding this episode's frames (read from record
        headers; a published store's totals say it without reading its steps)."""
        known = self.catalog.stats.episode_total_bytes(episode_id)
        if known is not None:
            return known
        chunks = self.catalog.episodes.chunks(episode_id)
        return sum(chunk_bytes(self, seg, offs) for seg, offs in chunks.items())

    def _live_bytes(self) -> int:
        known = self.catalog.stats.live_total_bytes()  # a published store's totals
        return sum(live_bytes_by_segment(self).values()) if known is None else known

    def disk_usage(self) -> DiskUsage:
        """Bytes on disk split the one way ``record``, ``info`` and ``gc`` report them
        (see ``DiskUsage``)."""
        sizes = file_bytes(self)
        marks = self.catalog.segments.states()
        overhead = 0
        for sid in list_segment_ids(self.root):
            path = segment_path(self.root, sid)
            if marks.get(sid) == "obsolete" or not path.exists():
                continue  # an obsolete file goes whole at the next gc: all of it is dead
            # headers, seals and (format 3) the records that describe episodes
            seal = segment_seal(path)
            overhead += FILE_HEADER_SIZE
            if seal is not None:
                overhead += path.stat().st_size - seal.offset + seal.meta_bytes
        return DiskUsage(
            segments=sizes["segments"],
            live=self._live_bytes(),
            overhead=overhead,
            database=sizes["database"],
            wal=sizes["wal"],
            shm=sizes["shm"],
        )

    # ----------------------------------------------------------------- changes, recording
    def delete_episodes(
        self, episode_ids: Iterable[int], *, dry_run: bool = False
    ) -> list[EpisodeInfo]:
        """Mark episodes deleted (they vanish from listings at once; ``gc`` reclaims the
        space). A tombstone written into the segments first keeps them deleted in a
        catalogue rebuilt from the segments (``framestore.state.bookkeeping
        .delete_episodes_noted``), so only the store's one writer may do it: this
        process, taking the writer lock, or, while a recorder opened through this store
        records, that recorder's writer (``Recorder.delete_episodes``: finished
        episodes are deleted while the recording goes on; the episode being recorded
        is refused). ``InvalidInput`` while a recorder of another process (or of
        another ``FrameStore``) holds the store. Unknown or already deleted ids raise
        ``EpisodeNotFound`` before anything changes. Returns the episodes deleted (or
        that would be, with ``dry_run``)."""
        if self.readonly:
            raise InvalidInput("store is open read-only")
        ids = list(dict.fromkeys(check_id(i, "episode id") for i in episode_ids))
        if ids and not dry_run:
            for rec in list(self._recorders):
                try:
                    return rec.delete_episodes(ids)
                except StoreClosed:
                    continue  # it closed meanwhile, releasing the lock: take it below
        eps = [self.episode(i) for i in ids]
        if dry_run or not ids:
            recording = [e.id for e in eps if e.status == "recording" and self._is_live(e.id)]
            if recording:
                raise InvalidInput(
                    f"episode {recording[0]} is being recorded; stop recording first"
                )
            return eps
        # The deletion is written into the segments (a tombstone), so it needs the one
        # writer's lock: a recorder of another process holding the store must stop first.
        lock = StoreLock(self.root)
        try:
            lock.acquire()
        except StoreLocked:
            live = [e.id for e in eps if e.status == "recording"]
            what = f"episode {live[0]} is being recorded" if live else "a recorder holds the store"
            raise InvalidInput(
                f"{what}; stop recording first (rm writes the deletion into the segments, "
                "which only the store's one writer may do)"
            ) from None
        try:
            delete_episodes_noted(self, ids)
        finally:
            lock.release()
        return eps

    def _is_live(self, episode_id: int) -> bool:
        if self._recorders:  # ours hold the lock: live means open in one of them
            return any(episode_id in r.open_episodes for r in self._recorders)
        lock = StoreLock(self.root)
        try:
            lock.acquire()
        except StoreLocked:
            return True  # another writer holds the store: the episode may be live
        lock.release()
        return False

    def recorder(self, env_id: str, **kwargs: Any) -> Recorder:
        """Start a recording run; see ``Recorder`` for the arguments."""
        from .write.recorder import Recorder

        self._check_open()
        if self.readonly:
            raise InvalidInput("store is open read-only; open it without readonly to record")
        rec = Recorder(self, env_id, on_close=self._forget_recorder, **kwargs)
        self._recorders.append(rec)
        return rec

    def _forget_recorder(self, rec: Recorder) -> None:
        if rec in self._recorders:
            self._recorders.remove(rec)

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the recorders opened through ``recorder()``, the reader and the
        catalogue; the first error of a recorder is raised after all are closed."""
        if self._closed:
            return
        closers = [rec.close for rec in list(self._recorders)]

        def closed() -> None:
            self._closed = True

        close_all([*closers, closed, self._reader.close, self._catalog.connection.close])

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        close_on_exit(self.close, failing=exc_type is not None)

    def __repr__(self) -> str:
        return f"FrameStore({self.location!r}{', readonly' if self.readonly else ''})"


def _step_range(start: int, stop: int | None) -> tuple[int, int | None]:
    """A step range as the catalogue takes it (SQLite integers: bounds beyond any step
    are clamped, not overflowed)."""
    return clamp_step(start, "start"), None if stop is None else clamp_step(stop, "stop")


def _as_stream(frame: np.ndarray, info: StreamInfo, shape: tuple[int, ...] | None) -> np.ndarray:
    """A frame of stream ``info`` as read from its chunk, back in the stream's own dtype
    and ``shape`` (the stream's first frame's if None)."""
    if info.dtype != "uint8":  # an observation array kept as its bytes
        import numpy  # loaded by the reader already; store.py itself imports none

        frame = frame.reshape(-1).view(numpy.dtype(info.dtype).newbyteorder("<"))
    want = shape or info.shape
    if want is not None and frame.shape != want and frame.size == math.prod(want):
        frame = frame.reshape(want)  # a frame stack kept as rows (stored_shape)
    return frame


def _chained(runs: Iterator[Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
    """The frames of ``runs`` as a generator (``close``, ``throw`` like every other
    ``iter_frames``), iterated in C by ``yield from`` over the chain."""
    yield from itertools.chain.from_iterable(runs)
