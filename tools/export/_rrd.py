"""rerun writer: episodes of a store as one ``.rrd`` recording for the rerun viewer.

Every episode is an entity subtree ``episode_<id>/`` of the recording; its steps are on
the ``step`` timeline (the store's step numbers) and the ``wall_time`` timeline (when
each step was recorded). Per step:

| entity | what |
|---|---|
| ``episode_<id>/<stream>`` | each image stream of the step (``render``, and those ``record_step(frames=...)`` recorded) as a PNG ``EncodedImage``: lossless |
| ``episode_<id>/reward``, ``episode_<id>/return`` | ``Scalars``: the reward and the sum so far |
| ``episode_<id>/action`` | ``Scalars`` (numeric actions, flattened) or ``TextLog`` (JSON) |
| ``episode_<id>/events`` | ``TextLog`` "terminated" / "truncated" on the step that ends it |
| ``episode_<id>/info`` | ``TextLog``: the step's ``info`` as JSON, when not empty |

``episode_<id>`` itself holds static ``AnyValues`` (episode id, run id, environment,
seed); the recording's properties name the store, the environment(s), the runs and the
episodes (and the seed of a single episode). rerun 0.41 keeps one recording per ``.rrd``
file (its reader refuses concatenated files), so a run or a store is one recording with
an episode subtree each, and one episode is a recording of its own.

Streaming: rerun's file sink writes chunks as they fill; the stream is flushed every
``_FLUSH_STEPS`` steps so at most that many encoded frames wait in memory. Written as
``FILE.rrd.partial``, fsynced, renamed into place.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from framestore import FrameStore
from framestore.columns import ACTION_INT, ACTION_LIST
from framestore.errors import InvalidInput
from framestore.extras import require
from framestore.files import fsync_dir, fsync_file
from telemetry.jsonsafe import dumps

from ._options import ExportOptions
from ._parquet import png_bytes
from ._report import Progress
from ._select import Selection, check_new_path, episode_streams, iter_step_frames, select_episodes

__all__ = ["RrdReport", "export_rrd"]

APPLICATION_ID = "framestore"
_FLUSH_STEPS = 256


@dataclass
class RrdReport:
    """What one rerun export wrote."""

    path: str
    format: str = "rrd"
    recording_id: str = ""
    episodes: list[int] = field(default_factory=list)
    steps: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_rrd(
    store: FrameStore,
    out: str | os.PathLike,
    *,
    episodes: list[int] | None = None,
    run_id: int | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> RrdReport:
    """Export episodes as one rerun recording into the file ``out`` (``*.rrd``).

    Args:
        store: an open store (read-only is enough).
        out: the ``.rrd`` file to write (replaced if it exists); its directory must exist.
        episodes, run_id, options: which episodes and steps, as for ``export_parquet``.
        progress: called as ``progress(steps_done, steps_planned)``.

    Raises:
        InvalidInput: bad arguments or output path (nothing is written).
        MissingExtra: rerun-sdk is not installed (the ``rerun`` extra).
        CorruptData: a corrupt frame (the partial output is removed).
    """
    rr = require("rerun", extra="rerun", what="rerun export")
    if not os.fspath(out).endswith(".rrd"):
        raise InvalidInput(f"{out}: a rerun recording is a .rrd file; end the name in .rrd")
    selection = select_episodes(store, episodes, run_id, options or ExportOptions(), what="rrd")
    out_path, partial = check_new_path(out, directory=False)
    t0 = time.perf_counter()
    report = RrdReport(path=str(out_path), episodes=[s.id for s in selection.spans])
    report.recording_id = f"{store.name}:{'-'.join(map(str, report.episodes[:8]))}"
    partial.unlink(missing_ok=True)
    rec = rr.RecordingStream(APPLICATION_ID, recording_id=report.recording_id)
    try:
        rec.save(str(partial))
        _log_properties(rr, rec, store, selection)
        _log_steps(rr, rec, store, selection, report, progress)
        rec.flush()
        rec.disconnect()  # closes the file: its footer is written
        fsync_file(partial)
        os.replace(partial, out_path)
        fsync_dir(out_path.parent)
    except BaseException:
        rec.disconnect()
        partial.unlink(missing_ok=True)
        raise
    report.bytes = out_path.stat().st_size
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _log_properties(rr: Any, rec: Any, store: FrameStore, selection: Selection) -> None:
    spans = selection.spans
    names = ", ".join(f"episode {s.id}" for s in spans[:4]) + (" ..." if len(spans) > 4 else "")
    rec.send_recording_name(f"{store.name}: {names}")
    props: dict[str, Any] = {
        "store": store.name,
        "env_id": sorted({s.episode.env_id for s in spans}),
        "run_id": sorted({s.episode.run_id for s in spans}),
        "episode_id": [s.id for s in spans],
    }
    if len(spans) == 1 and spans[0].episode.seed is not None:
        props["seed"] = spans[0].episode.seed
    rec.send_property("framestore", rr.AnyValues(**props))
    for span in spans:
        ep = span.episode
        rec.log(
            f"episode_{ep.id}",
            rr.AnyValues(
                episode_id=ep.id,
                run_id=ep.run_id,
                env_id=ep.env_id,
                seed=-1 if ep.seed is None else ep.seed,
                streams=episode_streams(store, ep),
            ),
            static=True,
        )


def _log_steps(
    rr: Any,
    rec: Any,
    store: FrameStore,
    selection: Selection,
    report: RrdReport,
    progress: Progress | None,
) -> None:
    planned = selection.rows
    returns: dict[int, float] = {}
    streams = {s.id: episode_streams(store, s.episode) for s in selection.spans}
    others = {eid: names[1:] for eid, names in streams.items()}  # besides the first
    steps = iter_step_frames(store, selection.spans, streams=others)
    for done, item in enumerate(steps, 1):
        step, base = item.step, f"episode_{item.span.id}"
        rec.set_time("step", sequence=step.step)
        if step.wall_time is not None:
            rec.set_time("wall_time", timestamp=step.wall_time)
        names = streams[item.span.id]
        for stream in names:  # each image stream its entity; a step may lack some
            frame = item.of(stream, names[0])
            if frame is not None:
                image = rr.EncodedImage(contents=png_bytes(frame), media_type="image/png")
                rec.log(f"{base}/{stream}", image)
                report.frames += 1
        if step.reward is not None and step.action is not None:
            returns[item.span.id] = returns.get(item.span.id, 0.0) + step.reward
            rec.log(f"{base}/reward", rr.Scalars([step.reward]))
            rec.log(f"{base}/return", rr.Scalars([returns[item.span.id]]))
        if step.action is not None:
            _log_action(rr, rec, f"{base}/action", step.action, selection.kind)
        for flag, happened in (("terminated", step.terminated), ("truncated", step.truncated)):
            if happened:
                rec.log(f"{base}/events", rr.TextLog(flag, level=rr.TextLogLevel.INFO))
        if step.info:
            rec.log(f"{base}/info", rr.TextLog(dumps(step.info)))
        report.steps = done
        if done % _FLUSH_STEPS == 0:
            rec.flush()
        if progress is not None:
            progress(done, planned)


def _log_action(rr: Any, rec: Any, entity: str, action: Any, kind: str) -> None:
    if kind == ACTION_INT:
        rec.log(entity, rr.Scalars([float(action)]))
    elif kind == ACTION_LIST:
        rec.log(entity, rr.Scalars(np.asarray(action, dtype=np.float64).ravel()))
    else:
        rec.log(entity, rr.TextLog(dumps(action)))
