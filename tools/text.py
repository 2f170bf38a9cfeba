"""How numbers and errors read for people: shared by the CLI and the GUI."""

from __future__ import annotations

__all__ = ["human_bytes", "one_line"]


def human_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units up to GiB; ``None`` -> ``"-"``)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def one_line(exc: BaseException) -> str:
    """An error's message on one line (its class name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
