"""``verify``'s check that the catalogue and the segments agree on step metadata: every
step row of an episode equals the step its segments describe (format version 3: the
chunks' steps blocks; docs/FORMAT.md). Segments of versions 1-2 hold no step metadata.

A segment's steps are compared with an episode's rows only where the segment's
``EPISODE`` record is that episode's (same run and start time, the same rule ``recover``
follows); steps without a row are not problems here (a recording not yet committed, or
frames ``recover`` will give rows back). Merged and obsolete segments are skipped.
"""

from __future__ import annotations

from framestore import FrameStore
from framestore.disk.scan import SegmentScan, chunk_steps
from framestore.disk.segments import open_segment, segment_path
from framestore.errors import CorruptData

from ._verify_report import Problem, VerifyReport

__all__ = ["check_step_metadata"]

#: The fields compared, as the steps table stores them.
FIELDS = (
    "action", "reward", "terminated", "truncated", "info", "wall_time", "frame_shape",
    "observation",
)  # fmt: skip


def _owners(st: FrameStore, scan: SegmentScan, origins) -> dict[int, int]:
    """``{stream key: episode id}`` for the segment's EPISODE records that are ours."""
    out = {}
    for rec in scan.meta_records:
        meta = rec.meta
        ep, run = meta.get("episode"), meta.get("run")
        if scan.kind_of(rec) != "episode" or not isinstance(ep, dict) or not isinstance(run, dict):
            continue
        eid = ep.get("id")
        if origins.get(eid) == (run.get("id"), ep.get("started")):
            out[meta.get("stream_key")] = eid
    return out


def check_step_metadata(
    st: FrameStore, report: VerifyReport, scans: dict[int, SegmentScan]
) -> None:
    """Add a ``metadata mismatch`` problem per chunk whose steps disagree with their
    rows, naming the episode and steps."""
    merged = st.catalog.segments.merged()
    rows = st.catalog.segments.rows()
    origins, _runs = st.catalog.recovery.origins()
    statuses = st.catalog.episodes.statuses()
    cache: dict[int, dict[int, tuple]] = {}
    for sid, scan in sorted(scans.items()):
        if (scan.version or 0) < 3 or sid in merged or rows.get(sid, ("", ""))[1] == "obsolete":
            continue
        owners = _owners(st, scan, origins)
        chunks = [(o, h) for o, h in sorted(scan.chunks.items()) if h.steps_length]
        if not owners or not chunks:
            continue
        with open_segment(segment_path(st.root, sid), sid) as fp:
            for off, header in chunks:
                eid = owners.get(header.stream_key)
                if eid is None or statuses.get(eid) == "deleted":
                    continue
                try:
                    steps = chunk_steps(fp, sid, off, header)
                except (CorruptData, OSError):
                    continue  # the scan reported it
                if eid not in cache:
                    cache[eid] = st.catalog.recovery.step_metadata(eid)
                stored = cache[eid]
                wrong = [
                    s.step
                    for s in steps
                    if s.step in stored
                    and stored[s.step]
                    != (
                        s.action,
                        s.reward,
                        int(s.terminated),
                        int(s.truncated),
                        s.info,
                        s.wall_time,
                        s.frame_shape,
                        s.observation,
                    )  # fmt: skip
                ]
                report.steps_metadata_checked += len(steps)
                if wrong:
                    report.problems.append(
                        Problem(
                            "metadata mismatch",
                            "step rows differ from the steps their segment records "
                            f"({', '.join(FIELDS)})",
                            segment=sid,
                            offset=off,
                            episode=eid,
                            step=wrong[0],
                            steps=tuple(wrong),
                        )  # fmt: skip
                    )
