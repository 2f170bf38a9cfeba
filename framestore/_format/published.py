"""The layout of a published store (docs/FORMAT.md, "Published stores"): object names,
the manifest's format and versions, and the bounds a reader holds a catalogue to."""

from __future__ import annotations

# A published store (``framestore publish``): the sealed segments under SEGMENT_DIR as
# they are, the catalogue as one Parquet object per table, and a manifest listing every
# object with its size and SHA-256. The manifest is written last.
MANIFEST_NAME = "manifest.json"
CATALOGUE_DIR = "catalogue"
PUBLISHED_FORMAT = "framestore-published"  # the manifest's "format"
PUBLISHED_VERSION = 2  # the manifest's "version" this framestore writes
PUBLISHED_VERSIONS_READ = (1, 2)  # and the ones it reads (1: no episode totals)
CHUNKS_TABLE = "chunks"  # (segment, offset, bytes) of every published CHUNK record
# Per-episode totals (version 2): what listing a published store needs, so that ``ls`` and
# ``info`` never read the steps table. One row per published episode, int64 columns:
EPISODE_TOTALS_TABLE = "episode_totals"
EPISODE_TOTALS_COLUMNS = (
    "episode_id",
    "steps",  # step rows
    "frames",  # of them, rows with a stored frame
    "raw_frame_bytes",  # uncompressed bytes of those frames (from their shapes)
    "chunk_bytes",  # bytes of the chunk records holding them (distinct chunks)
)
# Per-episode, per-stream totals of the streams other than render (version 2, stores with
# streams): what ``info`` needs, so that it never reads steps or step_frames. One row per
# row of the streams table, int64 columns:
STREAM_TOTALS_TABLE = "stream_totals"
STREAM_TOTALS_COLUMNS = (
    "episode_id",
    "stream",  # the stream's index (streams.idx, >= 1)
    "frames",  # step_frames rows with a stored frame
    "raw_frame_bytes",  # uncompressed bytes of those frames not shared with render's
)
# A catalogue table is read one row group at a time; a reader refuses a row group of more
# rows, or a column chunk the footer says decompresses to more bytes, than these.
MAX_PUBLISHED_GROUP_ROWS = 1024 * 1024
MAX_PUBLISHED_COLUMN_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest claiming more is refused unread


def catalogue_object(table: str) -> str:
    """The object name of a catalogue table in a published store, relative to its root."""
    return f"{CATALOGUE_DIR}/{table}.parquet"
