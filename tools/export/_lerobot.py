"""LeRobot v3 writer: episodes of a store as a LeRobot dataset directory, laid out as
LeRobot's own ``LeRobotDataset`` writes and reads it (codebase ``v3.0``)::

    DIR/meta/info.json                    codebase_version, fps, features, totals, paths
    DIR/meta/stats.json                   per-feature statistics (``_lerobot_stats``)
    DIR/meta/tasks.parquet                the task strings as the pandas index, task_index
    DIR/meta/episodes/chunk-000/file-000.parquet   one row per episode, row i = episode i
    DIR/data/chunk-000/file-000.parquet   one row per transition
    DIR/videos/observation.images.render/chunk-000/file-000.mp4   (``video`` only)

Row t of an episode is the transition out of step t: the frame of step t (every image
stream of the step as ``observation.images.<stream>``; its non-image observation, when
recorded, as the float32 vector ``observation.state``: ``_lerobot_state``) with the
``action`` taken there, and ``next.reward``, ``next.done`` (terminated or truncated),
``next.terminated`` and ``next.truncated`` of step t+1. The last step of an episode has
no transition out of it, so its frame is not a row (LeRobot datasets hold one row per
action); a step whose frame was dropped while recording is no row either. framestore's
own columns: ``episode_id``, ``seed`` (-1: none) and ``step`` (the store's step number
of the row's frame). LeRobot's columns: ``timestamp`` (= frame_index / fps),
``frame_index``, ``episode_index`` (0.. in export order), ``index`` (the row's position
in the dataset) and ``task_index``; the task is the episode's environment id, or a text
given for every episode.

Frames are lossless PNG ``image`` features by default, at zlib level 1 as LeRobot's own
writer (``PNG_LEVEL``): LeRobot decodes them to the stored pixels (HxWx1 frames as
1-channel images). ``video`` writes them to H.264 MP4 instead (``video`` features,
``yuv420p``, ``yuv444p`` for odd sizes; every second frame a keyframe, as LeRobot's own
writer does): smaller, lossy.

Actions: Discrete as ``int64``; Box as float32 when the space is float32 (else float64),
MultiDiscrete/MultiBinary as int64, flattened to a vector; other spaces as JSON text.

Streaming: frames are PNG-encoded as they are read and written in row groups of at most
``_GROUP_BYTES`` of images; a data file is closed at an episode boundary once it holds 100 MB (LeRobot's
``data_files_size_in_mb``) and a video file at 200 MB. Written into ``DIR.partial/``,
fsynced, renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from framestore import FrameStore, StepInfo
from framestore.columns import ACTION_INT, ACTION_LIST, action_cell
from framestore.errors import InvalidInput
from framestore.extras import require
from framestore.files import fsync_dir, fsync_file
from telemetry.jsonsafe import dumps

from ._lerobot_state import STATE_KEY, StateLayout, dataset_state, state_vector
from ._lerobot_stats import ImageStats, VectorStats, as_json, image_sample_steps
from ._options import DEFAULT_FPS, ExportOptions, check_fps
from ._parquet import png_bytes
from ._pixels import to_rgb
from ._report import Progress
from ._select import (
    Selection,
    Span,
    StepFrame,
    check_new_path,
    episode_streams,
    iter_step_frames,
    select_episodes,
)

__all__ = ["CODEBASE_VERSION", "LeRobotReport", "export_lerobot"]

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
#: zlib level of the PNG frames: LeRobot's own writer's (``image_writer.write_image``,
#: ``compress_level=1``): about a third less CPU per Atari frame than Pillow's default 6,
#: for about 1.5x the bytes (docs/BENCHMARKS.md, "Dataset exports").
PNG_LEVEL = 1
_GROUP_BYTES = 32 * 1024 * 1024  # image bytes held before a row group is written
_GROUP_ROWS = 4096
_STATS_ROWS = 1024  # numeric rows held before they go into the statistics
_EPISODE_META_ROWS = 64  # meta/episodes rows held before they are written
_DEFAULT_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}


@dataclass
class LeRobotReport:
    """What one LeRobot export wrote. ``exact`` is False with ``video`` (lossy MP4)."""

    path: str
    format: str = "lerobot"
    episodes: list[int] = field(default_factory=list)  # store ids, in episode_index order
    empty_episodes: list[int] = field(default_factory=list)  # no transition with a frame
    rows: int = 0
    frames: int = 0
    dropped_steps: int = 0
    tasks: list[str] = field(default_factory=list)
    fps: int = 0
    video: bool = False
    exact: bool = True
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Layout:
    """The dataset's features, checked against every chosen episode before writing."""

    features: dict[str, dict[str, Any]]
    images: dict[str, str]  # observation.images.<stream> -> stream, in stream order
    action_dtype: str  # LeRobot dtype of ``action``
    action_kind: str
    fps: int
    video: bool
    stored: dict[str, list[int]] = field(default_factory=dict)  # key -> the frames' HxWxC
    state: StateLayout | None = None  # ``observation.state``'s entries (None: no feature)

    @property
    def image_keys(self) -> list[str]:
        return list(self.images)

    @property
    def first(self) -> str:
        """The name of the episodes' first stream (``render``): ``StepFrame.frame``."""
        return next(iter(self.images.values()))

    def shape(self, key: str) -> list[int]:
        """An image feature's HxWxC (as stored, before ``video``'s RGB)."""
        return self.stored[key]

    def stat_keys(self) -> list[str]:
        skip = {"image", "video", "string"}
        return [k for k, f in self.features.items() if f["dtype"] not in skip]


