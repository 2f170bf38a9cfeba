"""Parquet writer: a store (or some of its episodes) as sharded Parquet, one row per step,
for Hugging Face ``datasets``, Ray Data, pandas, DuckDB and Spark.

Columns: those of ``framestore.columns`` (without ``store``) and ``image``: the frame as a
lossless PNG in Hugging Face's Image layout (``struct<bytes: binary, path: string>``,
null for a step whose frame was dropped). Each other frame stream of the episodes
(``record_step(frames=...)``, observations) is a column too: ``image.<name>`` in the same
layout when its frames are images (uint8 HxW or HxWxC, C in 1, 3, 4), else
``array.<name>``: ``struct<bytes: binary (the array's C-order little-endian bytes),
shape: list<int64>, dtype: string>`` (frame stacks, observation vectors); null where a
step has none. The Arrow schema carries the ``datasets``
features under the ``huggingface`` metadata key, so ``load_dataset("parquet",
data_dir=DIR)`` decodes ``image`` to a PIL image; frames come back exactly (HxWx1 frames
as HxW grey images).

Output: ``DIR/train-00000-of-00003.parquet``, ... (``datasets`` puts ``train-*`` files in
the train split). A shard is closed before the next row group (and room for the
footer) would take it past ``shard_bytes``; a row group holds at most a quarter of that
(and 32 MiB) of images and 4096 rows (small PNGs would otherwise make tens of thousands
of row dicts), the only things held in memory. (A single frame whose PNG is larger
than a row group makes a row group of its own, which may exceed a tiny bound.) Written as ``DIR.partial/``, fsynced, renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framestore import FrameStore
from framestore.columns import ACTION_INT, ACTION_LIST, arrow_fields, step_row
from framestore.errors import InvalidInput
from framestore.extras import require
from framestore.files import fsync_dir, fsync_file

from ._options import ExportOptions
from ._report import Progress
from ._select import (
    Selection,
    StreamCursor,
    check_new_path,
    iter_step_frames,
    select_episodes,
)

__all__ = ["DEFAULT_SHARD_BYTES", "ParquetReport", "export_parquet"]

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
MIN_SHARD_BYTES = 64 * 1024
_MAX_ROW_GROUP_BYTES = 32 * 1024 * 1024
_MAX_ROW_GROUP_ROWS = 4096
# Room kept for a shard's footer (schema, and per row group the column chunks' metadata),
# so a closed shard stays within its bound.
_FOOTER_BYTES = 16 * 1024
_FOOTER_BYTES_PER_GROUP = 4 * 1024
_PAGE_ROWS = 512
_SPLIT = "train"


@dataclass
class ParquetReport:
    """What one Parquet export wrote."""

    path: str
    format: str = "parquet"
    episodes: list[int] = field(default_factory=list)
    rows: int = 0
    frames: int = 0
    shards: list[str] = field(default_factory=list)
    shard_bytes: list[int] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    out: Path
    partial: Path
    selection: Selection
    shard_bytes: int

    @property
    def kind(self) -> str:
        return self.selection.kind


def export_parquet(
    store: FrameStore,
    out: str | os.PathLike,
    *,
    episodes: list[int] | None = None,
    run_id: int | None = None,
    options: ExportOptions | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Progress | None = None,
) -> ParquetReport:
    """Export episodes as sharded Parquet into the new directory ``out``.

    Args:
        store: an open store (read-only is enough; a store being recorded is exported as
            far as its rows are committed when the export starts).
        out: a directory that does not exist yet (or is empty); its parent must exist.
        episodes: episode ids; ``run_id``: every live episode of a run; neither: every
            live episode of the store.
        options: ``start``/``stop`` apply to every episode; ``scale`` must be 1.
        shard_bytes: the most bytes a shard file grows to.
        progress: called as ``progress(rows_done, rows_planned)``.

    Raises:
        InvalidInput: bad arguments or output path (nothing is written).
        EpisodeNotFound, RunNotFound: unknown ids.
        MissingExtra: pyarrow is not installed.
        CorruptData: a corrupt frame (the partial output is removed).
    """
    pa = require("pyarrow", extra="hf", what="Parquet export")
    pq = require("pyarrow.parquet", extra="hf", what="Parquet export")
    plan = _plan(store, out, episodes, run_id, options or ExportOptions(), shard_bytes)
    t0 = time.perf_counter()
    report = ParquetReport(path=str(plan.out), episodes=[s.id for s in plan.selection.spans])
    shutil.rmtree(plan.partial, ignore_errors=True)  # a leftover of an interrupted export
    plan.partial.mkdir()
    try:
        _ShardWriter(store, plan, report, pa, pq, progress).run()
        _name_shards(plan, report)
        fsync_dir(plan.partial)
        if plan.out.is_dir():
            plan.out.rmdir()  # checked empty when planning
        os.replace(plan.partial, plan.out)
        fsync_dir(plan.out.parent)
    except BaseException:
        shutil.rmtree(plan.partial, ignore_errors=True)
        raise
    report.bytes = sum(report.shard_bytes)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _plan(
    store: FrameStore,
    out: str | os.PathLike,
    episodes: list[int] | None,
    run_id: int | None,
    options: ExportOptions,
    shard_bytes: int,
) -> _Plan:
    if shard_bytes < MIN_SHARD_BYTES:
        raise InvalidInput(f"shard size must be at least {MIN_SHARD_BYTES} bytes")
    selection = select_episodes(store, episodes, run_id, options, what="parquet")
    out_path, partial = check_new_path(out, directory=True)
    return _Plan(out_path, partial, selection, int(shard_bytes))


def png_bytes(frame: np.ndarray, *, level: int = 6) -> bytes:
    """A frame as lossless PNG bytes (HxWx1 as a grey image), zlib ``level`` (Pillow's
    default 6; 1 is faster and larger)."""
    from PIL import Image

    img = frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def hf_features(kind: str) -> dict[str, Any]:
    """The Hugging Face ``datasets`` features of the exported columns."""

    def value(dtype: str) -> dict[str, str]:
        return {"dtype": dtype, "_type": "Value"}

    action = {
        ACTION_INT: value("int64"),
        ACTION_LIST: {"feature": value("float64"), "_type": "List"},
    }
    return {
        "run_id": value("int64"),
        "episode_id": value("int64"),
        "step": value("int64"),
        "env_id": value("string"),
        "action": action.get(kind, value("string")),
        "reward": value("float64"),
        "terminated": value("bool"),
        "truncated": value("bool"),
        "info": value("string"),
        "wall_time": value("float64"),
        "image": {"_type": "Image"},
    }


class _ShardWriter:
    """Streams rows into row groups and row groups into shards of bounded size."""

    def __init__(
        self,
        store: FrameStore,
        plan: _Plan,
        report: ParquetReport,
        pa: Any,
        pq: Any,
        progress: Progress | None,
    ):
        self.store, self.plan, self.report, self.pa, self.pq = store, plan, report, pa, pq
        self.progress = progress
        fields = [f for f in arrow_fields(pa, plan.kind) if f.name != "store"]
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        meta = {
            "huggingface": json.dumps({"info": {"features": hf_features(plan.kind)}}),
            "framestore": json.dumps({"source": store.name, "exported": time.time()}),
        }
        self.streams = self._stream_columns()
        array = pa.struct(
            [("bytes", pa.binary()), ("shape", pa.list_(pa.int64())), ("dtype", pa.string())]
        )
        extra = [
            pa.field(c, image if c.startswith("image.") else array) for c in self.streams.values()
        ]
        self._images = ["image", *(c for c in self.streams.values() if c.startswith("image."))]
        meta["huggingface"] = json.dumps(
            {"info": {"features": {**hf_features(plan.kind), **_stream_features(self.streams)}}}
        )
        self.schema = pa.schema([*fields, pa.field("image", image), *extra], metadata=meta)
        self.group_bytes = min(_MAX_ROW_GROUP_BYTES, (plan.shard_bytes - _FOOTER_BYTES) // 4)
        self.compression = {f.name: "zstd" for f in fields}
        self.compression.update({"image.bytes": "none", "image.path": "none"})  # PNG already is
        for column in self.streams.values():
            if column.startswith("image."):
                self.compression.update({f"{column}.bytes": "none", f"{column}.path": "none"})
        self._writer: Any = None
        self._path: Path | None = None
        self._groups = 0

    def _stream_columns(self) -> dict[str, str]:
        """``{stream: column}`` of the selected episodes' streams other than render:
        ``image.<name>`` for image frames, else ``array.<name>`` (one kind per name)."""
        out: dict[str, str] = {}
        for span in self.plan.selection.spans:
            for info in self.store.streams(span.id)[1:]:
                shape = info.shape or ()
                image = info.dtype == "uint8" and (
                    len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))
                )
                column = f"{'image' if image else 'array'}.{info.name}"
                if out.setdefault(info.name, column) != column:
                    raise InvalidInput(
                        f"stream {info.name!r} holds images in one episode and other arrays "
                        "in another; export them apart (--episode)"
                    )
        return out

    def run(self) -> None:
        rows: list[dict] = []
        size = 0
        for row in self._rows():
            rows.append(row)
            size += sum(len(row[c]["bytes"]) for c in self._images if row[c])
            if size >= self.group_bytes or len(rows) >= _MAX_ROW_GROUP_ROWS:
                self._write_group(rows, size)
                rows, size = [], 0
        if rows:
            self._write_group(rows, size)
        self._close_shard()

    def _rows(self) -> Iterator[dict]:
        planned = self.plan.selection.rows
        cursors: dict[str, StreamCursor] = {}
        span_id = None
        for done, item in enumerate(iter_step_frames(self.store, self.plan.selection.spans), 1):
            ep = item.span.episode
            if ep.id != span_id:  # a new episode: its streams' frames in step order
                span_id = ep.id
                cursors = {
                    name: StreamCursor(
                        self.store, item.span.id, item.span.start, item.span.stop, name
                    )
                    for name in ep.streams[1:]
                    if name in self.streams
                }
            row = step_row(
                item.step, store="", run_id=ep.run_id, env_id=ep.env_id, kind=self.plan.kind
            )
            del row["store"]
            row["image"] = None
            if item.frame is not None:
                row["image"] = {"bytes": png_bytes(item.frame), "path": None}
                self.report.frames += 1
            for name, column in self.streams.items():
                cursor = cursors.get(name)
                frame = None if cursor is None else cursor.at(item.step.step)
                row[column] = None if frame is None else _cell(column, frame)
            yield row
            self.report.rows = done
            if self.progress is not None:
                self.progress(done, planned)

    def _write_group(self, rows: list[dict], size: int) -> None:
        footer = _FOOTER_BYTES + _FOOTER_BYTES_PER_GROUP * (self._groups + 1)
        if (
            self._writer is not None
            and self._current_bytes() + size + footer > self.plan.shard_bytes
        ):
            self._close_shard()
        if self._writer is None:
            self._path = self.plan.partial / f"shard-{len(self.report.shards):05d}.parquet"
            self._writer = self.pq.ParquetWriter(
                self._path, self.schema, compression=self.compression
            )
            self.report.shards.append(self._path.name)
        table = self.pa.Table.from_pylist(rows, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(rows))
        self._groups += 1

    def _current_bytes(self) -> int:
        return os.path.getsize(self._path) if self._path is not None else 0

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        fsync_file(self._path)
        self.report.shard_bytes.append(self._current_bytes())
        self._writer = None
        self._groups = 0


def _stream_features(streams: dict[str, str]) -> dict[str, Any]:
    """The Hugging Face features of the stream columns."""

    def value(dtype: str) -> dict[str, str]:
        return {"dtype": dtype, "_type": "Value"}

    array = {
        "bytes": value("binary"),
        "shape": {"feature": value("int64"), "_type": "List"},
        "dtype": value("string"),
    }
    return {c: {"_type": "Image"} if c.startswith("image.") else array for c in streams.values()}


def _cell(column: str, frame: np.ndarray) -> dict[str, Any]:
    if column.startswith("image."):
        return {"bytes": png_bytes(frame), "path": None}
    little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    return {"bytes": little.tobytes(), "shape": list(frame.shape), "dtype": frame.dtype.name}


def _name_shards(plan: _Plan, report: ParquetReport) -> None:
    """``shard-00000.parquet`` -> ``train-00000-of-00003.parquet`` once the count is known."""
    count = len(report.shards)
    names = []
    for i, name in enumerate(report.shards):
        final = f"{_SPLIT}-{i:05d}-of-{count:05d}.parquet"
        os.replace(plan.partial / name, plan.partial / final)
        names.append(final)
    report.shards = names
