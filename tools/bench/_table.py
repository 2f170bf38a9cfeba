"""Rows as a plain-text table or a CSV file."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._throughput import THROUGHPUT_TABLE

__all__ = ["format_table", "write_csv"]


def format_table(
    rows: Sequence[Any], columns: Sequence[tuple[str, str, str]] = THROUGHPUT_TABLE
) -> str:
    """A plain-text table; rows are dataclasses or dicts. Errors and skips get a note."""
    dicts = [r if isinstance(r, dict) else asdict(r) for r in rows]
    cells = [[title for _k, title, _f in columns]]
    notes = []
    for d in dicts:
        line = []
        for key, _title, fmt in columns:
            v = d.get(key)
            line.append("-" if v is None else fmt.format(v))
        problem = d.get("error") or d.get("skipped")
        if problem:
            line = line[:2] + ["-"] * (len(columns) - 2)
            notes.append(f"  {d.get('game', '')}/{d.get('pipeline', '')}: {problem}")
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for j, line in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out + notes)


def write_csv(rows: Sequence[Any], path: str | os.PathLike) -> None:
    """Every field of every row, one row per line."""
    dicts = [r if isinstance(r, dict) else asdict(r) for r in rows]
    if not dicts:
        Path(path).write_text("")
        return
    names = list(dicts[0])
    for d in dicts[1:]:
        names += [k for k in d if k not in names]
    with open(path, "w", newline="") as fp:
        w = csv.DictWriter(fp, fieldnames=names)
        w.writeheader()
        for d in dicts:
            w.writerow({k: ("" if d.get(k) is None else d.get(k)) for k in names})
