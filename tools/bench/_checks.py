"""Which rows of a bench run failed a check (the CLI exits non-zero on any)."""

from __future__ import annotations

from collections.abc import Sequence

from ._exports import ExportResult
from ._overload import OverloadResult
from ._pacing import PacingResult
from ._reads import ReadsResult
from ._scaleout import ScaleOutResult
from ._stress import StressResult
from ._throughput import PipelineResult
from ._torch import TorchResult
from ._vector import ReadResult, VectorResult
from ._writers import WriterResult

__all__ = ["failed_checks"]

Row = (
    PipelineResult
    | PacingResult
    | OverloadResult
    | StressResult
    | VectorResult
    | ReadResult
    | ScaleOutResult
    | WriterResult
    | ReadsResult
    | TorchResult
    | ExportResult
)


def failed_checks(rows: Sequence[Row]) -> list[str]:
    """One line per failed check: a pipeline that raised or whose stored frames did not
    read back bit-exact, an overload run over its memory or queue bound, a stress replay
    that did not finish or lost count of frames, a vector mode that raised or whose
    frames did not all read back, a scale-out reader that failed or read frames back
    that differ, a torch dataset mode that failed or read frames that differ. Pacing and read rows carry no pass/fail check
    (their numbers depend on the machine); skipped pipelines are not failures."""
    problems: list[str] = []

    def failed(where: str, error: str | None, verified: bool | None, unread: str) -> None:
        if error:
            problems.append(f"{where}: {error}")
        elif verified is False:
            problems.append(f"{where}: {unread}")

    for row in rows:
        if isinstance(row, PipelineResult):
            failed(
                f"{row.game}/{row.pipeline}", row.error, row.verified,
                "stored frames did not read back bit-exact",
            )  # fmt: skip
        elif isinstance(row, OverloadResult):
            where = f"overload/{row.policy}" + ("" if row.writer == "thread" else f"/{row.writer}")
            if row.error:
                problems.append(f"{where}: {row.error}")
            elif not row.within_bound:
                problems.append(
                    f"{where}: peak {row.peak_mem_mb:.1f} MB (bound {row.bound_mb:.1f} MB), "
                    f"queue high-water {row.high_water_bytes} B (budget {row.queue_bytes} B)"
                )
        elif isinstance(row, VectorResult):
            failed(
                f"vector/{row.mode}", row.error, row.verified,
                "stored frames missing or unreadable",
            )  # fmt: skip
        elif isinstance(row, ScaleOutResult):
            failed(
                f"scale-out/{row.reader}/{row.source}/{row.workers}", row.error, row.verified,
                "frames did not read back bit-exact",
            )  # fmt: skip
        elif isinstance(row, WriterResult):
            failed(
                f"writers/{row.game}/{row.writer}", row.error, row.verified,
                "frames did not read back",
            )  # fmt: skip
        elif isinstance(row, ReadsResult):
            failed(
                f"reads/{row.game}/{row.config}", row.error, row.verified,
                "frames did not read back bit-exact",
            )  # fmt: skip
        elif isinstance(row, TorchResult):
            failed(
                f"torch/{row.mode}", row.error, row.verified,
                "frames did not read back bit-exact",
            )  # fmt: skip
        elif isinstance(row, ExportResult):
            failed(f"exports/{row.format}", row.error, row.progress_ok, "progress fell short")
        elif isinstance(row, StressResult):
            if row.error or not (row.finished and row.accounted):
                problems.append(
                    f"stress/{row.rate}/{row.policy}: {row.error or 'frames unaccounted for'}"
                )
    return problems