def export_lerobot(
    store: FrameStore,
    out: str | os.PathLike,
    *,
    episodes: list[int] | None = None,
    run_id: int | None = None,
    options: ExportOptions | None = None,
    task: str | None = None,
    video: bool = False,
    progress: Progress | None = None,
) -> LeRobotReport:
    """Export episodes as a LeRobot v3 dataset into the new directory ``out``.

    Args:
        store: an open store (read-only is enough).
        out: a directory that does not exist yet (or is empty); its parent must exist.
        episodes: episode ids; ``run_id``: every live episode of a run; neither: every
            live episode of the store.
        options: ``start``/``stop`` apply to every episode; ``fps`` overrides the runs'
            ``render_fps`` (rounded to a whole number, as LeRobot keeps it).
        task: the task text of every episode (default: its environment id).
        video: frames as lossy H.264 MP4 (``video`` features) instead of lossless PNG.
        progress: called as ``progress(steps_done, steps_planned)``.

    Raises:
        InvalidInput: bad arguments or output path, episodes whose frames, actions or
            fps differ (nothing is written).
        MissingExtra: pyarrow (the ``hf`` extra), or PyAV for ``video``.
        CorruptData: a corrupt frame (the partial output is removed).
    """
    pa = require("pyarrow", extra="hf", what="LeRobot export")
    pq = require("pyarrow.parquet", extra="hf", what="LeRobot export")
    if video:
        require("av", extra="video", what="LeRobot export with --video")
    options = options or ExportOptions()
    if task is not None and not str(task).strip():
        raise InvalidInput("the task text is empty")
    selection = select_episodes(store, episodes, run_id, options, what="lerobot")
    layout = _layout(store, selection, options, video)
    out_path, partial = check_new_path(out, directory=True)
    t0 = time.perf_counter()
    report = LeRobotReport(path=str(out_path), fps=layout.fps, video=video, exact=not video)
    shutil.rmtree(partial, ignore_errors=True)  # a leftover of an interrupted export
    partial.mkdir()
    try:
        writer = _Writer(store, selection, layout, partial, report, pa, pq)
        writer.run(task, progress)
        _write_meta(partial, layout, writer, report)
        report.files = sorted(
            str(p.relative_to(partial)) for p in partial.rglob("*") if p.is_file()
        )
        report.bytes = sum((partial / f).stat().st_size for f in report.files)
        for directory in sorted({(partial / f).parent for f in report.files}, reverse=True):
            fsync_dir(directory)
        if out_path.is_dir():
            out_path.rmdir()  # checked empty when planning
        os.replace(partial, out_path)
        fsync_dir(out_path.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _layout(
    store: FrameStore, selection: Selection, options: ExportOptions, video: bool
) -> _Layout:
    """The features every chosen episode fits, or ``InvalidInput`` naming the misfit."""
    first = selection.spans[0]
    streams = episode_streams(store, first.episode)
    for span in selection.spans:
        if episode_streams(store, span.episode) != streams:
            raise InvalidInput(
                f"episodes {first.id} and {span.id} hold different image streams; "
                "a LeRobot dataset has one set of features: export them separately"
            )
    shapes = {name: _stream_shape(store, selection, name, i == 0) for i, name in enumerate(streams)}
    stored = {f"observation.images.{name}": shape for name, shape in shapes.items()}
    if video:
        shapes = {name: [shape[0], shape[1], 3] for name, shape in shapes.items()}
    fps = _fps(store, selection.spans, options)
    action_dtype, action_shape = _action_feature(store, selection)
    features: dict[str, dict[str, Any]] = {
        f"observation.images.{name}": {
            "dtype": "video" if video else "image",
            "shape": shape,
            "names": ["height", "width", "channels"],
        }
        for name, shape in shapes.items()
    }
    state = dataset_state(store, selection.spans)
    if state is not None:
        features[STATE_KEY] = {"dtype": "float32", "shape": [state.size], "names": state.names}
    features["action"] = {"dtype": action_dtype, "shape": action_shape, "names": None}
    for key, dtype in (
        ("next.reward", "float64"),
        ("next.done", "bool"),
        ("next.terminated", "bool"),
        ("next.truncated", "bool"),
        ("episode_id", "int64"),
        ("seed", "int64"),
        ("step", "int64"),
        *_DEFAULT_FEATURES.items(),
    ):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return _Layout(
        features,
        {f"observation.images.{name}": name for name in streams},
        action_dtype,
        selection.kind,
        fps,
        video,
        stored,
        state,
    )


def _hwc(shape: tuple[int, ...]) -> list[int]:
    return list(shape) if len(shape) == 3 else [*shape, 1]


def _stream_shape(store: FrameStore, selection: Selection, name: str, first: bool) -> list[int]:
    """The one frame shape of stream ``name`` over the chosen steps, HxWxC, or
    ``InvalidInput``: an image feature has one shape."""
    shape_text = None
    for span in selection.spans:
        texts = span.shapes
        if not first:  # a stream's frames have the shape of its first (checked as written)
            infos = [s for s in store.streams(span.id) if s.name == name and s.frames]
            texts = tuple("x".join(map(str, s.shape)) for s in infos if s.shape)
        for text in texts:
            if shape_text is None:
                shape_text = text
            elif text != shape_text:
                what = "frames" if first else f"{name!r} frames"
                raise InvalidInput(
                    f"episode {span.id} has {what} of {text} where others have {shape_text}; "
                    "a LeRobot image feature has one shape: export them separately"
                )
    if shape_text is None:
        if first:
            raise InvalidInput("the chosen steps have no stored frames")
        raise InvalidInput(
            f"stream {name!r} has no frames in the chosen steps; a LeRobot image feature "
            "needs one in every row"
        )
    return _hwc(tuple(int(d) for d in shape_text.split("x")))


def _fps(store: FrameStore, spans: list[Span], options: ExportOptions) -> int:
    if options.fps is not None:
        rates = {options.fps}
    else:
        runs = {s.episode.run_id for s in spans}
        rates = {check_fps(store.run(r).config.get("render_fps") or DEFAULT_FPS) for r in runs}
    if len(rates) > 1:
        shown = ", ".join(f"{r:g}" for r in sorted(rates))
        raise InvalidInput(
            f"the chosen runs render at different rates ({shown} fps); give --fps or "
            "export them separately"
        )
    fps = round(rates.pop())
    if fps < 1:
        raise InvalidInput(
            "LeRobot keeps a whole number of frames per second: give --fps 1 or more"
        )
    return fps


def _action_feature(store: FrameStore, selection: Selection) -> tuple[str, list[int]]:
    """LeRobot's dtype and shape of ``action`` for the chosen episodes' action spaces."""
    if selection.kind == ACTION_INT:
        return "int64", [1]
    if selection.kind != ACTION_LIST:
        return "string", [1]
    dtypes, sizes = set(), set()
    for span in selection.spans:
        spec = store.catalog.episodes.action_spec(span.id) or {}
        if spec["type"] == "Box":
            sizes.add(int(np.prod(spec["shape"], dtype=np.int64)))
            dtypes.add("float32" if spec.get("dtype") == "float32" else "float64")
        elif spec["type"] == "MultiDiscrete":
            sizes.add(int(np.size(spec["nvec"])))
            dtypes.add("int64")
        else:  # MultiBinary
            sizes.add(int(np.prod(spec["n"], dtype=np.int64)))
            dtypes.add("int64")
    if len(sizes) != 1 or len(dtypes) != 1:
        raise InvalidInput(
            "the chosen episodes' action spaces differ in size or type; a LeRobot dataset "
            "has one action feature: export them separately"
        )
    return dtypes.pop(), [sizes.pop()]


def _hf_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """A LeRobot feature as a Hugging Face ``datasets`` feature (LeRobot's
    ``get_hf_features_from_features``)."""
    if feature["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": feature["dtype"], "_type": "Value"}
    if feature["shape"] == [1]:
        return value
    return {"feature": value, "length": feature["shape"][0], "_type": "List"}


def _arrow_type(pa: Any, feature: dict[str, Any]) -> Any:
    if feature["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    scalar = {"string": pa.string(), "bool": pa.bool_()}.get(feature["dtype"])
    scalar = scalar or pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    if feature["shape"] == [1]:
        return scalar
    return pa.list_(scalar, feature["shape"][0])


@dataclass
class _EpisodeState:
    """The episode being written: its index, rows so far and statistics."""

    span: Span
    index: int
    task: str
    task_index: int
    first_row: int
    sample: set[int]
    data_file: tuple[int, int]
    rows: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, list] = field(default_factory=dict)
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Writer:
    """Streams transitions into data files, videos and the episode metadata."""

    def __init__(
        self,
        store: FrameStore,
        selection: Selection,
        layout: _Layout,
        root: Path,
        report: LeRobotReport,
        pa: Any,
        pq: Any,
    ):
        self.store, self.selection, self.layout = store, selection, layout
        self.root, self.report, self.pa, self.pq = root, report, pa, pq
        columns = [k for k, f in layout.features.items() if f["dtype"] != "video"]
        hf = {k: _hf_feature(layout.features[k]) for k in columns}
        self.schema = pa.schema(
            [pa.field(k, _arrow_type(pa, layout.features[k])) for k in columns],
            metadata={"huggingface": json.dumps({"info": {"features": hf}})},
        )
        self.compression = {k: "snappy" for k in columns}
        for key in layout.image_keys:  # PNG is compressed already
            self.compression.update({f"{key}.bytes": "none", f"{key}.path": "none"})
        self.tasks: dict[str, int] = {}
        self.global_stats = {k: VectorStats() for k in layout.stat_keys()}
        self.global_stats.update({k: ImageStats() for k in layout.image_keys})
        self.episode_rows: list[dict[str, Any]] = []
        self._episodes_writer: Any = None
        self._columns: dict[str, list] = {k: [] for k in columns}
        self._group_bytes = 0
        self._data_writer: Any = None
        self._data_file = (0, 0)
        self._data_path: Path | None = None
        self._videos = (
            {k: _VideoFile(root, k, layout.fps) for k in layout.image_keys} if layout.video else {}
        )

    # ------------------------------------------------------------------ main loop
    def run(self, task: str | None, progress: Progress | None) -> None:
        planned, done = self.selection.rows, 0
        state: _EpisodeState | None = None
        prev: StepFrame | None = None
        others = {
            span.id: [name for name in self.layout.images.values() if name != self.layout.first]
            for span in self.selection.spans
        }
        steps = iter_step_frames(
            self.store,
            self.selection.spans,
            extra_step=True,
            streams=others,
            observations=self.layout.state is not None,
        )
        for item in steps:
            if state is None or item.span is not state.span:
                self._end_episode(state)
                state, prev = self._begin_episode(item.span, task), None
            if prev is not None:
                self._add_row(state, prev, item.step)
            if item.step.step < item.span.stop:
                # a row has a frame of every stream: a step without one is no row
                framed = item.frame is not None and all(f is not None for f in item.others.values())
                prev = item if framed else None
                self.report.dropped_steps += not framed
                done += 1
                if progress is not None:
                    progress(done, planned)
        self._end_episode(state)
        self._flush_group()
        self._close_data_file()
        for vf in self._videos.values():
            vf.close()
        self._flush_episode_meta(final=True)
        if not self.report.rows:
            raise InvalidInput("no transitions with a stored frame in the chosen steps")

    def _begin_episode(self, span: Span, task: str | None) -> _EpisodeState:
        text = task or span.episode.env_id
        task_index = self.tasks.setdefault(text, len(self.tasks))
        if self._data_path is not None and self._data_path.stat().st_size >= DATA_FILE_MB << 20:
            self._flush_group()
            self._close_data_file()
            self._data_file = _next_file(self._data_file)
        state = _EpisodeState(
            span=span,
            index=len(self.report.episodes),
            task=text,
            task_index=task_index,
            first_row=self.report.rows,
            sample=image_sample_steps(span.rows),
            data_file=self._data_file,
        )
        state.stats = {k: VectorStats() for k in self.layout.stat_keys()}
        state.stats.update({k: ImageStats() for k in self.layout.image_keys})
        state.pending = {k: [] for k in self.layout.stat_keys()}
        for key, vf in self._videos.items():
            state.videos[key] = vf.begin_episode()
        return state

    def _add_row(self, state: _EpisodeState, cur: StepFrame, nxt: StepInfo) -> None:
        ep = cur.span.episode
        values = {
            "action": _action_value(nxt.action, self.layout),
            "next.reward": np.nan if nxt.reward is None else float(nxt.reward),
            "next.done": bool(nxt.terminated or nxt.truncated),
            "next.terminated": bool(nxt.terminated),
            "next.truncated": bool(nxt.truncated),
            "episode_id": ep.id,
            "seed": -1 if ep.seed is None else int(ep.seed),
            "step": cur.step.step,
            "timestamp": state.rows / self.layout.fps,
            "frame_index": state.rows,
            "episode_index": state.index,
            "index": self.report.rows,
            "task_index": state.task_index,
        }
        if self.layout.state is not None:
            where = f"episode {ep.id} step {cur.step.step}"
            values[STATE_KEY] = state_vector(cur.observation, self.layout.state, where)
        for key, stream in self.layout.images.items():
            frame = cur.of(stream, self.layout.first)
            assert frame is not None
            if stream != self.layout.first and _hwc(frame.shape) != self.layout.shape(key):
                raise InvalidInput(
                    f"episode {ep.id} step {cur.step.step}: a {stream!r} frame of "
                    f"{'x'.join(map(str, frame.shape))}, where its first was "
                    f"{'x'.join(map(str, self.layout.shape(key)))}; a LeRobot image feature "
                    "has one shape"
                )
            if self.layout.video:
                self._videos[key].add(frame)
            else:
                data = png_bytes(frame, level=PNG_LEVEL)
                self._columns[key].append({"bytes": data, "path": None})
                self._group_bytes += len(data)
            if state.rows in state.sample:
                state.stats[key].update(frame)  # folded into the dataset's at the end
        for key, value in values.items():
            self._columns[key].append(value)
        for key, column in state.pending.items():
            column.append(values[key])
        state.rows += 1
        self.report.rows += 1
        self.report.frames += len(self.layout.image_keys)
        if len(state.pending["index"]) >= _STATS_ROWS:
            self._feed_stats(state)
        if self._group_bytes >= _GROUP_BYTES or len(self._columns["index"]) >= _GROUP_ROWS:
            self._flush_group()

    def _feed_stats(self, state: _EpisodeState) -> None:
        for key, column in state.pending.items():
            if column:
                batch = np.asarray(column, dtype=np.float64)
                state.stats[key].update(batch)
                self.global_stats[key].update(batch)
                column.clear()

    def _end_episode(self, state: _EpisodeState | None) -> None:
        if state is None:
            return
        if state.rows == 0:
            self.report.empty_episodes.append(state.span.id)
            return  # it wrote no frames to a video either
        self._feed_stats(state)
        for key in self.layout.image_keys:
            self.global_stats[key].add(state.stats[key])
        self.report.episodes.append(state.span.id)
        row: dict[str, Any] = {
            "episode_index": state.index,
            "tasks": [state.task],
            "length": state.rows,
            "data/chunk_index": state.data_file[0],
            "data/file_index": state.data_file[1],
            "dataset_from_index": state.first_row,
            "dataset_to_index": state.first_row + state.rows,
        }
        for key, vf in self._videos.items():
            row.update(vf.end_episode(state.videos[key]))
        for key, stats in state.stats.items():
            if stats.count:
                for name, value in stats.stats().items():
                    row[f"stats/{key}/{name}"] = np.asarray(value).tolist()
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        self.episode_rows.append(row)
        self._flush_episode_meta(final=False)

    def video_info(self) -> dict[str, dict[str, Any]]:
        """Per video feature, what LeRobot's ``get_video_info`` says of its files."""
        return {key: vf.info for key, vf in self._videos.items()}

    # ------------------------------------------------------------------ files
    def _flush_group(self) -> None:
        rows = len(self._columns["index"])
        if not rows:
            return
        if self._data_writer is None:
            c, f = self._data_file
            self._data_path = self.root / DATA_PATH.format(chunk_index=c, file_index=f)
            self._data_path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = self.pq.ParquetWriter(
                self._data_path, self.schema, compression=self.compression
            )
        table = self.pa.Table.from_pydict(self._columns, schema=self.schema)
        self._data_writer.write_table(table, row_group_size=rows)
        for column in self._columns.values():
            column.clear()
        self._group_bytes = 0

    def _close_data_file(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            fsync_file(self._data_path)
            self._data_writer = None

    def _flush_episode_meta(self, *, final: bool) -> None:
        if not self.episode_rows or (not final and len(self.episode_rows) < _EPISODE_META_ROWS):
            if final and self._episodes_writer is not None:
                self._episodes_writer.close()
            return
        if self._episodes_writer is None:
            table = self.pa.Table.from_pylist(self.episode_rows)
            path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._episodes_writer = self.pq.ParquetWriter(path, table.schema, compression="snappy")
        else:
            table = self.pa.Table.from_pylist(
                self.episode_rows, schema=self._episodes_writer.schema
            )
        self._episodes_writer.write_table(table)
        self.episode_rows.clear()
        if final:
            self._episodes_writer.close()


def _action_value(action: Any, layout: _Layout) -> Any:
    if action is None:
        return None
    if layout.action_kind == ACTION_INT:
        return int(action)
    if layout.action_kind == ACTION_LIST:
        flat = np.asarray(action).ravel()
        return (
            flat.astype(np.int64).tolist()
            if layout.action_dtype == "int64"
            else action_cell(flat, ACTION_LIST)
        )
    return dumps(action)


def _next_file(current: tuple[int, int]) -> tuple[int, int]:
    """LeRobot's ``update_chunk_file_indices``."""
    chunk, file = current
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _VideoFile:
    """One video stream's MP4 files: frames appended episode after episode, a new file
    at an episode boundary once the current one holds ``VIDEO_FILE_MB``."""

    def __init__(self, root: Path, key: str, fps: int):
        self.root, self.key, self.fps = root, key, fps
        self.file = (0, 0)
        self.path: Path | None = None
        self.info: dict[str, Any] = {}
        self._container: Any = None
        self._stream: Any = None
        self._frames = 0  # frames in the current file

    def begin_episode(self) -> dict[str, Any]:
        if self.path is not None and self.path.stat().st_size >= VIDEO_FILE_MB << 20:
            self.close()
            self.file = _next_file(self.file)
        return {"file": self.file, "first": self._frames}

    def add(self, frame: np.ndarray) -> None:
        import av

        rgb = np.ascontiguousarray(to_rgb(frame))
        if self._container is None:
            self._open(rgb.shape[0], rgb.shape[1])
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vf.pts = self._frames
        self._container.mux(self._stream.encode(vf))
        self._frames += 1

    def _open(self, height: int, width: int) -> None:
        import av

        c, f = self.file
        self.path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=c, file_index=f)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w", format="mp4")
        # Every second frame a keyframe, as LeRobot's writer (g=2): quick random access.
        options = {"g": "2", "crf": "23"}
        stream = self._container.add_stream("libx264", rate=Fraction(self.fps), options=options)
        stream.width, stream.height = width, height
        even = height % 2 == 0 and width % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        self._stream, self._frames = stream, 0
        self.info = {
            "video.height": height,
            "video.width": width,
            "video.codec": "h264",
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": self.fps,
            "video.channels": 3,
            "has_audio": False,
        }

    def end_episode(self, begun: dict[str, Any]) -> dict[str, Any]:
        prefix = f"videos/{self.key}"
        return {
            f"{prefix}/chunk_index": begun["file"][0],
            f"{prefix}/file_index": begun["file"][1],
            f"{prefix}/from_timestamp": begun["first"] / self.fps,
            f"{prefix}/to_timestamp": self._frames / self.fps,
        }

    def close(self) -> None:
        if self._container is None:
            return
        self._container.mux(self._stream.encode(None))
        self._container.close()
        fsync_file(self.path)
        self._container = self._stream = None
        self.path, self._frames = None, 0


def _write_meta(root: Path, layout: _Layout, writer: _Writer, report: LeRobotReport) -> None:
    """``meta/info.json``, ``meta/stats.json`` and ``meta/tasks.parquet``."""
    features = json.loads(json.dumps(layout.features))
    for key, info in writer.video_info().items():
        features[key]["info"] = info
    report.tasks = list(writer.tasks)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": None,
        "total_episodes": len(report.episodes),
        "total_frames": report.rows,
        "total_tasks": len(writer.tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": layout.fps,
        "splits": {"train": f"0:{len(report.episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if layout.video else None,
        "features": features,
    }
    stats = {k: s.stats() for k, s in writer.global_stats.items() if s.count}
    meta = root / "meta"
    for name, data in (("info.json", info), ("stats.json", as_json(stats))):
        (meta / name).write_text(json.dumps(data, indent=4, ensure_ascii=False))
        fsync_file(meta / name)
    writer.pq.write_table(_tasks_table(writer.pa, writer.tasks), meta / "tasks.parquet")
    fsync_file(meta / "tasks.parquet")


def _tasks_table(pa: Any, tasks: dict[str, int]) -> Any:
    """``meta/tasks.parquet`` as LeRobot's ``write_tasks`` writes it
    (``pd.DataFrame({"task_index": ...}, index=tasks).to_parquet``) and its ``load_tasks``
    (``pd.read_parquet``) reads it back: the task strings as the unnamed pandas index
    (column ``__index_level_0__``, named in the ``pandas`` schema metadata). Built with
    pyarrow alone: importing pandas cost the export about a second."""
    index = "__index_level_0__"
    pandas_meta = {
        "index_columns": [index],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": index,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.3.3",  # the layout of LeRobot's pandas (2.x)
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field(index, pa.string())],
        metadata={"pandas": json.dumps(pandas_meta)},
    )
    return pa.table([list(tasks.values()), list(tasks)], schema=schema)
