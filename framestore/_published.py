"""Opening a published store (written by ``framestore.publish``) for reading.

A published store has no SQLite file. Its reader:

1. reads ``manifest.json`` and checks its format, version and object list (names must
   be a catalogue table or a segment: nothing outside the store is ever named);
2. downloads each catalogue table (small: rows, no frames), checks its size and SHA-256
   against the manifest, and loads the rows into a scratch SQLite database built by the
   project's migrations, so ``Catalog`` and ``FrameStore`` read it unchanged;
3. reads segments through ``RemoteSegments`` (ranged reads, one per chunk record) for a
   URL, or from ``segments/`` like any store for a local directory; every record's CRC
   and every chunk's keys are checked as for a local store.

What a reader trusts: the manifest's list of objects, sizes and checksums (the catalogue
is refused when it does not match), and each record's CRC. A segment object's SHA-256 is
not checked on read (that needs the whole object); its size is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._format import (
    CATALOGUE_DIR,
    CHUNKS_TABLE,
    DB_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    PUBLISHED_FORMAT,
    PUBLISHED_VERSION,
    catalogue_object,
    parse_segment_name,
)
from ._sources import RemoteSegments
from .catalog import PUBLISHED_TABLES, Catalog
from .errors import FrameStoreError, NotAStore, PublishedObjectError, SchemaTooNew
from .extras import require

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


def open_fs(location: str | os.PathLike, storage_options: Mapping[str, Any] | None) -> tuple:
    """``(fsspec file system, path on it)`` for a URL or local path."""
    fsspec_core = require("fsspec.core", extra="s3", what="a published store")
    try:
        return fsspec_core.url_to_fs(os.fspath(location), **dict(storage_options or {}))
    except ImportError as e:  # the protocol's own package (s3fs for s3://) is missing
        raise require_failed(shown_location(location), e) from None
    except ValueError as e:  # an unknown protocol
        raise NotAStore(shown_location(location), f"cannot open: {e}") from None


def require_failed(location: str, error: ImportError) -> Exception:
    from .errors import MissingExtra

    module = (error.name or "s3fs").split(".")[0]
    return MissingExtra(f"reading {location}", module, "s3")


@dataclass(frozen=True)
class Manifest:
    """A published store's manifest: every object with its size and SHA-256."""

    objects: dict[str, tuple[int, str]]  # name -> (bytes, sha256 hex)
    schema_version: int
    data: dict[str, Any]  # the whole document

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
    return {catalogue_object(t) for t in (*PUBLISHED_TABLES, CHUNKS_TABLE)}


def read_manifest(fs: Any, root: str, location: str) -> Manifest:
    """Read and check ``manifest.json``. ``NotAStore`` when there is none;
    ``PublishedObjectError`` when it is not a valid manifest."""
    path = f"{root}/{MANIFEST_NAME}"
    try:
        size = fs.size(path)
        if size > MAX_MANIFEST_BYTES:
            raise PublishedObjectError(location, MANIFEST_NAME, f"{size} bytes: too large")
        raw = fs.cat_file(path)
    except FileNotFoundError:
        raise NotAStore(location, f"no {MANIFEST_NAME}: not a published framestore store") from None

    def bad(why: str) -> PublishedObjectError:
        return PublishedObjectError(location, MANIFEST_NAME, f"invalid manifest: {why}")

    try:
        data = json.loads(raw)
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != PUBLISHED_FORMAT:
        raise bad(f"format is not {PUBLISHED_FORMAT!r}")
    if data.get("version") != PUBLISHED_VERSION:
        raise bad(f"version {data.get('version')!r}; this framestore reads {PUBLISHED_VERSION}")
    objects = data.get("objects")
    if not isinstance(objects, dict):
        raise bad("no object list")
    known = _object_names()
    out: dict[str, tuple[int, str]] = {}
    for name, entry in objects.items():
        is_segment = name.startswith("segments/") and parse_segment_name(name[9:]) is not None
        if not (is_segment or name in known):
            raise bad(f"unexpected object name {name!r}")
        if not isinstance(entry, dict):
            raise bad(f"entry of {name} is not an object")
        size, sha = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or size < 0 or not isinstance(sha, str) or len(sha) != 64:
            raise bad(f"entry of {name} needs bytes and a sha256")
        out[name] = (size, sha.lower())
    missing = [catalogue_object(t) for t in PUBLISHED_TABLES if catalogue_object(t) not in out]
    if missing:
        raise bad(f"{missing[0]} is not listed")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise bad("no schema_version")
    return Manifest(out, version, data)


def _mismatch(manifest: Manifest, name: str, size: int, sha: str) -> tuple[str, str] | None:
    """``(kind, detail)`` when an object of ``size`` bytes and digest ``sha`` is not what
    the manifest lists (kind ``"size"`` or ``"sha256"``), else None."""
    want_size, want_sha = manifest.objects[name]
    if size != want_size:
        return "size", f"{size} bytes, the manifest says {want_size} (truncated or replaced)"
    if sha != want_sha:
        return "sha256", f"sha256 mismatch (manifest {want_sha[:16]}..., object {sha[:16]}...)"
    return None


