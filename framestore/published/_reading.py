"""Opening a published store (written by ``framestore.maintenance.publish``) for reading.

A published store has no SQLite file. Its reader:

1. reads ``manifest.json`` and checks its format, version and object list (names must
   be a catalogue table or a segment: nothing outside the store is ever named);
2. downloads each catalogue table (rows, no frames), checks its size and SHA-256
   against the manifest, and loads the rows into a scratch SQLite database built by the
   project's migrations, so ``Catalog`` and ``FrameStore`` read it unchanged. Runs,
   episodes, segments, streams and the per-episode (and per-stream) totals are loaded at
   once; the steps and step_frames tables (the ones that grow with the data) only when a
   query first needs them (``Connection.defer_table``): ``ls`` and ``info`` count from the
   totals and never read them. A copy published before the totals existed (manifest version 1) gets them from
   one streaming pass over the steps table's episode and frame columns, a batch at a
   time, never the whole table;
3. reads segments through ``RemoteSegments`` (ranged reads, one per chunk record) for a
   URL, or from ``segments/`` like any store for a local directory; every record's CRC
   and every chunk's keys are checked as for a local store.

What a reader trusts: the manifest's list of objects, sizes and checksums (the catalogue
is refused when it does not match), and each record's CRC. A segment object's SHA-256 is
not checked on read (that needs the whole object); its size is.

What a reader never trusts: that an object is as large as the manifest or the server
says. Every object is read through ``_sources.ObjectReader``: at most the stated size +
1 byte (the manifest: ``MAX_MANIFEST_BYTES`` + 1), streamed to a temporary file while it
is hashed, each request within ``timeout`` seconds (``storage_options={"timeout": S}``,
``FRAMESTORE_TIMEOUT``, default 30), and in a local directory never through a link or
from anything but a regular file. A catalogue table must hold the rows the manifest
counts (steps, episodes; at most that many runs, segments and chunks) before any row is
loaded, no row group of more than ``MAX_PUBLISHED_GROUP_ROWS`` rows or column chunk the
footer says decompresses to more than ``MAX_PUBLISHED_COLUMN_BYTES``, and it is loaded
one batch of rows at a time (never the whole table in memory). The totals must count
the manifest's steps and frames, and agree with the step rows once those are loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._format import DB_NAME, parse_segment_name
from .._format.published import (
    CATALOGUE_DIR,
    CHUNKS_TABLE,
    EPISODE_TOTALS_COLUMNS,
    EPISODE_TOTALS_TABLE,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_PUBLISHED_COLUMN_BYTES,
    MAX_PUBLISHED_GROUP_ROWS,
    PUBLISHED_FORMAT,
    PUBLISHED_VERSIONS_READ,
    STREAM_TOTALS_COLUMNS,
    STREAM_TOTALS_TABLE,
    catalogue_object,
)
from .._format.streams import MAX_STREAMS
from ..catalog import OPTIONAL_TABLES, PUBLISHED_TABLES, Catalog, parse_shape
from ..disk._sources import DEFAULT_TIMEOUT, ObjectReader, ObjectUnreadable, RemoteSegments
from ..errors import (
    FrameStoreError,
    InvalidInput,
    NotAStore,
    PublishedObjectError,
    SchemaTooNew,
)
from ..extras import require

__all__ = [
    "Manifest",
    "PublishedParts",
    "is_published",
    "is_url",
    "open_fs",
    "open_published",
    "read_manifest",
    "shown_location",
    "userinfo",
]

_LOAD_BATCH = 10_000  # catalogue rows inserted at a time
_COUNT_BATCH = 64 * 1024  # step rows counted at a time (four columns)
_HASH_BLOCK = 8 * 1024 * 1024  # bytes read at a time when an object is checked whole


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in os.fspath(path)


def shown_location(location: str | os.PathLike) -> str:
    """``location`` as it may be printed or stored: a URL's ``user:password@`` part is
    masked (``ftp://***@host/x``), so credentials typed into a URL never reach an error
    message, a log, a manifest or a dataset column. Local paths are returned unchanged."""
    text = os.fspath(location)
    if not is_url(text):
        return text
    parts = urllib.parse.urlsplit(text)
    if "@" not in parts.netloc:
        return text
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def userinfo(url: str) -> str:
    """The ``user:password`` of a URL (a string no message may show), or ``"\0"``."""
    netloc = urllib.parse.urlsplit(url).netloc
    return netloc.rsplit("@", 1)[0] if "@" in netloc else "\0"


def is_published(path: str | os.PathLike) -> bool:
    """A URL, or a local directory holding a manifest (or a published catalogue that
    lost it) and no SQLite catalogue."""
    if is_url(path):
        return True
    root = Path(path)
    if (root / DB_NAME).exists():
        return False
    return (root / MANIFEST_NAME).is_file() or (root / CATALOGUE_DIR).is_dir()


def request_timeout(storage_options: Mapping[str, Any] | None) -> float:
    """Seconds one request to a published store may take: ``storage_options["timeout"]``,
    else ``$FRAMESTORE_TIMEOUT`` (the CLI's ``--timeout``), else ``DEFAULT_TIMEOUT``."""
    value = (storage_options or {}).get("timeout", os.environ.get("FRAMESTORE_TIMEOUT"))
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= 86400:
        raise InvalidInput(f"timeout {value!r}: give seconds, more than 0 and at most 86400")
    return seconds


def _with_timeouts(url: str, options: dict[str, Any], timeout: float) -> dict[str, Any]:
    """fsspec options with the backend's own connect/read timeouts set to ``timeout``
    where the caller did not set them (aiohttp's default is 5 minutes)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        import aiohttp

        client = dict(options.get("client_kwargs") or {})
        client.setdefault(
            "timeout", aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        )
        options["client_kwargs"] = client
    elif scheme in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        options["config_kwargs"] = config
    return options


def open_fs(location: str | os.PathLike, storage_options: Mapping[str, Any] | None) -> tuple:
    """``(fsspec file system, path on it)`` for a URL or local path. The option
    ``timeout`` (seconds per request) is framestore's: it sets the backend's own."""
    fsspec_core = require("fsspec.core", extra="s3", what="a published store")
    options = {k: v for k, v in (storage_options or {}).items() if k != "timeout"}
    url = os.fspath(location)
    try:
        options = _with_timeouts(url, options, request_timeout(storage_options))
        return fsspec_core.url_to_fs(url, **options)
    except ImportError as e:  # the protocol's own package (s3fs for s3://) is missing
        raise require_failed(shown_location(location), e) from None
    except ValueError as e:  # an unknown protocol
        raise NotAStore(shown_location(location), f"cannot open: {e}") from None


def require_failed(location: str, error: ImportError) -> Exception:
    from ..errors import MissingExtra

    module = (error.name or "s3fs").split(".")[0]
    return MissingExtra(f"reading {location}", module, "s3")


@dataclass(frozen=True)
class Manifest:
    """A published store's manifest: every object with its size and SHA-256."""

    objects: dict[str, tuple[int, str]]  # name -> (bytes, sha256 hex)
    schema_version: int
    data: dict[str, Any]  # the whole document
    counts: dict[str, int]  # episodes, steps, frames, stream_frames: what it must hold

    @property
    def segments(self) -> dict[int, int]:
        """``{segment id: object size}``."""
        out = {}
        for name, (size, _sha) in self.objects.items():
            sid = parse_segment_name(name.rpartition("/")[2])
            if sid is not None:
                out[sid] = size
        return out


def _object_names() -> set[str]:
    tables = (
        *PUBLISHED_TABLES,
        *OPTIONAL_TABLES,
        CHUNKS_TABLE,
        EPISODE_TOTALS_TABLE,
        STREAM_TOTALS_TABLE,
    )
    return {catalogue_object(t) for t in tables}


def read_manifest(reader: ObjectReader, location: str) -> Manifest:
    """Read and check ``manifest.json`` (at most ``MAX_MANIFEST_BYTES``, read through
    ``reader``'s bounds). ``NotAStore`` when there is none; ``PublishedObjectError``
    when it is not a valid manifest or cannot be read."""
    try:
        raw = reader.read(MANIFEST_NAME, 0, MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise NotAStore(location, f"no {MANIFEST_NAME}: not a published framestore store") from None
    except ObjectUnreadable as e:
        raise PublishedObjectError(location, MANIFEST_NAME, e.detail) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PublishedObjectError(
            location, MANIFEST_NAME, f"more than {MAX_MANIFEST_BYTES} bytes: too large"
        )
    try:
        return _parse_manifest(raw)
    except _InvalidManifest as e:
        raise PublishedObjectError(location, MANIFEST_NAME, f"invalid manifest: {e}") from None


class _InvalidManifest(Exception):
    """Why ``manifest.json`` is not a valid manifest (``read_manifest`` names the place)."""


def _parse_manifest(raw: bytes) -> Manifest:
    """The manifest document in ``raw``, checked: format, version, objects, counts."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise _InvalidManifest(f"not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != PUBLISHED_FORMAT:
        raise _InvalidManifest(f"format is not {PUBLISHED_FORMAT!r}")
    version = data.get("version")
    if version not in PUBLISHED_VERSIONS_READ or isinstance(version, bool):
        readable = " and ".join(map(str, PUBLISHED_VERSIONS_READ))
        raise _InvalidManifest(f"version {version!r}; this framestore reads {readable}")
    objects = _manifest_objects(data.get("objects"), version)
    schema_version = data.get("schema_version")
    if not isinstance(schema_version, int):
        raise _InvalidManifest("no schema_version")
    counts = {k: data.get(k) for k in ("episodes", "steps", "frames")}
    counts["stream_frames"] = data.get("stream_frames", 0)  # absent before streams
    for key, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _InvalidManifest(f"no count of {key}")
    return Manifest(objects, schema_version, data, counts)


def _manifest_objects(objects: Any, version: int) -> dict[str, tuple[int, str]]:
    """The manifest's object list, ``{name: (bytes, sha256 hex)}``: known names only,
    each entry with a size and a digest, every table a version-``version`` store has."""
    if not isinstance(objects, dict):
        raise _InvalidManifest("no object list")
    known = _object_names()
    out: dict[str, tuple[int, str]] = {}
    for name, entry in objects.items():
        is_segment = name.startswith("segments/") and parse_segment_name(name[9:]) is not None
        if not (is_segment or name in known):
            raise _InvalidManifest(f"unexpected object name {name!r}")
        if not isinstance(entry, dict):
            raise _InvalidManifest(f"entry of {name} is not an object")
        size, sha = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or size < 0 or not isinstance(sha, str) or len(sha) != 64:
            raise _InvalidManifest(f"entry of {name} needs bytes and a sha256")
        out[name] = (size, sha.lower())
    required = (*PUBLISHED_TABLES, *((EPISODE_TOTALS_TABLE,) if version >= 2 else ()))
    missing = [catalogue_object(t) for t in required if catalogue_object(t) not in out]
    if missing:
        raise _InvalidManifest(f"{missing[0]} is not listed")
    return out


def _mismatch(manifest: Manifest, name: str, size: int, sha: str) -> tuple[str, str] | None:
    """``(kind, detail)`` when an object of ``size`` bytes and digest ``sha`` is not what
    the manifest lists (kind ``"size"`` or ``"sha256"``), else None."""
    want_size, want_sha = manifest.objects[name]
    if size != want_size:
        return "size", f"{size} bytes, the manifest says {want_size} (truncated or replaced)"
    if sha != want_sha:
        return "sha256", f"sha256 mismatch (manifest {want_sha[:16]}..., object {sha[:16]}...)"
    return None


def fetch_checked(reader: ObjectReader, location: str, manifest: Manifest, name: str) -> Any:
    """An object, checked against the manifest's size and SHA-256, as a temporary file
    (kept in memory while small): read in blocks, at most the stated size + 1 byte."""
    want_size = manifest.objects[name][0]
    out = tempfile.SpooledTemporaryFile(max_size=_HASH_BLOCK)  # noqa: SIM115 - returned
    try:
        digest, size = _copy_capped(reader, name, want_size + 1, out)
        wrong = _mismatch(manifest, name, size, digest)
        if wrong is not None:
            detail = wrong[1]
            if size > want_size:
                detail = f"more than the {want_size} bytes the manifest says (replaced?)"
            raise PublishedObjectError(location, name, detail)
    except FileNotFoundError:
        out.close()
        raise PublishedObjectError(location, name, "object missing") from None
    except ObjectUnreadable as e:
        out.close()
        raise PublishedObjectError(location, name, e.detail) from None
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _copy_capped(reader: ObjectReader, name: str, cap: int, out: Any | None) -> tuple[str, int]:
    """``(sha256 hex, bytes)`` of the first ``cap`` bytes of an object, read in blocks
    (each one bounded request) and written to ``out`` when given."""
    digest, size = hashlib.sha256(), 0
    while size < cap:
        asked = min(_HASH_BLOCK, cap - size)
        block = reader.read(name, size, asked)
        digest.update(block)
        if out is not None:
            out.write(block)
        size += len(block)
        if len(block) < asked:  # the end of the object
            break
    return digest.hexdigest(), size


@dataclass(frozen=True)
class ObjectProblem:
    """An object of a published store that does not match its manifest.

    Attributes:
        name: the object's name in the store (``segments/seg-000003.fseg``).
        kind: ``"missing"``, ``"size"`` or ``"sha256"``.
        detail: what is wrong, for people.
        segment: the segment id when the object is a segment, else None.
    """

    name: str
    kind: str
    detail: str
    segment: int | None


@dataclass(frozen=True)
class PublishedObjects:
    """The objects a published store's manifest lists, where they are (for whole-object
    checks: ``FrameStore.check_published_objects``)."""

    reader: ObjectReader
    location: str
    manifest: Manifest

    @property
    def local(self) -> bool:
        return self.reader.local

    def problems(self, progress: Callable[[int, int], None] | None = None) -> list[ObjectProblem]:
        """Read every object whole, in blocks (never all in memory), and compare its size
        and SHA-256 with the manifest. ``progress(bytes_done, bytes_total)``."""
        total = sum(size for size, _sha in self.manifest.objects.values())
        done = 0
        out = []
        for name in sorted(self.manifest.objects):
            segment = parse_segment_name(name.rpartition("/")[2])
            try:  # at most the stated size + 1: "more" without reading an endless object
                sha, size = _copy_capped(
                    self.reader, name, self.manifest.objects[name][0] + 1, None
                )
            except FileNotFoundError:
                out.append(ObjectProblem(name, "missing", "object missing", segment))
            except ObjectUnreadable as e:  # a link or a FIFO (local), a timeout
                out.append(ObjectProblem(name, "missing", f"not readable: {e.detail}", segment))
            else:
                wrong = _mismatch(self.manifest, name, size, sha)
                if wrong is not None:
                    out.append(ObjectProblem(name, wrong[0], wrong[1], segment))
            done += self.manifest.objects[name][0]
            if progress is not None:
                progress(done, total)
        return out


@dataclass
class PublishedParts:
    """What ``FrameStore`` is built from for a published store."""

    root: Path
    catalog: Catalog
    source: RemoteSegments | None
    objects: PublishedObjects


def open_published(
    location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
) -> PublishedParts:
    """Read a published store's manifest and catalogue (see the module docstring)."""
    url = os.fspath(location).rstrip("/")
    text = shown_location(url)  # for messages: never the credentials of a URL
    fs, root = open_fs(url, storage_options)
    root = root.rstrip("/")
    local = not is_url(url) or url.startswith("file://")
    reader = ObjectReader(fs, root, local=local, timeout=request_timeout(storage_options))
    try:
        manifest = read_manifest(reader, text)
    except FrameStoreError:
        raise
    except Exception as e:  # the backend's own: a bad bucket name, no credentials, no route
        why = f"{type(e).__name__}: {e}".replace(userinfo(url), "***")
        raise NotAStore(text, f"cannot read {MANIFEST_NAME}: {why}") from None
    catalog = Catalog.scratch()
    try:
        ours = catalog.connection.schema()["version"]
        if manifest.schema_version > ours:
            raise SchemaTooNew(text, [f"schema version {manifest.schema_version} (ours: {ours})"])
        # Chunk extents: the remote reader's hints, and a version-1 copy's chunk bytes.
        counted = catalogue_object(EPISODE_TOTALS_TABLE) not in manifest.objects
        extents = _extents(reader, text, manifest) if counted or not local else {}
        unlisted = {segment for segment, _offset in extents} - set(manifest.segments)
        if unlisted:  # the step rows are checked the same way when they are loaded
            raise PublishedObjectError(
                text,
                catalogue_object(CHUNKS_TABLE),
                f"names segment {min(unlisted)}, which the manifest does not list",
            )
        with catalog.connection.transaction():
            for table in PUBLISHED_TABLES:
                if table != "steps":
                    with _parquet(reader, text, manifest, table) as data:
                        _load_table(catalog, table, data, text)
            _load_totals(catalog, reader, text, manifest, extents)
            if catalogue_object("streams") in manifest.objects:  # streams besides render
                with _parquet(reader, text, manifest, "streams") as data:
                    _load_table(catalog, "streams", data, text)
            _load_stream_totals(catalog, reader, text, manifest)
        catalog.connection.defer_table(
            "steps", lambda: _load_steps(catalog, reader, text, manifest)
        )
        if catalogue_object("step_frames") in manifest.objects:
            catalog.connection.defer_table(
                "step_frames", lambda: _load_stream_frames(catalog, reader, text, manifest)
            )
        source = None
        if not local:
            source = RemoteSegments(fs, root, manifest.segments, extents, text, reader)
        else:
            _check_local_sizes(Path(root), text, manifest)
    except BaseException:
        catalog.connection.close()
        raise
    objects = PublishedObjects(reader, text, manifest)
    return PublishedParts(Path(root) if source is None else Path(url), catalog, source, objects)


def _row_bounds(manifest: Manifest, table: str) -> tuple[int, int]:
    """``(fewest, most)`` rows a catalogue table of this manifest may hold."""
    c = manifest.counts
    exact = {"steps": c["steps"], "episodes": c["episodes"], EPISODE_TOTALS_TABLE: c["episodes"]}
    if table in exact:
        return exact[table], exact[table]
    if table == "step_frames":
        return c["stream_frames"], c["stream_frames"]
    # every published segment and chunk holds at least one published frame (of render
    # or of another stream)
    frames = c["frames"] + c["stream_frames"]
    most = {
        "runs": c["episodes"],
        "segments": frames,
        CHUNKS_TABLE: frames,
        "streams": c["episodes"] * MAX_STREAMS,
        STREAM_TOTALS_TABLE: c["episodes"] * MAX_STREAMS,
    }
    return 0, most[table]


class _Table:
    """A checked catalogue object opened as Parquet; ``batches()`` reads it a batch of
    rows at a time. A context manager (closes the temporary file)."""

    def __init__(self, file: Any, parquet: Any, name: str):
        self._file = file
        self.parquet = parquet
        self.name = name
        self.column_names = parquet.schema_arrow.names

    def batches(self) -> Any:
        return self.parquet.iter_batches(batch_size=_LOAD_BATCH)

    def __enter__(self) -> _Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.parquet.close()
        self._file.close()


def _parquet(reader: ObjectReader, location: str, manifest: Manifest, table: str) -> _Table:
    """A catalogue table, checked against the manifest (size, SHA-256 and row count)
    before any row is decoded."""
    pq = require("pyarrow.parquet", extra="s3", what="reading a published store")
    name = catalogue_object(table)
    file = fetch_checked(reader, location, manifest, name)
    try:
        parquet = pq.ParquetFile(file)
        rows = parquet.metadata.num_rows
    except Exception as e:  # pyarrow raises its own types for a file that is not Parquet
        file.close()
        raise PublishedObjectError(location, name, f"not a readable Parquet table ({e})") from None
    fewest, most = _row_bounds(manifest, table)
    if not fewest <= rows <= most:
        why = (
            f"{rows} rows where the manifest allows {most if fewest == most else f'at most {most}'}"
        )
    else:
        why = _oversized_group(parquet.metadata, rows)
    if why is not None:
        parquet.close()
        file.close()
        raise PublishedObjectError(location, name, f"{why}: not loaded")
    return _Table(file, parquet, name)


def _oversized_group(metadata: Any, rows: int) -> str | None:
    """Why a Parquet footer's row groups cannot be read one at a time within bounds (more
    rows than ``MAX_PUBLISHED_GROUP_ROWS``, a column chunk declared larger than
    ``MAX_PUBLISHED_COLUMN_BYTES``, groups that do not add up to the file's rows), or
    None. Nothing is decoded: these are the footer's numbers."""
    total = 0
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        total += group.num_rows
        if group.num_rows > MAX_PUBLISHED_GROUP_ROWS:
            return f"row group {i} holds {group.num_rows} rows (at most {MAX_PUBLISHED_GROUP_ROWS})"
        for j in range(group.num_columns):
            size = group.column(j).total_uncompressed_size
            if size > MAX_PUBLISHED_COLUMN_BYTES:
                return (
                    f"row group {i} column {j} decompresses to {size} bytes (at most "
                    f"{MAX_PUBLISHED_COLUMN_BYTES})"
                )
    if total != rows:
        return f"row groups hold {total} rows, the footer says {rows}"
    return None


def _load_table(catalog: Catalog, table: str, data: _Table, location: str) -> None:
    """Rows into the scratch catalogue a batch at a time; the count is checked again as
    they come (the Parquet footer's count is the writer's word, the rows are the data)."""
    columns = data.column_names
    most = data.parquet.metadata.num_rows
    loaded = 0
    try:
        for batch in data.batches():
            loaded += batch.num_rows
            if loaded > most:
                raise ValueError(f"more rows than the {most} its footer declares")
            values = [col.to_pylist() for col in batch.columns]
            catalog.tables.insert(table, columns, zip(*values, strict=True))
    except (ValueError, sqlite3.Error) as e:  # unknown columns, duplicate or invalid rows
        raise PublishedObjectError(location, data.name, f"bad rows: {e}") from None
    except Exception as e:  # pyarrow's own errors for damaged pages
        raise PublishedObjectError(location, data.name, f"unreadable rows ({e})") from None


def _load_steps(catalog: Catalog, reader: ObjectReader, location: str, manifest: Manifest) -> None:
    """The steps table into the scratch catalogue (deferred: run by the catalogue before
    the first query that reads steps), checked against the manifest and the totals."""
    name = catalogue_object("steps")
    with _parquet(reader, location, manifest, "steps") as data:
        _load_table(catalog, "steps", data, location)
    unlisted = catalog.pointers.referenced_segments() - set(manifest.segments)
    if unlisted:
        raise PublishedObjectError(
            location, name, f"points into segment {min(unlisted)}, which the manifest does not list"
        )
    differs = catalog.stats.totals_disagreement()
    if differs is not None:
        raise PublishedObjectError(
            location,
            catalogue_object(EPISODE_TOTALS_TABLE),
            f"episode {differs[0]}: {differs[1]} (replaced?)",
        )


def _load_stream_frames(
    catalog: Catalog, reader: ObjectReader, location: str, manifest: Manifest
) -> None:
    """The pointers of streams other than render (deferred like the steps), checked to
    point into listed segments only."""
    with _parquet(reader, location, manifest, "step_frames") as data:
        _load_table(catalog, "step_frames", data, location)
    unlisted = catalog.pointers.referenced_segments() - set(manifest.segments)
    if unlisted:
        raise PublishedObjectError(
            location,
            catalogue_object("step_frames"),
            f"points into segment {min(unlisted)}, which the manifest does not list",
        )
    differs = catalog.stats.stream_totals_disagreement()
    if differs is not None:
        raise PublishedObjectError(
            location,
            catalogue_object(STREAM_TOTALS_TABLE),
            f"episode {differs[0]}: {differs[1]} (replaced?)",
        )


def _load_totals(
    catalog: Catalog,
    reader: ObjectReader,
    location: str,
    manifest: Manifest,
    extents: Mapping[tuple[int, int], int],
) -> None:
    """Per-episode totals into the scratch catalogue: the published object (version 2),
    else one streaming pass over the steps table (version 1); then checked against the
    manifest's counts."""
    name = catalogue_object(EPISODE_TOTALS_TABLE)
    if name in manifest.objects:
        _load_int_rows(
            reader,
            location,
            manifest,
            EPISODE_TOTALS_TABLE,
            EPISODE_TOTALS_COLUMNS,
            catalog.tables.add_episode_totals,
        )
    else:
        name = catalogue_object("steps")  # what the totals were counted from
        counted = _count_steps(reader, location, manifest, extents)
        stepless = set(catalog.episodes.statuses()) - {row[0] for row in counted}
        catalog.tables.add_episode_totals([*counted, *((eid, 0, 0, 0, 0) for eid in stepless)])
    wrong = catalog.stats.totals_problem(manifest.counts["steps"], manifest.counts["frames"])
    if wrong is not None:
        raise PublishedObjectError(location, name, f"{wrong}: not loaded")


def _load_stream_totals(
    catalog: Catalog, reader: ObjectReader, location: str, manifest: Manifest
) -> None:
    """Per-stream totals into the scratch catalogue (after ``streams`` and the episode
    totals), checked against them and the manifest's ``stream_frames``. A copy without
    the object and without stream frames has none to count (empty totals); one with
    stream frames counts them from steps and step_frames when asked."""
    name = catalogue_object(STREAM_TOTALS_TABLE)
    if name not in manifest.objects and manifest.counts["stream_frames"]:
        return
    catalog.tables.add_stream_totals([])  # the table, also when no row follows
    if name not in manifest.objects:
        return
    _load_int_rows(
        reader, location, manifest, STREAM_TOTALS_TABLE, STREAM_TOTALS_COLUMNS,
        catalog.tables.add_stream_totals,
    )  # fmt: skip
    wrong = catalog.stats.stream_totals_problem(manifest.counts["stream_frames"])
    if wrong is not None:
        raise PublishedObjectError(location, name, f"{wrong}: not loaded")


def _load_int_rows(
    reader: ObjectReader,
    location: str,
    manifest: Manifest,
    table: str,
    columns: tuple[str, ...],
    add: Callable[[Any], int],
) -> None:
    """A totals object (int64 ``columns``) passed to ``add`` a batch of rows at a time."""
    name = catalogue_object(table)
    with _parquet(reader, location, manifest, table) as data:
        types = {f.name: str(f.type) for f in data.parquet.schema_arrow}
        if any(types.get(c) != "int64" for c in columns):
            raise PublishedObjectError(
                location, name, f"not the int64 columns {', '.join(columns)}"
            )
        try:
            for batch in data.parquet.iter_batches(batch_size=_LOAD_BATCH, columns=list(columns)):
                values = [col.to_pylist() for col in batch.columns]
                add(zip(*values, strict=True))
        except sqlite3.Error as e:  # a second row for one key, a NULL count
            raise PublishedObjectError(location, name, f"bad rows: {e}") from None
        except Exception as e:  # pyarrow's own errors for damaged pages
            raise PublishedObjectError(location, name, f"unreadable rows ({e})") from None


_COUNTED_COLUMNS = ["episode_id", "frame_segment", "frame_offset", "frame_shape"]


def _count_steps(
    reader: ObjectReader,
    location: str,
    manifest: Manifest,
    extents: Mapping[tuple[int, int], int],
) -> list[tuple[int, int, int, int, int | None]]:
    """Totals rows (``EPISODE_TOTALS_COLUMNS``) counted from a version-1 copy's steps
    table: four columns read a batch at a time (Arrow's group-by per batch), so memory
    holds one batch and one entry per episode and chunk, never the table."""
    pa = require("pyarrow", extra="s3", what="reading a published store")
    pc = require("pyarrow.compute", extra="s3", what="reading a published store")
    with _parquet(reader, location, manifest, "steps") as data:
        try:
            counts: dict[int, list[int]] = {}  # episode -> [steps, frames, raw bytes]
            chunks: dict[int, set[tuple[int, int]]] = {}
            for batch in data.parquet.iter_batches(
                batch_size=_COUNT_BATCH, columns=_COUNTED_COLUMNS
            ):
                table = pa.Table.from_batches([batch])
                for eid, shape, n_rows, n_frames in zip(
                    *_group(table, ["episode_id", "frame_shape"], "frame_segment"), strict=True
                ):
                    c = counts.setdefault(int(eid), [0, 0, 0])
                    c[0] += n_rows
                    c[1] += n_frames
                    if n_frames and shape:
                        c[2] += math.prod(parse_shape(shape) or ()) * n_frames
                framed = table.filter(pc.is_valid(table["frame_segment"]))
                keys = framed.group_by(["episode_id", "frame_segment", "frame_offset"]).aggregate(
                    []
                )
                for eid, seg, off in zip(
                    *(keys[k].to_pylist() for k in _COUNTED_COLUMNS[:3]), strict=True
                ):
                    chunks.setdefault(int(eid), set()).add((int(seg), int(off)))
        except FrameStoreError:
            raise
        except Exception as e:  # pyarrow's own errors: damaged pages, missing columns
            raise PublishedObjectError(location, data.name, f"unreadable rows ({e})") from None
    out = []
    for eid, (steps, frames, raw) in sorted(counts.items()):
        known = [extents.get(c) for c in chunks.get(eid, ())]
        size = None if None in known else sum(known)  # unknown without the chunks table
        out.append((eid, steps, frames, raw, size))
    return out


def _group(table: Any, keys: list[str], counted: str) -> tuple[list, ...]:
    """``(key columns..., rows, non-null values of counted)`` per group of ``keys``."""
    grouped = table.group_by(keys).aggregate([([], "count_all"), (counted, "count")])
    return (
        *(grouped[k].to_pylist() for k in keys),
        grouped["count_all"].to_pylist(),
        grouped[f"{counted}_count"].to_pylist(),
    )


def _check_local_sizes(root: Path, location: str, manifest: Manifest) -> None:
    """Segment files of a local published directory against the manifest's sizes (a
    missing one is reported when read, like in any store)."""
    for name, (size, _sha) in manifest.objects.items():
        if not name.startswith("segments/"):
            continue
        try:
            st = os.lstat(root / name)  # a link is refused when read, never followed
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size != size:
            actual = st.st_size
            raise PublishedObjectError(
                location, name, f"{actual} bytes, the manifest says {size} (truncated or replaced)"
            )


def _extents(reader: ObjectReader, location: str, manifest: Manifest) -> dict[tuple[int, int], int]:
    name = catalogue_object(CHUNKS_TABLE)
    if name not in manifest.objects:
        return {}
    out = {}
    with _parquet(reader, location, manifest, CHUNKS_TABLE) as data:
        try:
            for batch in data.batches():
                cols = batch.to_pydict()
                for s, o, n in zip(cols["segment"], cols["offset"], cols["bytes"], strict=True):
                    out[(int(s), int(o))] = int(n)
        except Exception as e:  # noqa: BLE001 - missing columns, pyarrow's own errors
            raise PublishedObjectError(location, name, f"unreadable rows ({e})") from None
    return out
