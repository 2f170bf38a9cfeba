"""Checks of the database itself, for ``verify``: SQLite's own structure check and the
type and range of every column framestore trusts."""

from __future__ import annotations

from dataclasses import dataclass

from .._format import FILE_HEADER_SIZE, MAX_SEGMENT_ID
from ._base import Connection
from ._episodes import EPISODE_STATUSES
from ._pointers import SEGMENT_STATES
from ._validate import MAX_SLOT, valid_shape

_NUMBER = "typeof({c}) IN ('integer', 'real')"
_INT = "typeof({c}) = 'integer'"
_TEXT = "typeof({c}) = 'text'"
_FLAG = "{c} IN (0, 1)"


def _null_or(rule: str) -> str:
    return "({c} IS NULL OR " + rule + ")"


def _one_of(values: tuple[str, ...]) -> str:
    return _TEXT + " AND {c} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


# CASE, not AND: SQLite may evaluate json_type() on text json_valid() rejected, and fail.
_JSON_OBJECT = _null_or(
    "(CASE WHEN typeof({c}) = 'text' AND json_valid({c}) THEN json_type({c}) = 'object' ELSE 0 END)"
)
_JSON = _null_or("(typeof({c}) = 'text' AND json_valid({c}))")

# table -> (key columns naming a row, {column: rule}); a rule is an SQL condition on
# ``{c}`` that must hold for every row.
_RULES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "runs": (
        ("id",),
        {
            "id": _INT,
            "env_id": _TEXT,
            "created": _null_or(_NUMBER),
            "ended": _null_or(_NUMBER),
            "preset": _null_or(_TEXT),
            "host_profile": _null_or(_TEXT),
            "durability": _null_or(_TEXT),
            "config": _JSON_OBJECT,
            "stats": _JSON_OBJECT,
        },
    ),
    "episodes": (
        ("id",),
        {
            "id": _INT + " AND {c} > 0",
            "run_id": _INT,
            "idx": _null_or(_INT),
            "seed": _null_or(_INT),
            "started": _null_or(_NUMBER),
            "ended": _null_or(_NUMBER),
            "steps": _null_or(_INT),
            "total_reward": _null_or(_NUMBER),
            "terminated": _null_or(_FLAG),
            "truncated": _null_or(_FLAG),
            "status": _one_of(EPISODE_STATUSES),
            "frames_dropped": _null_or(_INT + " AND {c} >= 0"),
        },
    ),
    "steps": (
        ("episode_id", "step"),
        {
            "episode_id": _INT,
            "step": _INT + " AND {c} >= 0",
            "action": _JSON,
            "reward": _null_or(_NUMBER),
            "terminated": _null_or(_FLAG),
            "truncated": _null_or(_FLAG),
            "info": _JSON_OBJECT,
            "wall_time": _null_or(_NUMBER),
            "frame_segment": _null_or(_INT + f" AND {{c}} BETWEEN 0 AND {MAX_SEGMENT_ID}"),
            "frame_offset": _null_or(_INT + f" AND {{c}} >= {FILE_HEADER_SIZE}"),
            "frame_slot": _null_or(_INT + f" AND {{c}} BETWEEN 0 AND {MAX_SLOT}"),
            "frame_shape": _null_or(_TEXT),
            # a pointer is three values or none
            "frame pointer": "((frame_segment IS NULL) = (frame_offset IS NULL) "
            "AND (frame_segment IS NULL) = (frame_slot IS NULL))",
        },
    ),
    "segments": (
        ("id",),
        {
            "id": _INT + f" AND {{c}} BETWEEN 0 AND {MAX_SEGMENT_ID}",
            "path": _TEXT,
            "state": _one_of(SEGMENT_STATES),
            "bytes": _null_or(_INT),
            "live_bytes": _null_or(_INT),
        },
    ),
}

# Columns migration m002 added (a store of 0.1.0 lacks them): checked when present.
# ``env_spec`` is what ``verify --replay`` makes the environment from, and a merge copies
# it, so a source whose ``env_spec`` is not a JSON object fails ``verify --quick`` and is
# refused by ``merge`` before anything is copied.
_M002_RULES: dict[str, dict[str, str]] = {
    "runs": {"env_spec": _JSON_OBJECT},
    "segments": {"header_id": _null_or(_INT + f" AND {{c}} BETWEEN 0 AND {MAX_SEGMENT_ID}")},
}


@dataclass(frozen=True)
class ValueProblem:
    """Rows of one table whose value in one column is not what framestore reads."""

    table: str
    column: str
    rows: int  # how many rows
    example: str  # the first such row, e.g. "episode 3 step 7"

    def __str__(self) -> str:
        more = f" and {self.rows - 1} more row(s)" if self.rows > 1 else ""
        return f"table {self.table}, column {self.column}: bad value in {self.example}{more}"


class Checks:
    """``verify``'s checks of the database itself."""

    def __init__(self, db: Connection):
        self._db = db

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA quick_check`` finds wrong with the database file (empty: ok)."""
        rows = [r[0] for r in self._db.rows("PRAGMA quick_check")]
        return [] if rows == ["ok"] else [str(r) for r in rows]

    def value_problems(self) -> list[ValueProblem]:
        """Every column framestore trusts, type- and range-checked: one pass per table."""
        problems = []
        for table, (keys, rules) in _RULES.items():
            if self._db.has_m002:
                rules = {**rules, **_M002_RULES.get(table, {})}
            cols = list(rules)
            conds = [rules[c].format(c=c) for c in cols]
            sums = ", ".join(f"SUM(CASE WHEN {cond} THEN 0 ELSE 1 END)" for cond in conds)
            counts = self._db.one(f"SELECT {sums} FROM {table}")  # noqa: S608 - our own rules
            for col, cond, count in zip(cols, conds, counts, strict=True):
                if count:
                    key = self._db.one(
                        f"SELECT {', '.join(keys)} FROM {table} "  # noqa: S608
                        f"WHERE NOT COALESCE({cond}, 0) LIMIT 1"
                    )
                    problems.append(ValueProblem(table, col, int(count), _row_name(keys, key)))
        problems += self._shape_problems()
        return problems

    def _shape_problems(self) -> list[ValueProblem]:
        bad = [
            shape
            for (shape,) in self._db.rows(
                "SELECT DISTINCT frame_shape FROM steps WHERE typeof(frame_shape) = 'text'"
            )
            if not valid_shape(shape)
        ]
        out = []
        for shape in bad:
            n, ep, step = self._db.one(
                "SELECT COUNT(*), MIN(episode_id), MIN(step) FROM steps WHERE frame_shape = ?",
                [shape],
            )
            out.append(ValueProblem("steps", "frame_shape", int(n), f"episode {ep} step {step}"))
        return out


def _row_name(keys: tuple[str, ...], values: tuple | None) -> str:
    if values is None:
        return "a row"
    if keys == ("episode_id", "step"):
        return f"episode {values[0]!r} step {values[1]!r}"
    return f"id {values[0]!r}"
