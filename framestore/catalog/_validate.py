"""One validation layer between ``framestore.db`` and the rest of framestore.

Every value a catalogue reader hands out passes one of these checks first: a value of the
wrong type or out of range (a hostile or damaged database) raises ``CorruptCatalog``
naming the table, the row and the column, never a ``TypeError`` three layers up. Ids and
step bounds given by callers are checked against SQLite's 64-bit integers here too
(``InvalidInput``), before they reach a query.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from .._format import MAX_FRAME_BYTES, MAX_SEGMENT_ID
from ..errors import CorruptCatalog, InvalidInput

#: SQLite's integers are signed 64-bit.
MAX_SQLITE_INT = (1 << 63) - 1
MIN_SQLITE_INT = -(1 << 63)
#: An upper bound for "to the end" in step ranges (steps are SQLite integers).
END_OF_EPISODE = 2**62
#: Slots of a chunk (frames per chunk are at most 65535).
MAX_SLOT = 0xFFFF
_SHAPE = re.compile(r"^[1-9][0-9]{0,8}x[1-9][0-9]{0,8}(x[1-4])?$")
# A stream frame's own shape (a frame stack "4x84x84", an observation vector "2000"):
# 1 to 8 dimensions.
STREAM_SHAPE = re.compile(r"^[1-9][0-9]{0,8}(x[1-9][0-9]{0,8}){0,7}$")


def is_int(value: Any) -> bool:
    """An int or a numpy integer, not a bool. numpy is not imported for this: a value can
    be a numpy integer only once numpy is loaded (listing a store loads no numpy)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.integer)


# --------------------------------------------------------------------------- input
def check_id(value: Any, what: str) -> int:
    """An id given by a caller, as a plain int; ``InvalidInput`` when it is not an
    integer or does not fit SQLite's 64-bit integers."""
    if not is_int(value):
        raise InvalidInput(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not MIN_SQLITE_INT <= value <= MAX_SQLITE_INT:
        raise InvalidInput(f"{what} {value} is out of range (ids are 64-bit integers)")
    return value


def check_seed(value: Any) -> int | None:
    """A seed given by a caller (None, or an integer SQLite can store)."""
    if value is None:
        return None
    if not is_int(value):
        raise InvalidInput(f"seed must be an integer or None, got {value!r}")
    value = int(value)
    if not MIN_SQLITE_INT <= value <= MAX_SQLITE_INT:
        raise InvalidInput(f"seed {value} is out of range (at most 2**63 - 1)")
    return value


def clamp_step(value: Any, what: str) -> int:
    """A step bound given by a caller, clamped to ``0..END_OF_EPISODE`` (a bound beyond
    every step means "to the end", not an overflow)."""
    if not is_int(value):
        raise InvalidInput(f"{what} must be an integer, got {value!r}")
    return max(0, min(int(value), END_OF_EPISODE))


# --------------------------------------------------------------------------- output
class Cell:
    """Where a value came from: table, row and column (for the error message)."""

    __slots__ = ("table", "row")

    def __init__(self, table: str, row: str):
        self.table = table
        self.row = row

    def bad(self, column: str, detail: str) -> CorruptCatalog:
        return CorruptCatalog(self.table, self.row, column, detail)

    def int(
        self,
        column: str,
        value: Any,
        *,
        null: bool = False,
        lo: int = MIN_SQLITE_INT,
        hi: int = MAX_SQLITE_INT,
    ) -> Any:
        if value is None and null:
            return None
        if not is_int(value):
            raise self.bad(column, f"expected an integer, found {_shown(value)}")
        if not lo <= value <= hi:
            raise self.bad(column, f"{value} is out of range {lo}..{hi}")
        return int(value)

    def real(self, column: str, value: Any, *, null: bool = True) -> Any:
        if value is None and null:
            return None
        if not (is_int(value) or isinstance(value, float)):
            raise self.bad(column, f"expected a number, found {_shown(value)}")
        return float(value)

    def flag(self, column: str, value: Any) -> bool:
        if value is None:
            return False
        if not is_int(value) or value not in (0, 1):
            raise self.bad(column, f"expected 0 or 1, found {_shown(value)}")
        return bool(value)

    def text(
        self, column: str, value: Any, *, null: bool = True, choices: tuple[str, ...] = ()
    ) -> Any:
        if value is None and null:
            return None
        if not isinstance(value, str):
            raise self.bad(column, f"expected text, found {_shown(value)}")
        if choices and value not in choices:
            raise self.bad(column, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def shape(self, column: str, value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        return parse_shape_or_raise(value, self, column)

    def stream_shape(self, column: str, value: Any) -> tuple[int, ...] | None:
        """A stream frame's shape: any 1 to 8 dimensions (``stored_shape`` lays it out)."""
        if value is None:
            return None
        return parse_shape_or_raise(value, self, column, STREAM_SHAPE)

    def json_object(self, column: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, str):
            raise self.bad(column, f"expected JSON text, found {_shown(value)}")
        try:
            data = json.loads(value)
        except (ValueError, RecursionError) as e:
            raise self.bad(column, f"not valid JSON ({str(e)[:60]})") from None
        if not isinstance(data, dict):
            raise self.bad(column, f"expected a JSON object, found {type(data).__name__}")
        return data

    def location(self, seg: Any, off: Any, slot: Any) -> tuple[int, int, int] | None:
        """A frame pointer: all three NULL (no stored frame) or three integers in range."""
        if seg is None and off is None and slot is None:
            return None
        try:
            return (
                self.int("frame_segment", seg, lo=0, hi=MAX_SEGMENT_ID),
                self.int("frame_offset", off, lo=0),
                self.int("frame_slot", slot, lo=0, hi=MAX_SLOT),
            )
        except CorruptCatalog as e:
            raise self.bad(e.column, f"invalid frame pointer: {e.detail}") from None


def parse_shape_or_raise(
    value: Any, cell: Cell, column: str, pattern: re.Pattern[str] = _SHAPE
) -> tuple[int, ...]:
    if not isinstance(value, str) or not pattern.match(value):
        raise cell.bad(column, f"expected a frame shape like 210x160x3, found {_shown(value)}")
    shape = tuple(int(x) for x in value.split("x"))
    size = 1
    for d in shape:
        size *= d
    if size > MAX_FRAME_BYTES:
        raise cell.bad(column, f"frame shape {value} exceeds the {MAX_FRAME_BYTES}-byte limit")
    return shape


def valid_shape(value: Any) -> bool:
    """Whether ``value`` is a frame shape text a reader accepts."""
    try:
        parse_shape_or_raise(value, Cell("steps", "?"), "frame_shape")
    except CorruptCatalog:
        return False
    return True


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return f"a {len(value)}-byte blob"
    text = repr(value)
    kind = type(value).__name__
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"
