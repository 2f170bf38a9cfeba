"""Numbers as the GUI shows them: the CLI's helpers (``tools.text``)."""

from tools.text import human_bytes

__all__ = ["human_bytes"]