def fetch_checked(fs: Any, root: str, location: str, manifest: Manifest, name: str) -> bytes:
    """A whole (small) object, checked against the manifest's size and SHA-256."""
    try:
        data = fs.cat_file(f"{root}/{name}")
    except FileNotFoundError:
        raise PublishedObjectError(location, name, "object missing") from None
    wrong = _mismatch(manifest, name, len(data), hashlib.sha256(data).hexdigest())
    if wrong is not None:
        raise PublishedObjectError(location, name, wrong[1])
    return data


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

    fs: Any
    root: str
    location: str
    manifest: Manifest
    local: bool

    def problems(self, progress: Callable[[int, int], None] | None = None) -> list[ObjectProblem]:
        """Read every object whole, in blocks (never all in memory), and compare its size
        and SHA-256 with the manifest. ``progress(bytes_done, bytes_total)``."""
        total = sum(size for size, _sha in self.manifest.objects.values())
        done = 0
        out = []
        for name in sorted(self.manifest.objects):
            segment = parse_segment_name(name.rpartition("/")[2])
            try:
                size, sha = self._digest(name)
            except FileNotFoundError:
                out.append(ObjectProblem(name, "missing", "object missing", segment))
            except OSError as e:  # a link where a file should be (local), unreadable
                out.append(ObjectProblem(name, "missing", f"not readable: {e.strerror}", segment))
            else:
                wrong = _mismatch(self.manifest, name, size, sha)
                if wrong is not None:
                    out.append(ObjectProblem(name, wrong[0], wrong[1], segment))
            done += self.manifest.objects[name][0]
            if progress is not None:
                progress(done, total)
        return out

    def _digest(self, name: str) -> tuple[int, str]:
        path = f"{self.root}/{name}"
        if self.local:  # never through a link, like every other local open of a store
            fp: Any = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        else:
            fp = self.fs.open(path, "rb")
        digest, size = hashlib.sha256(), 0
        with fp:
            while block := fp.read(_HASH_BLOCK):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()


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
    try:
        manifest = read_manifest(fs, root, text)
    except FrameStoreError:
        raise
    except Exception as e:  # the backend's own: a bad bucket name, no credentials, no route
        why = f"{type(e).__name__}: {e}".replace(userinfo(url), "***")
        raise NotAStore(text, f"cannot read {MANIFEST_NAME}: {why}") from None
    catalog = Catalog.scratch()
    try:
        ours = catalog.schema()["version"]
        if manifest.schema_version > ours:
            raise SchemaTooNew(text, [f"schema version {manifest.schema_version} (ours: {ours})"])
        with catalog.transaction():
            for table in PUBLISHED_TABLES:
                data = _parquet(fs, root, text, manifest, table)
                _load_table(catalog, table, data, text)
        unlisted = catalog.referenced_segments() - set(manifest.segments)
        if unlisted:
            raise PublishedObjectError(
                text,
                catalogue_object("steps"),
                f"points into segment {min(unlisted)}, which the manifest does not list",
            )
        source = None
        if is_url(url) and not url.startswith("file://"):
            extents = _extents(fs, root, text, manifest)
            source = RemoteSegments(fs, root, manifest.segments, extents, text)
        else:
            _check_local_sizes(Path(root), text, manifest)
    except BaseException:
        catalog.close()
        raise
    objects = PublishedObjects(fs, root, text, manifest, local=source is None)
    return PublishedParts(Path(root) if source is None else Path(url), catalog, source, objects)


def _parquet(fs: Any, root: str, location: str, manifest: Manifest, table: str) -> Any:
    pq = require("pyarrow.parquet", extra="s3", what="reading a published store")
    name = catalogue_object(table)
    data = fetch_checked(fs, root, location, manifest, name)
    try:
        return pq.read_table(io.BytesIO(data))
    except Exception as e:  # pyarrow raises its own types for a file that is not Parquet
        raise PublishedObjectError(location, name, f"not a readable Parquet table ({e})") from None


def _load_table(catalog: Catalog, table: str, data: Any, location: str) -> None:
    columns = data.column_names
    try:
        for batch in data.to_batches(_LOAD_BATCH):
            values = [col.to_pylist() for col in batch.columns]
            catalog.insert_rows(table, columns, zip(*values, strict=True))
    except (ValueError, sqlite3.Error) as e:  # unknown columns, duplicate or invalid rows
        raise PublishedObjectError(location, catalogue_object(table), f"bad rows: {e}") from None


def _check_local_sizes(root: Path, location: str, manifest: Manifest) -> None:
    """Segment files of a local published directory against the manifest's sizes (a
    missing one is reported when read, like in any store)."""
    for name, (size, _sha) in manifest.objects.items():
        path = root / name
        if name.startswith("segments/") and path.is_file() and path.stat().st_size != size:
            actual = path.stat().st_size
            raise PublishedObjectError(
                location, name, f"{actual} bytes, the manifest says {size} (truncated or replaced)"
            )


def _extents(fs: Any, root: str, location: str, manifest: Manifest) -> dict[tuple[int, int], int]:
    name = catalogue_object(CHUNKS_TABLE)
    if name not in manifest.objects:
        return {}
    cols = _parquet(fs, root, location, manifest, CHUNKS_TABLE).to_pydict()
    return {
        (int(s), int(o)): int(n)
        for s, o, n in zip(cols["segment"], cols["offset"], cols["bytes"], strict=True)
    }
