"""What ``verify`` reports: a list of ``Problem`` (kind, message, where) in a
``VerifyReport`` with the counts of what was checked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    ``kind`` is one of: ``checksum``, ``corrupt``, ``torn tail``, ``unsealed``,
    ``missing segment``, ``unexpected segment``, ``obsolete leftover``, ``bad path``,
    ``partial leftover``, ``dangling pointer``, ``slot out of range``,
    ``shape mismatch``, ``key mismatch``, ``step count``, ``stale recording``,
    ``interrupted merge``, ``database`` (SQLite's own check failed), ``bad value`` (a
    column holds a value of the wrong type or out of range), ``missing object`` (an
    object a published store's manifest lists is not there), ``metadata mismatch`` (step
    rows differ from the steps their version-3 segment records).
    ``steps`` lists every affected step of ``episode`` (``step`` is the first).
    """

    kind: str
    message: str
    segment: int | None = None
    offset: int | None = None
    episode: int | None = None
    step: int | None = None
    steps: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.episode is not None:
            where.append(f"episode {self.episode}")
        if self.steps:
            where.append(f"steps {_ranges(self.steps)}")
        elif self.step is not None:
            where.append(f"step {self.step}")
        return f"{self.kind}: {self.message}" + (f" [{', '.join(where)}]" if where else "")


def _ranges(steps: tuple[int, ...]) -> str:
    out, start, prev = [], None, None
    for s in sorted(steps):
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    quick: bool = False
    segments_checked: int = 0
    records_checked: int = 0
    frames_checked: int = 0
    bytes_checked: int = 0
    steps_checked: int = 0
    steps_metadata_checked: int = 0  # steps of segments compared with their rows
    episodes_checked: int = 0
    writer_running: bool | None = None
    in_progress: list[str] = field(default_factory=list)  # a live writer's unfinished tail
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d
