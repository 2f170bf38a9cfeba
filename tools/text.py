"""How numbers and errors read for people: shared by the CLI and the GUI."""

from __future__ import annotations

import numbers
import os

__all__ = ["format_number", "human_bytes", "one_line"]


def human_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units up to TiB; ``None`` -> ``"-"``)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_number(x: numbers.Real | None, decimals: int = 4) -> str:
    """A reward, return or float action as people read it: ``-0.10000000000000009`` ->
    ``"-0.1"``, ``0.539185`` -> ``"0.5392"``, ``147.0`` -> ``"147"``; tiny values keep
    three significant digits (``1.2e-05``). ``repr(x)`` is the exact value (for tooltips
    and copies); ``None`` -> ``"-"``."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)  # numpy scalars too
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x != 0 and abs(x) < 10 ** (-decimals):
        return f"{x:.3g}"
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def one_line(exc: BaseException) -> str:
    """An error's message on one line (its class name when it has none). An ``OSError``
    reads as its file and the reason in words (``/x/y: Not a directory``), without the
    ``[Errno 20]`` that Python puts in front."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and text.startswith("[Errno"):
        text = exc.strerror
        if exc.filename is not None:
            text = f"{os.fsdecode(exc.filename)}: {text}"
        if exc.filename2 is not None:
            text += f" (and {os.fsdecode(exc.filename2)})"
    return " ".join(text.split())
