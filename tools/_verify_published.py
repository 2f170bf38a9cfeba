"""The parts of ``verify`` only a published store has: every object against its manifest
(size and SHA-256, read whole in blocks), and, for a store read from a URL (whose segments
cannot be scanned as local files), every frame pointer read through the store: each
chunk's CRC, framing and frame key, and the frame's decoded shape."""

from __future__ import annotations

from collections.abc import Callable

from framestore import FrameStore
from framestore.disk.scan import problem_kind
from framestore.errors import CorruptData, SegmentMissing
from framestore.state.bookkeeping import chunk_bytes

from ._verify_report import Problem, VerifyReport

_KINDS = {"size": "corrupt", "sha256": "checksum"}


def check_objects(
    st: FrameStore, report: VerifyReport, progress: Callable[[int, int], None] | None
) -> None:
    """Each object the manifest lists, read whole: missing, wrong size, wrong SHA-256."""
    for o in st.check_published_objects(progress):
        if o.kind == "missing":
            kind = "missing segment" if o.segment is not None else "missing object"
        else:
            kind = _KINDS[o.kind]
        report.problems.append(Problem(kind, f"{o.name}: {o.detail}", o.segment))


def check_pointers_remote(st: FrameStore, report: VerifyReport) -> None:
    """Every step's frame read through the store, chunk by chunk (one ranged read each):
    a chunk that cannot be read is one problem naming all its steps; a step whose frame
    fails on its own (its key, its slot) is one problem naming that step. Records and
    bytes count the chunks read this way: the chunks step rows point to, where a local
    scan counts every record of every segment file (a published segment may also hold
    chunks of episodes that were deleted or not published)."""
    add = report.problems.append
    segments: set[int] = set()
    for ep in st.episodes():
        rows = st.frame_locations(ep.id)
        report.steps_checked += len(rows)
        chunks: dict[tuple[int, int], list[tuple[int, tuple[int, int, int]]]] = {}
        for step, loc in rows:
            if loc is not None:
                chunks.setdefault((loc[0], loc[1]), []).append((step, loc))
        for (seg, off), steps in chunks.items():
            segments.add(seg)
            report.records_checked += 1
            report.bytes_checked += chunk_bytes(st, seg, [off])  # was "0 B" at a URL
            for i, (step, loc) in enumerate(steps):
                try:
                    st.read_at(loc, ep.id, step, copy=False)
                except CorruptData as e:
                    kind = "missing segment" if isinstance(e, SegmentMissing) else problem_kind(e)
                    hit = steps if i == 0 else [(step, loc)]  # the chunk, or this frame
                    add(
                        Problem(
                            kind, e.detail, seg, off, ep.id, hit[0][0], tuple(s for s, _ in hit)
                        )
                    )
                    if i == 0:
                        break
                else:
                    report.frames_checked += 1
    report.segments_checked = len(segments)
