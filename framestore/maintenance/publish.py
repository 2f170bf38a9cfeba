"""``publish``: an immutable, object-storage-friendly copy of a store.

Layout at the destination (a local directory or any fsspec URL, ``s3://`` via s3fs)::

    manifest.json                 every object below with its size and SHA-256; written last
    catalogue/runs.parquet        the catalogue tables, rows as stored (no frames)
    catalogue/episodes.parquet
    catalogue/steps.parquet       one row per step, with its frame pointer
    catalogue/segments.parquet
    catalogue/chunks.parquet      (segment, offset, bytes) of every published chunk record
    catalogue/episode_totals.parquet  per episode: steps, frames, raw and chunk bytes (what
                                  ``ls`` and ``info`` read instead of the steps table)
    catalogue/stream_totals.parquet   per episode and stream other than render: frames and
                                  raw bytes (what ``info`` reads instead of step_frames)
    segments/seg-NNNNNN.fseg      sealed segments, byte for byte

What is published: the catalogue as of one read snapshot, restricted to the episodes
that are finished (not ``recording``, not deleted) and whose frames all lie in sealed
segments; the sealed segments they use. A store that is being recorded can be published:
the episode being recorded, and finished ones whose frames still sit in the active
segment, are left out and listed in the report (publish again once the recorder closed).

Steps, in order, so a reader never sees a half-published store: segments, then the
catalogue, then the manifest. A local destination is written as ``DEST.partial/`` and
renamed into place; a remote one gets its manifest last (objects without a manifest are
not a published store), and a failure removes the objects it wrote. The destination must
be new (or empty): a published store is never changed, publish again elsewhere.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telemetry.jsonsafe import dumps

from .._format import SEGMENT_DIR, VERSION, record_extent
from .._format.published import (
    CATALOGUE_DIR,
    CHUNKS_TABLE,
    EPISODE_TOTALS_COLUMNS,
    EPISODE_TOTALS_TABLE,
    MANIFEST_NAME,
    PUBLISHED_FORMAT,
    PUBLISHED_VERSION,
    STREAM_TOTALS_COLUMNS,
    STREAM_TOTALS_TABLE,
    catalogue_object,
)
from ..catalog import Catalog, parse_shape
from ..disk.segments import (
    is_sealed,
    list_segment_ids,
    open_segment,
    relative_segment_path,
    segment_path,
)
from ..errors import FrameStoreError, InvalidInput, SegmentMissing, StoreIOError
from ..extras import require
from ..files import fsync_dir, fsync_file
from ..published._reading import ObjectProblem, is_url, open_fs, shown_location, userinfo
from ..store import FrameStore, enclosing_store

__all__ = ["ObjectProblem", "PublishReport", "publish", "remove_dead_staging"]

_COPY_BLOCK = 8 * 1024 * 1024
_ROW_GROUP = 64 * 1024  # step rows per Parquet row group
_ARROW_TYPES = {"INTEGER": "int64", "REAL": "float64", "TEXT": "string", "BLOB": "binary"}

Progress = Callable[[int, int], None]  # (bytes done, bytes planned)


@dataclass
class PublishReport:
    """What one ``publish`` wrote.

    Attributes:
        source: the store published.
        dest: where it went.
        episodes, steps, frames, stream_frames: what the published catalogue holds.
        segments: segment objects written.
        bytes: bytes written (segments, catalogue and manifest).
        skipped: episodes left out, with the reason (being recorded, frames not yet in
            a sealed segment).
        seconds: wall time.
    """

    source: str
    dest: str
    episodes: int = 0
    steps: int = 0
    frames: int = 0
    stream_frames: int = 0  # frames of streams other than render (m003's step_frames)
    segments: int = 0
    bytes: int = 0
    skipped: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def _not_empty(found: list[str]) -> str:
    """Why a remote destination whose top level holds ``found`` cannot be published to."""
    names = sorted(f.rstrip("/").rsplit("/", 1)[-1] for f in found)
    if MANIFEST_NAME in names:
        return "is a published store already; publish to a new place"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"is not empty and holds no {MANIFEST_NAME} (found {shown}): perhaps what an "
        "interrupted publish left; delete it or publish to a new place"
    )


class _Target:
    """Where objects go: a file system, the root written to, and what was written."""

    def __init__(self, dest: str, storage_options: Mapping[str, Any] | None):
        self.dest = dest.rstrip("/")
        self.shown = shown_location(self.dest)  # for messages: never a URL's credentials
        self.fs, root = open_fs(self.dest, storage_options)
        self.final = root.rstrip("/")
        self.local = not is_url(self.dest) or self.dest.startswith("file://")
        self.root = self.final
        self.objects: dict[str, dict[str, Any]] = {}
        self._staging_fd: int | None = None
        self._check_new()
        if self.local:
            # Staged in a directory of this run's own beside DEST, renamed onto DEST at
            # the end: never a name another publish (or the user) may own. The run holds
            # an flock on it until it ends, so what a killed run left (the lock dies with
            # its process) is told from a live run's and removed by the next publish.
            final = Path(self.final)
            remove_dead_staging(final.parent, final.name)
            self.root = tempfile.mkdtemp(dir=final.parent, prefix=_staging_prefix(final))
            os.chmod(self.root, 0o755)
            self._staging_fd = _locked_dir(self.root)

    def _check_new(self) -> None:
        if self.local:
            final = Path(self.final)
            store = enclosing_store(final.parent)
            if store is not None:  # the rule of every output (exports too)
                raise InvalidInput(
                    f"{self.shown}: is inside the store {store}; publish to a place outside it"
                )
            if final.exists() and (not final.is_dir() or any(final.iterdir())):
                raise InvalidInput(f"{self.shown}: exists and is not empty; publish to a new place")
            if not final.parent.is_dir():
                raise InvalidInput(f"{self.shown}: directory {final.parent} does not exist")
            return
        try:
            found = self.fs.ls(self.final, detail=False)
        except FileNotFoundError:
            return
        if found:
            raise InvalidInput(f"{self.shown}: {_not_empty(found)}")

    def open(self, name: str) -> _HashingFile:
        path = f"{self.root}/{name}"
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return _HashingFile(self, name, self.fs.open(path, "wb"))

    def commit(self) -> None:
        if self.local:
            for name in self.objects:
                fsync_file(f"{self.root}/{name}")
            fsync_dir(self.root)
            os.replace(self.root, self.final)
            fsync_dir(os.path.dirname(self.final) or ".")
            self._unlock()

    def _unlock(self) -> None:
        if self._staging_fd is not None:
            os.close(self._staging_fd)
            self._staging_fd = None

    def abort(self) -> None:
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            self._unlock()
            return
        for name in self.objects:
            try:
                self.fs.rm_file(f"{self.root}/{name}")
            except Exception:  # noqa: BLE001 - the backend's own too: the first error is told
                pass


def _staging_prefix(final: Path) -> str:
    return f".{final.name}.publish-"


def _locked_dir(path: str | os.PathLike) -> int | None:
    """A descriptor of directory ``path`` holding an exclusive flock on it, or None when
    another process holds it (or ``path`` is not a real directory: never a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# What a staging directory is named (``mkdtemp``'s 8 characters after the prefix) and
# what it may hold: a directory of another name or with other entries is never removed.
_STAGING_NAME = re.compile(r"\.(.+)\.publish-[a-z0-9_]{8}")
_STAGED = {CATALOGUE_DIR, SEGMENT_DIR, MANIFEST_NAME}


def remove_dead_staging(directory: str | os.PathLike, dest: str | None = None) -> list[Path]:
    """Delete the staging directories (``.NAME.publish-XXXX`` in ``directory``) that
    publishes which were killed left: those no live publish holds locked (a publish
    holds an flock on its own until it ends; the kernel drops it when the process dies).
    Only those of DEST ``dest`` (its last component), or of any DEST when None; links,
    files and directories holding anything a publish does not stage are left alone.
    ``publish`` calls it for its DEST, ``framestore recover`` for the store's directory.
    Returns what was removed."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        path = directory / name
        match = _STAGING_NAME.fullmatch(name)
        if match is None or (dest is not None and match.group(1) != dest):
            continue
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode) or not set(os.listdir(path)) <= _STAGED:
                continue
        except OSError:
            continue
        fd = _locked_dir(path)
        if fd is None:
            continue  # a live publish stages there
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class _HashingFile:
    """A write-only file that counts and hashes what passes through (Parquet writers
    and segment copies write through it); records the object on close."""

    def __init__(self, target: _Target, name: str, raw: Any):
        self._target = target
        self._name = name
        self._raw = raw
        self._sha = hashlib.sha256()
        self._size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sha.update(view)
        self._raw.write(view)
        self._size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._raw.close()
        self._target.objects[self._name] = {"bytes": self._size, "sha256": self._sha.hexdigest()}

    def __enter__(self) -> _HashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Selection:
    """The published part of the catalogue, chosen in one read snapshot."""

    episodes: list[int]
    runs: set[int]
    segments: list[int]
    skipped: dict[int, str]


def publish(
    store: FrameStore,
    dest: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> PublishReport:
    """Publish ``store`` to ``dest`` (see the module docstring).

    Args:
        store: an open store (read-only is enough); it may be being recorded.
        dest: a new local directory or an fsspec URL (``s3://bucket/prefix``).
        storage_options: passed to fsspec (credentials, ``client_kwargs``...).
        progress: called as ``progress(bytes_done, bytes_planned)``.

    Raises:
        InvalidInput: ``dest`` exists and is not empty, or nothing can be published.
        MissingExtra: pyarrow / fsspec (/ s3fs) are not installed.
    """
    if store.published:
        raise InvalidInput(f"{store.location} is a published store already")
    pa = require("pyarrow", extra="s3", what="publish")
    pq = require("pyarrow.parquet", extra="s3", what="publish")
    t0 = time.perf_counter()
    report = PublishReport(source=store.location, dest=shown_location(dest))
    try:
        target = _Target(os.fspath(dest), storage_options)
    except Exception as e:
        raise _backend_error(os.fspath(dest), e) from None
    try:
        with store.catalog.connection.read_snapshot():
            sel = _select(store)
            report.skipped = sel.skipped
            if not sel.episodes:
                raise InvalidInput(f"{store.location}: no finished episode in sealed segments")
            totals = _write_catalogue(store, target, sel, report, pa, pq)
            _write_stream_totals(store, target, sel, pa, pq)
        extents = _write_chunks_table(store, target, totals, pa, pq)
        _write_totals_table(target, totals, extents, pa, pq)
        _copy_segments(store, target, sel.segments, progress)
        _write_manifest(store, target, report)
        target.commit()
    except BaseException as e:
        target.abort()
        if isinstance(e, Exception):
            raise _backend_error(target.dest, e) from None
        raise
    report.segments = len(sel.segments)
    report.bytes = sum(o["bytes"] for o in target.objects.values())
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _backend_error(dest: str, error: Exception) -> Exception:
    """``error`` itself when it is ours, an ``OSError`` (fsspec's translation of what
    the backend said) or a built-in (a bug to be seen as one); the backend's own
    exceptions (botocore's "no credentials", "could not connect", a refused bucket name)
    as a ``StoreIOError`` naming DEST in one line, without the URL's ``user:password``."""
    if isinstance(error, FrameStoreError | OSError) or type(error).__module__ == "builtins":
        return error
    why = f"{type(error).__name__}: {error}".replace(userinfo(dest), "***")
    return StoreIOError(shown_location(dest), f"cannot publish there: {why}")


def _select(store: FrameStore) -> _Selection:
    sealed = {s for s in list_segment_ids(store.root) if is_sealed(segment_path(store.root, s))}
    chosen, runs, used, skipped = [], set(), set(), {}
    for ep in store.episodes():
        if ep.status == "recording":
            skipped[ep.id] = "being recorded (or never closed: run recover)"
            continue
        segs = set(store.catalog.episodes.chunks(ep.id))
        if not segs <= sealed:
            skipped[ep.id] = f"frames in segment {min(segs - sealed)}, which is not sealed yet"
            continue
        chosen.append(ep.id)
        runs.add(ep.run_id)
        used |= segs
    return _Selection(chosen, runs, sorted(used), skipped)


def _schema(store: FrameStore, table: str, pa: Any) -> Any:
    return pa.schema(
        [
            (n, getattr(pa, _ARROW_TYPES.get(t, "string"))())
            for n, t in store.catalog.tables.columns(table)
        ]
    )


def _write_table(target: _Target, table: str, schema: Any, batches: Any, pa: Any, pq: Any) -> None:
    with target.open(catalogue_object(table)) as out:
        with pq.ParquetWriter(out, schema, compression="zstd") as writer:
            for rows in batches:
                columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
                arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


@dataclass
class _EpisodeTotals:
    """What publish counts of one episode while it writes its steps."""

    steps: int = 0
    frames: int = 0
    raw_frame_bytes: int = 0
    chunks: set[tuple[int, int]] = field(default_factory=set)  # (segment, offset)


def _write_catalogue(
    store: FrameStore, target: _Target, sel: _Selection, report: PublishReport, pa: Any, pq: Any
) -> dict[int, _EpisodeTotals]:
    """The four tables; returns each published episode's totals (and chunks)."""
    cat = store.catalog
    wanted = set(sel.episodes)
    merged = cat.segments.merged()  # their file headers name their source's id
    rows = {
        "runs": [r for r in cat.tables.rows("runs") if r[0] in sel.runs],
        "episodes": [r for r in cat.tables.rows("episodes") if r[0] in wanted],
        "segments": [_segment_row(store, sid, merged.get(sid)) for sid in sel.segments],
    }
    for table, table_rows in rows.items():
        _write_table(target, table, _schema(store, table, pa), [table_rows], pa, pq)
    totals = {eid: _EpisodeTotals() for eid in sel.episodes}
    _write_table(target, "steps", _schema(store, "steps", pa), _step_batches(cat, totals), pa, pq)
    if cat.connection.has_m003:  # streams other than render: their rows and their chunks
        report.stream_frames = _write_stream_tables(store, target, sel, totals, pa, pq)
    report.episodes = len(sel.episodes)
    report.steps = sum(t.steps for t in totals.values())
    report.frames = sum(t.frames for t in totals.values())
    return totals


def _step_batches(cat: Catalog, totals: dict[int, _EpisodeTotals]) -> Iterator[list[tuple]]:
    """The step rows of the episodes of ``totals`` in row groups, counted into their
    totals as they go."""
    names = [n for n, _t in cat.tables.columns("steps")]
    seg_col, off_col = names.index("frame_segment"), names.index("frame_offset")
    shape_col = names.index("frame_shape")
    raw_bytes = functools.lru_cache(maxsize=64)(
        lambda text: math.prod(parse_shape(text) or ()) if text else 0
    )
    batch = []
    for eid, counts in totals.items():
        for row in cat.tables.episode_step_rows(eid):
            batch.append(row)
            counts.steps += 1
            if row[seg_col] is not None:
                counts.frames += 1
                counts.raw_frame_bytes += raw_bytes(row[shape_col])
                counts.chunks.add((row[seg_col], row[off_col]))
            if len(batch) >= _ROW_GROUP:
                yield batch
                batch = []
    yield batch


def _write_stream_tables(
    store: FrameStore,
    target: _Target,
    sel: _Selection,
    totals: dict[int, _EpisodeTotals],
    pa: Any,
    pq: Any,
) -> int:
    """The ``streams`` and ``step_frames`` tables of streams other than render; their
    chunks join their episode's totals. Returns the stream frames published."""
    cat = store.catalog
    _write_table(target, "streams", _schema(store, "streams", pa),
                 [[r for e in sel.episodes for r in cat.tables.episode_rows("streams", e)]],
                 pa, pq)  # fmt: skip
    frames = [r for e in sel.episodes for r in cat.tables.episode_rows("step_frames", e)]
    names = [n for n, _t in cat.tables.columns("step_frames")]
    seg_col, off_col = names.index("frame_segment"), names.index("frame_offset")
    frames = [r for r in frames if r[seg_col] is not None]  # (rows are frames)
    for r in frames:  # their chunks are the episode's too (listed, sized)
        totals[r[names.index("episode_id")]].chunks.add((r[seg_col], r[off_col]))
    _write_table(target, "step_frames", _schema(store, "step_frames", pa), [frames], pa, pq)
    return len(frames)


def _segment_row(store: FrameStore, segment: int, header_id: int | None) -> tuple:
    """A published ``segments`` row; ``header_id`` as recorded for a merged segment
    (verify checks each file's header against it, docs/FORMAT.md "Merged stores")."""
    path = segment_path(store.root, segment)
    st = path.stat()
    values = {
        "id": segment,
        "path": relative_segment_path(segment),
        "state": "sealed",
        "bytes": st.st_size,
        "live_bytes": 0,
        "created": st.st_mtime,
        "header_id": header_id,
    }
    return tuple(values.get(n) for n, _t in store.catalog.tables.columns("segments"))


def _write_chunks_table(
    store: FrameStore, target: _Target, totals: dict[int, _EpisodeTotals], pa: Any, pq: Any
) -> dict[tuple[int, int], int]:
    """The extent of every published chunk record; returns ``{(segment, offset): bytes}``."""
    rows = []
    by_segment: dict[int, set[int]] = {}
    for counts in totals.values():
        for seg, off in counts.chunks:
            by_segment.setdefault(seg, set()).add(off)
    for seg, offsets in sorted(by_segment.items()):
        with open(segment_path(store.root, seg), "rb") as fp:
            rows += [(seg, off, record_extent(fp, off)) for off in sorted(offsets)]
    schema = pa.schema([("segment", pa.int64()), ("offset", pa.int64()), ("bytes", pa.int64())])
    _write_table(target, CHUNKS_TABLE, schema, [rows], pa, pq)
    return {(seg, off): size for seg, off, size in rows}


def _write_totals_table(
    target: _Target,
    totals: dict[int, _EpisodeTotals],
    extents: dict[tuple[int, int], int],
    pa: Any,
    pq: Any,
) -> None:
    """One row per episode (docs/FORMAT.md "A published store"): what ``ls`` and
    ``info`` of the published copy read instead of its steps."""
    rows = [
        (eid, t.steps, t.frames, t.raw_frame_bytes, sum(extents[c] for c in t.chunks))
        for eid, t in totals.items()
    ]
    schema = pa.schema([(name, pa.int64()) for name in EPISODE_TOTALS_COLUMNS])
    _write_table(target, EPISODE_TOTALS_TABLE, schema, [rows], pa, pq)


def _write_stream_totals(
    store: FrameStore, target: _Target, sel: _Selection, pa: Any, pq: Any
) -> None:
    """One row per (episode, stream other than render) of the published episodes
    (docs/FORMAT.md "A published store"): what ``info`` of the copy reads instead of its
    steps and step_frames. Nothing for a store without streams (m003)."""
    cat = store.catalog
    if not cat.connection.has_m003:
        return
    rows = [
        (eid, idx, frames, raw)
        for eid in sel.episodes
        for idx, (frames, raw) in cat.streams.episode_totals(eid).items()
    ]
    schema = pa.schema([(name, pa.int64()) for name in STREAM_TOTALS_COLUMNS])
    _write_table(target, STREAM_TOTALS_TABLE, schema, [rows], pa, pq)


def _copy_segments(
    store: FrameStore, target: _Target, segments: list[int], progress: Progress | None
) -> None:
    """Sealed segments byte for byte (a sealed segment never changes), each opened like
    every segment read (never through a link, only a regular file)."""
    paths = [segment_path(store.root, s) for s in segments]
    try:
        total = sum(os.stat(p, follow_symlinks=False).st_size for p in paths)
    except FileNotFoundError:
        total = 0  # the missing one is named when it is opened, below
    done = 0
    for sid, path in zip(segments, paths, strict=True):
        try:
            src = open_segment(path, sid)
        except SegmentMissing:
            raise InvalidInput(
                f"{store.location}: segment {sid} was removed while publishing (did a gc or "
                "merge run?); publish again"
            ) from None
        with src, target.open(relative_segment_path(sid)) as out:
            while block := src.read(_COPY_BLOCK):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)


def _write_manifest(store: FrameStore, target: _Target, report: PublishReport) -> None:
    manifest = {
        "format": PUBLISHED_FORMAT,
        "version": PUBLISHED_VERSION,
        "created": time.time(),
        "source": store.name,  # the store's name, not the publisher's path to it
        "segment_format": VERSION,
        "schema_version": store.catalog.connection.schema()["version"],
        "episodes": report.episodes,
        "steps": report.steps,
        "frames": report.frames,
        "stream_frames": report.stream_frames,
        "objects": dict(sorted(target.objects.items())),
    }
    data = dumps(manifest, compact=False).encode()
    with target.fs.open(f"{target.root}/{MANIFEST_NAME}", "wb") as fp:
        fp.write(data)
    # Listed like the objects so that commit fsyncs it and abort removes it.
    target.objects[MANIFEST_NAME] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
