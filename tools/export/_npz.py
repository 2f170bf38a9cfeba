"""NPZ writer: the stored frames plus the per-step columns, loadable without pickle.

``frames`` is streamed to a scratch file, then copied into the zip entry once its final
length is known (corrupt frames may be skipped), so frames never sit in memory all at
once; the per-step columns are O(steps) scalars. Entries are deflated, as
``np.savez_compressed`` writes them (game frames shrink 50-300x; uncompressed, an export
was hundreds of times the size of the store that held it); ``np.load`` reads either.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from framestore.files import fsync_file

from ._plan import Plan
from ._report import ExportReport
from ._rows import Row

__all__ = ["SCRATCH_SUFFIX", "write_npz"]

SCRATCH_SUFFIX = ".frames"


def write_npz(rows: Iterator[Row], plan: Plan, report: ExportReport) -> None:
    """``frames``, ``step_index``, ``actions`` (or ``actions_json``), ``has_action``,
    ``rewards``, ``terminated``, ``truncated``; one entry per exported frame."""
    scratch = plan.partial.with_name(plan.partial.name + SCRATCH_SUFFIX)
    try:
        with open(scratch, "wb") as raw:
            columns = _stream_frames(rows, raw, report)
        header = {"descr": "|u1", "fortran_order": False, "shape": (report.frames, *plan.shape)}
        with zipfile.ZipFile(plan.partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open("frames.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array_header_2_0(entry, header)
                with open(scratch, "rb") as raw:
                    shutil.copyfileobj(raw, entry, 1 << 20)
            for name, arr in columns.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, arr, allow_pickle=False)
        fsync_file(plan.partial)
    finally:
        Path(scratch).unlink(missing_ok=True)
    report.height, report.width = plan.shape[:2]


def _stream_frames(rows: Iterator[Row], raw: Any, report: ExportReport) -> dict[str, np.ndarray]:
    """Write each frame's bytes to ``raw``; return the per-step columns."""
    step_index: list[int] = []
    actions: list[Any] = []
    rewards: list[float] = []
    terminated: list[bool] = []
    truncated: list[bool] = []
    for row, frame in rows:
        raw.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        step_index.append(row.step)
        actions.append(row.action)
        rewards.append(np.nan if row.reward is None else row.reward)
        terminated.append(row.terminated)
        truncated.append(row.truncated)
        report.frames += 1
    return {
        "step_index": np.asarray(step_index, dtype=np.int64),
        **_actions_array(actions),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminated": np.asarray(terminated, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
    }


def _actions_array(actions: list[Any]) -> dict[str, np.ndarray]:
    """Actions as a numeric array (zeros where a row has none) plus ``has_action``; action
    types numpy cannot hold in one numeric array go to ``actions_json`` as text."""
    has = np.array([a is not None for a in actions], dtype=bool)
    numeric = _numeric_actions(actions)
    if numeric is not None:
        return {"actions": numeric, "has_action": has}
    text = [json.dumps(a, default=_json_default) for a in actions]
    return {"actions_json": np.asarray(text, dtype=str), "has_action": has}


def _numeric_actions(actions: list[Any]) -> np.ndarray | None:
    """One numeric array of the actions (zeros of the same shape where there is none), or
    None when they do not make one (Dict/Tuple actions, ragged shapes)."""
    present = [a for a in actions if a is not None]
    try:
        sample = np.asarray(present[0]) if present else np.asarray(0)
        if not _is_numeric(sample):
            return None
        arr = np.asarray([a if a is not None else np.zeros_like(sample) for a in actions])
    except (TypeError, ValueError):
        return None
    return arr if _is_numeric(arr) else None


def _is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype != object and arr.dtype.kind in "biuf"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray | np.generic):
        return o.tolist()
    raise TypeError(type(o).__name__)
